"""`Scope`: the Python API gives the numbers the CLI writes (both run the one ScanEngine)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wstui import Scope, jsonio

ROOT = Path(__file__).resolve().parents[1]


def _save(path: Path, seed: int, scale_q: float = 1.0) -> Path:
    g = torch.Generator().manual_seed(seed)
    t = {
        "model.embed_tokens.weight": torch.randn(96, 32, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(32, 32, generator=g) * scale_q,
        "model.layers.0.mlp.up_proj.weight": torch.randn(64, 32, generator=g),
        "model.layers.0.input_layernorm.weight": torch.ones(32),
    }
    save_file(t, str(path))
    return path


@pytest.fixture
def cache_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))


def test_scope_matches_cli_json(tmp_path, cache_env):
    path = _save(tmp_path / "m.safetensors", 0)
    with Scope(path, device="cpu", use_cache=False) as s:
        report = s.scan()
        assert [t.name for t in s.tensors] == list(report.tensors)
    out = tmp_path / "cli.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "wstui", "scan", str(path), "--no-cache",
                        "--device", "cpu", "--quiet", "--json", str(out)],
                       env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    cli = jsonio.loads_strict(out.read_text())
    api = jsonio.loads_strict(jsonio.dumps(report.to_dict()))
    assert api["tensors"] == cli["tensors"]
    assert api["top_issues"] == cli["top_issues"]
    assert api["methods"] == cli["methods"]


def test_scope_selection_records_and_json(tmp_path, cache_env):
    path = _save(tmp_path / "m.safetensors", 1)
    with Scope(path, device="cpu") as s:
        report = s.scan(methods=["stats"], tensors="*proj*")
        assert set(report.tensors) == {"model.layers.0.self_attn.q_proj.weight",
                                       "model.layers.0.mlp.up_proj.weight"}
        recs = report.to_records()
        assert {"name", "kind", "block", "shape", "dtype"} <= set(recs[0])
        assert any(k.startswith("stats.") for k in recs[0])
        dest = report.to_json(tmp_path / "r.json")
        assert jsonio.loads_strict(dest.read_text())["methods"] == ["stats"]
        e = report.entry("model.layers.0.mlp.up_proj.weight")
        assert e.ref.kind == "mlp_up"
        assert e.result.metrics["stats"]["numel"] == 64 * 32


@pytest.mark.skipif(importlib.util.find_spec("analyzers.compare") is None,
                    reason="analyzers.compare not there yet")
def test_compare_with_matches_by_name(tmp_path, cache_env):
    a = _save(tmp_path / "a.safetensors", 2)
    b = _save(tmp_path / "b.safetensors", 2, scale_q=3.0)
    with Scope(a, device="cpu") as s:
        cmp = s.compare_with(b)
    assert cmp.pairs[0].a.name == "model.layers.0.self_attn.q_proj.weight"
    assert cmp.pairs[0].result.metrics["compare"]["rel_change"] == pytest.approx(2.0, rel=1e-4)
    unchanged = [p for p in cmp.pairs if p.a.name != cmp.pairs[0].a.name]
    assert all(p.result.metrics["compare"]["rel_change"] == 0 for p in unchanged)
    assert not cmp.only_in_a and not cmp.only_in_b
    doc = jsonio.loads_strict(jsonio.dumps(cmp.to_dict()))
    assert doc["schema"] == "wstui.diff/1"


WW_CSV = ROOT / "tests" / "data" / "ww_minilm.csv"


def _ww_alphas() -> dict[str, float]:
    """tensor name -> WeightWatcher's alpha, from the saved CSV (whatever its name column)."""
    import csv

    lines = [ln for ln in WW_CSV.read_text().splitlines() if not ln.startswith("#")]
    rows = list(csv.DictReader(lines))
    key = next(k for k in ("name", "tensor", "hf_name", "longname") if k in rows[0])
    out = {}
    for r in rows:
        try:
            a = float(r["alpha"])
        except (TypeError, ValueError):
            continue
        if a == a and a > 0:
            n = r[key]
            out[n if n.endswith((".weight", ".bias")) else f"{n}.weight"] = a
    return out


@pytest.mark.real
@pytest.mark.slow
def test_real_minilm_alphas_match_weightwatcher(minilm_dir, cache_env):
    if not WW_CSV.exists():
        pytest.skip("tests/data/ww_minilm.csv not there yet")
    ww = _ww_alphas()
    with Scope(minilm_dir, device="cpu", use_cache=False) as s:
        report = s.scan(methods=["spectral"])
    ours = {e.ref.name: e.result.metrics.get("spectral", {}).get("alpha")
            for e in report.entries}
    matched = {n: (ours[n], a) for n, a in ww.items() if ours.get(n) is not None}
    assert len(matched) >= 0.9 * len(ww), sorted(set(ww) - set(matched))[:5]
    close = [n for n, (a, b) in matched.items() if abs(a - b) <= 0.05]
    assert len(close) >= 0.95 * len(matched), {
        n: v for n, v in matched.items() if n not in close}
