"""`wstui scan` through a subprocess: exit codes, one-line errors, strict JSON, CSV, Ctrl-C."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wstui import jsonio

ROOT = Path(__file__).resolve().parents[1]
SCAN_KEYS = {"schema", "wstui_version", "checkpoint", "methods", "device", "elapsed_s",
             "tensors", "top_issues"}
TENSOR_KEYS = {"name", "hf_name", "shape", "dtype", "kind", "block", "metrics", "findings",
               "errors"}
ISSUE_KEYS = {"tensor", "analyzer", "code", "severity", "value", "threshold", "message"}


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "WSTUI_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT),
            "COLUMNS": "160"}


def wstui(tmp: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wstui", *args], env=_env(tmp),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small llama-named checkpoint with one planted defect (a dead row) and an int tensor."""
    d = tmp_path_factory.mktemp("cli")
    g = torch.Generator().manual_seed(0)
    t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": torch.randn(128, 32, generator=g)}
    for i in range(2):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = torch.randn(32, 32, generator=g) / 6
        t[p + "mlp.up_proj.weight"] = torch.randn(64, 32, generator=g) / 6
        t[p + "mlp.down_proj.weight"] = torch.randn(32, 64, generator=g) / 8
        t[p + "input_layernorm.weight"] = torch.ones(32)
    t["model.layers.1.mlp.up_proj.weight"][5] = 0.0
    t["model.layers.0.mlp.down_proj.weight"][0, 0] = 30.0  # one outlier: int8 loses ~20 dB
    t["position_ids"] = torch.arange(8)
    path = d / "model.safetensors"
    save_file(t, str(path))
    return path


def test_scan_writes_strict_json_and_csv(model, tmp_path, monkeypatch):
    js, cs = tmp_path / "out.json", tmp_path / "out.csv"
    r = wstui(tmp_path, "scan", str(model), "--json", str(js), "--csv", str(cs))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    assert "parameters" in r.stdout and "Per module kind" in r.stdout
    assert "Top issues" in r.stdout
    doc = jsonio.loads_strict(js.read_text())
    assert set(doc) >= SCAN_KEYS
    assert doc["schema"] == "wstui.scan/1"
    assert doc["checkpoint"]["format"] == "safetensors"
    assert doc["checkpoint"]["n_tensors"] == 10
    assert doc["complete"] is True
    for t in doc["tensors"]:
        assert set(t) >= TENSOR_KEYS
    for i in doc["top_issues"]:
        assert set(i) >= ISSUE_KEYS
    by = {t["name"]: t for t in doc["tensors"]}
    assert by["position_ids"]["metrics"] == {}
    up = by["model.layers.1.mlp.up_proj.weight"]
    assert up["kind"] == "mlp_up" and up["block"] == 1 and up["shape"] == [64, 32]
    assert "data" not in up
    if "sparsity" in doc["methods"]:
        assert any(i["code"] == "dead_units" and i["tensor"] == up["name"]
                   for i in doc["top_issues"])
    rows = list(csv.DictReader(cs.open()))
    assert len(rows) == len(doc["tensors"])
    cols = rows[0].keys()
    assert list(cols)[:6] == ["name", "hf_name", "kind", "block", "shape", "dtype"]
    if "quantization" in doc["methods"]:
        assert "quantization.sqnr_db.8bit.tensor.sym" in cols
    # the same numbers from the cache on a rescan (in this process: no start-up cost)
    from wstui.cli import main

    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["scan", str(model), "--json", str(tmp_path / "again.json"), "--quiet"]) == 0
    doc2 = jsonio.loads_strict((tmp_path / "again.json").read_text())
    assert doc2["tensors"] == doc["tensors"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["scan", "/nonexistent/model.safetensors"], "/nonexistent/model.safetensors"),
        (["scan", "{model}", "--methods", "stats,nope"], "nope"),
        (["scan", "{model}", "--threshold", "bogus=3"], "bogus"),
    ],
)
def test_bad_input_is_one_line_exit_2(model, tmp_path, args, needle):
    r = wstui(tmp_path, *[a.format(model=model) for a in args])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tensors", "no.such.*"], "no.such"),
        (["--json", "/nonexistent/dir/x.json"], "/nonexistent/dir"),
        (["--workers", "0"], "workers"),
        (["--device", "bogus"], None),  # argparse: usage + one error line, exit 2
    ],
)
def test_bad_options_exit_2_in_process(model, tmp_path, monkeypatch, capsys, args, needle):
    """The same checks in this process (no interpreter start-up per case)."""
    from wstui.cli import main

    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    try:
        code = main(["scan", str(model), "--quiet", *args])
    except SystemExit as exc:  # argparse rejects the value itself
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    if needle is not None:
        assert err.strip().count("\n") == 0 and needle in err


