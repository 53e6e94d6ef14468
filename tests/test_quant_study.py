"""The quantization study: the per-layer sweep, the summary table, the plan, the CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analyzers.quant_study import overhead_bits, plan, summarize
from wstui import jsonio


def _layer(name, alpha, rows, numel=1000, cols=100):
    return {"name": name, "alpha": alpha, "numel": numel, "cols": cols, "results": rows}


def _row(bits, alpha, fixed, sqnr, gran="channel", scheme="sym"):
    return {"bits": bits, "granularity": gran, "scheme": scheme, "sqnr_db": sqnr,
            "cosine": 1.0, "alpha": alpha, "alpha_fixed_xmin": fixed,
            "no_fit_reason": None if alpha is not None else "lost"}


def test_summary_counts_lost_fits_and_correlates_with_the_unquantized_alphas():
    layers = [
        _layer("a", 3.0, [_row(8, 3.01, 3.0, 40.0), _row(2, None, None, 5.0)]),
        _layer("b", 4.0, [_row(8, 4.02, 4.01, 42.0), _row(2, 1.5, 1.8, 6.0)]),
        _layer("c", 5.0, [_row(8, 5.03, 5.0, 41.0), _row(2, 1.2, 2.5, 7.0)]),
        _layer("d", None, [_row(8, None, None, 30.0), _row(2, None, None, 3.0)]),
    ]
    rows = summarize(layers)
    base, eight, two = rows
    assert base["bits"] is None and base["alpha"]["mean"] == pytest.approx(4.0)
    assert base["alpha"]["no_fit"] == 1
    assert eight["bits"] == 8 and two["bits"] == 2
    # 8 bit: nearly the same alphas, so r ~ 1 and a tiny change
    assert eight["alpha"]["corr"] == pytest.approx(1.0, abs=1e-3)
    assert eight["alpha"]["change_pct"] == pytest.approx(100 * (4.02 - 4.0) / 4.0)
    assert eight["alpha"]["no_fit"] == 1
    # 2 bit: layer a lost its fit; b and c fall below 2
    assert two["alpha"]["no_fit"] == 2
    assert two["alpha"]["below_2"] == 2
    assert two["alpha_fixed_xmin"]["in_2_6"] == 1
    assert two["sqnr_min"] == 3.0
    assert two["sqnr_mean"] == pytest.approx(np.mean([5.0, 6.0, 7.0, 3.0]))


def test_plan_picks_the_fewest_bits_that_keep_alpha_and_sqnr():
    rows = [_row(8, 3.0, 3.0, 48.0), _row(6, 3.0, 3.05, 36.0), _row(4, 3.0, 3.03, 25.0),
            _row(2, 3.0, 2.0, 5.0)]
    # 6 bit: |Δ| = 0.05 <= 2% of 3.0 = 0.06 and 36 dB; 4 bit fails on SQNR
    p = plan([_layer("a", 3.0, rows)], granularity="channel", scheme="sym")
    assert p["layers"][0]["bits"] == 6
    assert p["avg_bits_per_weight"] == pytest.approx(overhead_bits(6, "channel", "sym", 100))
    # no fit at all: the layer stays in 16-bit floats
    q = plan([_layer("b", None, rows)], granularity="channel", scheme="sym")
    assert q["layers"][0]["bits"] == 16


def test_overhead_of_scales():
    assert overhead_bits(4, "tensor", "sym") == 4
    assert overhead_bits(4, "group128", "sym") == pytest.approx(4.125)
    assert overhead_bits(4, "group128", "asym") == pytest.approx(4.25)


def test_quant_sweep_on_a_matrix_already_on_the_grid():
    """A matrix whose values are on the 8-bit per-tensor grid: 8 bit is exact, so alpha does not
    move and SQNR is infinite; lower widths lose SQNR monotonically."""
    import torch

    from analyzers import analyze

    g = torch.Generator().manual_seed(0)
    # integers times a power of two: the scale absmax/127 = 2^-7 is exact in float32
    w = torch.randint(-127, 128, (96, 64), generator=g).float() * 2.0**-7
    w[0, 0] = 127 * 2.0**-7
    r = analyze("w", w, methods=["quant_sweep"],
                options={"quant_sweep": {"bits": [8, 4, 2], "granularity": ["tensor"]}})
    assert not r.errors, r.errors
    m = r.metrics["quant_sweep"]
    by_bits = {x["bits"]: x for x in m["results"]}
    assert by_bits[8]["sqnr_db"] == math.inf and by_bits[8]["cosine"] == 1.0
    assert by_bits[8]["alpha"] == pytest.approx(m["alpha"])
    assert by_bits[8]["alpha_fixed_xmin"] == pytest.approx(m["alpha"])
    assert by_bits[4]["sqnr_db"] > by_bits[2]["sqnr_db"]


def test_quant_sweep_skips_vectors():
    import torch

    from analyzers import analyze

    r = analyze("b", torch.ones(10), methods=["quant_sweep"])
    assert "quant_sweep" in r.skipped and not r.errors


def _write_model(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    w = torch.randn(128, 96, generator=g) * 0.02
    w[:, 5] *= 50.0  # an outlier column: per-tensor loses, per-channel of rows too
    save_file({
        "model.layers.0.mlp.down_proj.weight": w,
        "model.layers.0.self_attn.q_proj.weight": torch.randn(96, 96, generator=g) * 0.02,
        "model.layers.0.input_layernorm.weight": torch.ones(96),
    }, str(path))
    return path


def test_quant_cli_writes_the_study(tmp_path, monkeypatch):
    model = _write_model(tmp_path / "m.safetensors")
    out = tmp_path / "q.json"
    csv_path = tmp_path / "q.csv"
    env = {**__import__("os").environ, "WSTUI_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "wstui", "quant", str(model), "--bits", "8,4,2",
         "--granularity", "tensor,channel", "--json", str(out), "--csv", str(csv_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc = jsonio.loads_strict(out.read_text())
    assert doc["schema"] == "wstui.quant/1"
    assert len(doc["layers"]) == 2  # the norm vector is not a matrix
    assert {(s["bits"], s["granularity"]) for s in doc["settings"]} == {
        (b, g) for b in (8, 4, 2) for g in ("tensor", "channel")}
    for layer in doc["layers"]:
        assert {"name", "kind", "block", "alpha", "xmin", "results"} <= set(layer)
        assert len(layer["results"]) == 6
    assert len(doc["summary"]) == 7 and len(doc["plan"]) == 2
    assert "tensor sym" in proc.stdout and "Mixed-precision plan" in proc.stdout
    assert csv_path.read_text().count("\n") == 1 + 12


def test_quant_cli_bad_setting_is_one_line(tmp_path):
    model = _write_model(tmp_path / "m.safetensors")
    proc = subprocess.run(
        [sys.executable, "-m", "wstui", "quant", str(model), "--granularity", "row"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def minilm_channel_study(minilm_dir, tmp_path_factory):
    from wstui.checkpoint import open_checkpoint
    from wstui.engine.study import run_study

    with open_checkpoint(minilm_dir) as ckpt:
        return run_study(ckpt, bits=[8, 2], granularity=["channel"], use_cache=False)


@pytest.mark.real
def test_minilm_fixed_xmin_alpha_tracks_the_unquantized_one(minilm_channel_study):
    doc = minilm_channel_study
    by_bits = {r["bits"]: r for r in doc["summary"] if r["bits"] is not None}
    assert by_bits[8]["alpha_fixed_xmin"]["corr"] >= 0.99

    def median_rel_change(bits: int) -> float:
        changes = []
        for layer in doc["layers"]:
            r = next(x for x in layer["results"] if x["bits"] == bits)
            if layer["alpha"] and r["alpha_fixed_xmin"] is not None:
                changes.append(abs(r["alpha_fixed_xmin"] - layer["alpha"]) / layer["alpha"])
        return float(np.median(changes))

    assert median_rel_change(2) >= 5 * median_rel_change(8)


@pytest.mark.real
def test_minilm_per_tensor_int8_flags_the_ffn_output(minilm_dir):
    from wstui.checkpoint import open_checkpoint
    from wstui.engine.study import run_study

    with open_checkpoint(minilm_dir) as ckpt:
        name = "encoder.layer.0.output.dense.weight"
        refs = [t for t in ckpt.tensors if name in (t.name, t.hf_name)]
        doc = run_study(ckpt, bits=[8], granularity=["tensor"], tensors=refs, use_cache=False)
    (layer,) = doc["layers"]
    assert layer["results"][0]["sqnr_db"] < 26.0


def test_demo_outlier_column_is_rescued_by_finer_scales(demo_paths, demo_manifest):
    """Per-tensor int8 loses the demo's outlier column; per-channel and group-wise scales bring
    it back above 26 dB, while on a clean matrix of the same shape they change little."""
    from wstui.checkpoint import open_checkpoint
    from wstui.engine.study import run_study

    defects = demo_manifest["defects"]
    outlier = next(d["tensor"] for d in defects if d["defect"] == "outlier_column")
    planted = {d["tensor"] for d in defects}
    with open_checkpoint(demo_paths.base) as ckpt:
        ref = ckpt.tensor(outlier)
        clean = next(t for t in ckpt.tensors if t.kind == ref.kind and t.name not in planted)
        doc = run_study(ckpt, bits=[8], granularity=["tensor", "channel", "group128"],
                        tensors=[ref, clean], use_cache=False)
    sqnr = {(layer["name"], r["granularity"]): r["sqnr_db"]
            for layer in doc["layers"] for r in layer["results"]}
    assert sqnr[(outlier, "tensor")] < 26.0
    assert sqnr[(outlier, "channel")] >= 26.0
    assert sqnr[(outlier, "group128")] >= 26.0
    clean_name = clean.display_name
    assert sqnr[(clean_name, "channel")] - sqnr[(clean_name, "tensor")] < 6.0
    assert sqnr[(clean_name, "group128")] - sqnr[(clean_name, "tensor")] < 6.0
    layer = next(x for x in doc["layers"] if x["name"] == clean_name)
    for r in layer["results"]:
        assert abs(r["alpha_fixed_xmin"] - layer["alpha"]) <= 0.1 * layer["alpha"]


def test_scope_quant_study_equals_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    from wstui import Scope

    model = _write_model(tmp_path / "m.safetensors")
    with Scope(model, use_cache=False) as s:
        doc = s.quant_study(bits=[8, 4], granularity=["channel"])
    out = tmp_path / "q.json"
    subprocess.run([sys.executable, "-m", "wstui", "quant", str(model), "--bits", "8,4",
                    "--granularity", "channel", "--no-cache", "--json", str(out), "--quiet"],
                   check=True, timeout=300)
    cli = jsonio.loads_strict(out.read_text())
    assert jsonio.strict(doc["layers"]) == cli["layers"]
    assert jsonio.strict(doc["summary"]) == cli["summary"]


def test_quant_on_gguf_runs_on_dequantized_weights_and_says_so(tmp_path, demo_paths):
    out = tmp_path / "q.json"
    proc = subprocess.run(
        [sys.executable, "-m", "wstui", "quant", str(demo_paths.gguf), "--bits", "8",
         "--granularity", "tensor", "--tensors", "*layers.0.self_attn*", "--no-cache",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dequantized" in proc.stdout
    doc = jsonio.loads_strict(out.read_text())
    assert doc["dequantized"] is True and doc["checkpoint"]["format"] == "gguf"
    assert len(doc["layers"]) == 4


def test_quant_ctrl_c_exits_130_with_the_finished_matrices(tmp_path):
    import os
    import signal
    import time

    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(2)
    save_file({f"model.layers.{i}.mlp.up_proj.weight": torch.randn(256, 128, generator=g)
               for i in range(300)}, str(tmp_path / "m.safetensors"))
    out = tmp_path / "q.json"
    env = {**os.environ, "WSTUI_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wstui", "quant", str(tmp_path / "m.safetensors"), "--json",
         str(out), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    db = tmp_path / "cache" / "results.sqlite"
    deadline = time.time() + 90
    while time.time() < deadline and not (db.exists() and db.stat().st_size > 0):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    doc = jsonio.loads_strict(out.read_text())
    assert doc["complete"] is False and 0 < len(doc["layers"]) < 300
