"""`wstui track` run here (no Ray): discovery and order, the wstui.track/1 document and the
long CSV, tensors analyzed once while unchanged, the cache, bad input, and `--cluster`
without Ray."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wstui.checkpoint.base import CheckpointError
from wstui.checkpoint.series import discover, parse_step
from wstui.cli import main
from wstui.demo_run import interpolated_run, lowrank_run

ROOT = Path(__file__).resolve().parents[1]
STEPS = [0, 100, 300, 1000]


@pytest.fixture(scope="module")
def demo_run(demo_paths, tmp_path_factory) -> Path:
    """4 checkpoints from the demo's base to its fine-tune (frozen tensors stay equal)."""
    out = tmp_path_factory.mktemp("run")
    interpolated_run(demo_paths.base, demo_paths.finetuned, out, steps=STEPS)
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path / "cache"


@pytest.mark.parametrize(("name", "step"), [
    ("checkpoint-1000", 1000), ("step_2000.safetensors", 2000), ("epoch-3", 3),
    ("global_step500", 500), ("epoch3-step250", 250), ("ckpt-7.gguf", 7), ("1500", 1500),
    ("model", None), ("final.safetensors", None), ("laststep", None),
])
def test_parse_step(name: str, step: int | None) -> None:
    assert parse_step(name) == step


def test_discover_orders_by_step_with_irregular_spacing(demo_run: Path) -> None:
    steps = discover([demo_run])
    assert [s.step for s in steps] == STEPS  # 1000 after 300, not after 100 (names sort so)
    given = discover([demo_run / "checkpoint-1000", demo_run / "checkpoint-0"], "given")
    assert [s.step for s in given] == [0, 1]  # numbers that do not grow: positions
    by_name = discover([demo_run / "checkpoint-300", demo_run / "checkpoint-100"], "name")
    assert [s.step for s in by_name] == [100, 300]


def test_discover_refuses_bad_input(demo_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        discover([demo_run / "checkpoint-0", tmp_path / "nope"])
    (tmp_path / "final").symlink_to(demo_run / "checkpoint-0")
    with pytest.raises(CheckpointError, match="no step number") as exc:
        discover([demo_run / "checkpoint-0", tmp_path / "final"])
    assert "final" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="at least two"):
        discover([demo_run / "checkpoint-0"])