def test_not_a_checkpoint_is_exit_2(tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    r = wstui(tmp_path, "scan", str(bad))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "junk.safetensors" in r.stderr


def test_fail_on_and_thresholds(model, tmp_path, monkeypatch):
    # every matrix breaks a threshold set absurdly high: --fail-on warn exits 1
    r = wstui(tmp_path, "scan", str(model), "--quiet", "--fail-on", "warn", "--threshold",
              "int8_lossy=200", "--tensors", "*mlp*")
    assert r.returncode == 1, r.stderr
    from wstui.cli import main

    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["scan", str(model), "--quiet", "--fail-on", "critical", "--tensors",
                 "*q_proj*", "--methods", "stats,quantization"]) == 0


@pytest.mark.slow
def test_ctrl_c_exits_130_and_writes_json(tmp_path):
    g = torch.Generator().manual_seed(1)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(384, 256, generator=g)
               for i in range(400)}
    path = tmp_path / "big.safetensors"
    save_file(tensors, str(path))
    js = tmp_path / "partial.json"
    proc = subprocess.Popen(
        # the full quantization sweep (36 settings a tensor) keeps even a quiet machine busy
        # for several seconds, so that SIGINT lands mid-scan
        [sys.executable, "-m", "wstui", "scan", str(path), "--json", str(js), "--quiet",
         "--methods", "stats,quantization_full,spectral"],
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a child inherits an ignored SIGINT (an earlier test in this process may leave it
        # so), and Python then installs no KeyboardInterrupt handler: restore the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    db = tmp_path / "cache" / "results.sqlite"
    deadline = time.time() + 90
    while time.time() < deadline and not (db.exists() and db.stat().st_size > 0):
        time.sleep(0.1)
    time.sleep(0.5)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    took = time.time() - t0
    assert proc.returncode == 130, err
    assert took < 3.0
    assert "interrupted" in err and "Traceback" not in err
    doc = jsonio.loads_strict(js.read_text())
    assert doc["complete"] is False
    assert 0 < len(doc["tensors"]) < 400


_CODE_ANALYZER = {"dead_units": "sparsity", "int8_lossy": "quantization", "nonfinite": "stats",
                  "ill_conditioned": "spectral", "alpha_low": "spectral",
                  "low_norm_tokens": "embedding", "outliers": "quantization"}


@pytest.mark.slow
def test_scan_finds_every_planted_demo_defect(tmp_path, demo_paths, demo_manifest):
    import analyzers

    manifest = demo_manifest
    js = tmp_path / "demo.json"
    r = wstui(tmp_path, "scan", str(demo_paths.base), "--json", str(js), "--quiet", "--top-issues",
              "100", timeout=300)
    assert r.returncode == 0, r.stderr
    doc = jsonio.loads_strict(js.read_text())
    issues = {(i["tensor"], i["code"]) for i in doc["top_issues"][:20]}  # the default table
    have = set(analyzers.names())
    missed = [d for d in manifest["defects"]
              if _CODE_ANALYZER.get(d["code"], d["code"]) in have
              and (d["tensor"], d["code"]) not in issues]
    assert not missed, f"planted defects not in the top issues: {missed}"
    planted = {d["tensor"] for d in manifest["defects"]}
    stray = [i for i in doc["top_issues"]
             if i["severity"] == "critical" and i["tensor"] not in planted]
    assert not stray, f"critical findings on clean tensors: {stray}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device_is_exit_2(model, tmp_path):
    r = wstui(tmp_path, "scan", str(model), "--device", "cuda")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "CUDA" in r.stderr