def test_track_document_and_csv(demo_run: Path, tmp_path: Path, cache: Path, capsys) -> None:
    out, table = tmp_path / "t.json", tmp_path / "t.csv"
    assert main(["track", str(demo_run), "--json", str(out), "--csv", str(table)]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "wstui.track/1"
    assert [s["step"] for s in doc["steps"]] == STEPS
    assert all(Path(s["path"]).is_dir() for s in doc["steps"])
    by_name = {t["name"]: t for t in doc["tensors"]}
    for t in doc["tensors"]:
        for m in ("alpha", "stable_rank", "spectral_norm", "rel_change_prev",
                  "rel_change_first"):
            assert len(t["series"][m]) == len(STEPS), (t["name"], m)
        assert t["series"]["rel_change_prev"][0] is None
        assert t["series"]["rel_change_first"][0] == 0.0
    frozen = by_name["model.layers.0.self_attn.q_proj.weight"]  # the fine-tune left it
    assert frozen["analyzed"] == [True, False, False, False]
    assert frozen["series"]["rel_change_first"] == [0.0] * 4
    assert len(set(frozen["series"]["alpha"])) == 1
    moved = [t for t in doc["tensors"] if t["analyzed"] == [True] * 4]
    assert moved, "the fine-tune changes some tensors at every step"
    for t in moved:
        rel = t["series"]["rel_change_first"]
        assert rel[1] < rel[2] < rel[3], t["name"]  # straight line from base to fine-tune
    assert doc["counts"]["analyzed"] == sum(sum(t["analyzed"]) for t in doc["tensors"])
    assert doc["counts"]["unchanged"] > doc["counts"]["analyzed"]
    assert set(doc["by_kind"]) >= {"attn_q", "attn_k", "attn_v", "attn_o", "mlp_gate",
                                   "mlp_up", "mlp_down"}
    assert len(doc["by_kind"]["attn_q"]["alpha"]) == len(STEPS)
    assert "median per module kind" in capsys.readouterr().out
    rows = list(csv.DictReader(table.open()))
    assert list(rows[0]) == ["step", "tensor", "metric", "value"]
    alpha = [r for r in rows if r["tensor"] == frozen["name"] and r["metric"] == "alpha"]
    assert [int(r["step"]) for r in alpha] == STEPS


def test_rerun_is_served_from_the_cache(demo_run: Path, cache: Path) -> None:
    from wstui.engine.track import track

    first = track([demo_run], workers=2)
    again = track([demo_run], workers=2)
    assert first["run"]["chains_computed"] == len(first["tensors"])
    assert again["run"]["chains_computed"] == 0
    assert again["run"]["scans_cached"] == again["counts"]["analyzed"]
    strip = [{k: v for k, v in d.items() if k != "run"} for d in (first, again)]
    assert strip[0] == strip[1]


def test_delta_adds_the_energy_rank_of_the_change(demo_run: Path, cache: Path) -> None:
    from wstui.engine.track import track

    doc = track([demo_run], methods=["spectral", "delta"], use_cache=False)
    assert doc["methods"] == ["spectral", "delta"]
    moved = next(t for t in doc["tensors"] if t["analyzed"] == [True] * 4
                 and len(t["shape"]) == 2)
    ranks = moved["series"]["delta_energy_rank_prev"]
    assert ranks[0] is None and all(isinstance(r, int) and r > 0 for r in ranks[1:])
    assert "stats" not in doc["methods"] and "l2_norm" not in moved["series"]


def _cli(args: list[str], env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nfrom wstui.cli import main\nsys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {**os.environ, "WSTUI_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    e.pop("RAY_ADDRESS", None)
    return e


def test_bad_input_is_one_line_exit_2(demo_run: Path, demo_paths, tmp_path: Path,
                                      env: dict[str, str]) -> None:
    cases = [
        ([str(demo_run / "checkpoint-0"), str(tmp_path / "missing")], "missing"),
        # the fine-tune renames model.norm.weight: not the same architecture
        ([str(demo_paths.base), str(demo_paths.finetuned), "--order", "given"], "finetuned"),
        ([str(demo_paths.base), str(demo_paths.finetuned)], "no step number"),
    ]
    for args, needle in cases:
        r = _cli(["track", *args, "--quiet"], env)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("wstui: ") and needle in lines[0], lines
        assert "Traceback" not in r.stderr


def test_cluster_without_ray_is_one_line_and_local_never_imports_ray(
        demo_run: Path, demo_paths, env: dict[str, str]) -> None:
    no_ray = "sys.modules['ray'] = None  # import ray -> ImportError, as without the extra"
    for args in (["track", str(demo_run), "--cluster", "127.0.0.1:1"],
                 ["scan", str(demo_paths.base), "--cluster", "127.0.0.1:1"]):
        r = _cli([*args, "--quiet"], env, no_ray)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [
            "wstui: --cluster needs Ray, an optional extra: pip install 'wstui[ray]'"]
    r = _cli(["track", str(demo_run), "--quiet"], {**env, "RAY_ADDRESS": "127.0.0.1:1"},
             no_ray)
    assert r.returncode == 2 and "wstui[ray]" in r.stderr  # RAY_ADDRESS asks for the cluster
    code = ("import sys\nfrom wstui.cli import main\n"
            f"assert main(['track', {str(demo_run)!r}, '--quiet']) == 0\n"
            "assert 'ray' not in sys.modules, 'the local run imported ray'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.real
def test_minilm_run_shows_growth_and_computes_frozen_once(minilm_dir: Path, tmp_path: Path,
                                                          cache: Path) -> None:
    from wstui.engine.track import track

    steps = [0, 10, 30, 100]
    lowrank_run(minilm_dir, tmp_path / "run", steps=steps, frozen_blocks=2)
    doc = track([tmp_path / "run"], use_cache=False)
    by_name = {t["name"]: t for t in doc["tensors"]}
    q5 = by_name["encoder.layer.5.attention.self.query.weight"]
    rel = q5["series"]["rel_change_first"]
    assert rel[0] == 0.0 and rel[1] < rel[2] < rel[3]
    assert q5["analyzed"] == [True] * 4
    for name in ("encoder.layer.0.attention.self.query.weight",
                 "embeddings.word_embeddings.weight", "encoder.layer.3.output.LayerNorm.weight"):
        assert by_name[name]["analyzed"] == [True, False, False, False], name
    changed = sum(1 for t in doc["tensors"] if t["analyzed"][1])
    assert changed == 4 * 6  # q, k, v, o, up, down of blocks 2..5
    assert doc["counts"]["analyzed"] == len(doc["tensors"]) + 3 * changed
