"""The SQLite result cache: hits, invalidation, a SIGKILLed scan, two scans at once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from analyzers.core import TensorResult
from tests.scan_helpers import CALLS, install_fakes, make_checkpoint, small_model
from wstui.engine.cache import FileKey, ResultCache, options_hash
from wstui.engine.scan import ScanEngine

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    install_fakes(monkeypatch)


def test_put_get_roundtrip_with_nonfinite(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 10)
    fk = FileKey.of(f)
    frag = TensorResult(name="t", kind="attn_q", shape=(2, 3),
                        metrics={"spectral": {"condition_number": float("inf"), "a": 1.5}},
                        data={"spectral": {"spectrum": [3.0, 2.0]}})
    with ResultCache(tmp_path / "c.sqlite") as c:
        c.put(fk, "t", "spectral", "1", "h", frag)
        got = c.get(fk, "t", "spectral", "1", "h")
        assert got is not None
        assert got.metrics["spectral"]["condition_number"] == float("inf")
        assert got.data["spectral"]["spectrum"] == [3.0, 2.0]
        assert c.get(fk, "t", "spectral", "2", "h") is None  # analyzer version is in the key
        assert c.lookup_file(fk, {("spectral", "1", "h")}).keys() == {("t", "spectral")}
        assert c.lookup_file(fk, {("spectral", "1", "other")}) == {}
    assert options_hash({"a": 1, "b": [1, 2]}) == options_hash({"b": [1, 2], "a": 1})


def test_corrupt_database_is_set_aside(tmp_path):
    p = tmp_path / "c.sqlite"
    p.write_bytes(b"this is not a database" * 100)
    with ResultCache(p) as c:
        assert c.count() == 0
    assert list(tmp_path.glob("c.sqlite.corrupt-*"))


def test_rescan_hits_cache_and_gives_equal_results(fakes, tmp_path):
    c = make_checkpoint(tmp_path / "m", small_model())
    first = ScanEngine(c, workers=2).run()
    n_calls = len(CALLS)
    assert n_calls > 0
    eng = ScanEngine(c, workers=2)
    streamed: list[str] = []
    second = eng.run(on_result=lambda n, r: streamed.append(n))
    assert len(CALLS) == n_calls  # nothing recomputed
    assert eng.progress().total == 0
    assert first.to_dict()["tensors"] == second.to_dict()["tensors"]
    assert set(streamed) == {t.name for t in c.tensors}
    # another option set (a threshold) is another key
    ScanEngine(c, options={"thresholds": {"alpha_low": 3.0}}).run()
    assert len(CALLS) > n_calls
    c.close()


def test_no_cache_neither_reads_nor_writes(fakes, tmp_path):
    c = make_checkpoint(tmp_path / "m", small_model())
    ScanEngine(c, use_cache=False).run()
    assert not (tmp_path / "cache" / "results.sqlite").exists()
    n = len(CALLS)
    ScanEngine(c).run()
    assert len(CALLS) == 2 * n
    ScanEngine(c, use_cache=False).run()  # the cache is full, but not read
    assert len(CALLS) == 3 * n


def test_file_change_invalidates(fakes, tmp_path):
    d = tmp_path / "m"
    c = make_checkpoint(d, small_model(seed=1))
    ScanEngine(c).run()
    n = len(CALLS)
    c.close()
    # rewrite the file with other values: size/mtime change, so nothing may be reused
    path = d / "model.safetensors"
    time.sleep(0.01)
    save_file({k: v.contiguous() for k, v in small_model(seed=2).items()}, str(path))
    c2 = make_checkpoint(d, small_model(seed=2))
    report = ScanEngine(c2).run()
    assert len(CALLS) == 2 * n
    want = float(small_model(seed=2)["model.layers.0.mlp.up_proj.weight"].mean())
    got = report.tensors["model.layers.0.mlp.up_proj.weight"].metrics["fstats"]["mean"]
    assert got == pytest.approx(want)
    con = sqlite3.connect(tmp_path / "cache" / "results.sqlite")
    pairs = con.execute("SELECT DISTINCT size, mtime_ns FROM results").fetchall()
    con.close()
    fk = FileKey.of(path)
    assert pairs == [(fk.size, fk.mtime_ns)]  # rows of the old file were dropped
    c2.close()


# --------------------------------------------------------------------------- subprocesses
BOOT = """
import sys, time
from analyzers import core
from analyzers.core import Output

@core.register("fslow", version="1", heavy=False, default=False)
def fslow(ctx):
    time.sleep(float(__import__("os").environ.get("FSLOW_S", "0.05")))
    return Output(metrics={"mean": float(ctx.tensor.mean())})

from wstui.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _model_file(tmp_path: Path, n: int = 40) -> Path:
    g = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(32, 16, generator=g)
               for i in range(n)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path


def _scan_cmd(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", BOOT, "scan", str(path), "--methods", "fslow", "--quiet",
            "--workers", "1", *extra]


def _env(tmp_path: Path, slow: float) -> dict[str, str]:
    return {**os.environ, "WSTUI_CACHE_DIR": str(tmp_path / "cache"), "FSLOW_S": str(slow),
            "PYTHONPATH": str(ROOT)}


def _rows(db: Path) -> dict[str, float]:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {t: c for t, c in con.execute("SELECT tensor, created FROM results")}
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_mid_scan_leaves_usable_cache(tmp_path):
    path = _model_file(tmp_path)
    db = tmp_path / "cache" / "results.sqlite"
    proc = subprocess.Popen(_scan_cmd(path), env=_env(tmp_path, 0.1))
    deadline = time.time() + 60
    while time.time() < deadline:
        if db.exists():
            try:
                if len(_rows(db)) >= 3:
                    break
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    before = _rows(db)
    assert 3 <= len(before) < 40
    out = subprocess.run(_scan_cmd(path, "--json", str(tmp_path / "r.json")),
                         env=_env(tmp_path, 0.0), timeout=120)
    assert out.returncode == 0
    after = _rows(db)
    assert len(after) == 40
    for name, created in before.items():  # finished results were reused, not recomputed
        assert after[name] == created


@pytest.mark.slow
def test_two_concurrent_scans_of_one_model(tmp_path):
    path = _model_file(tmp_path)
    procs = [subprocess.Popen(_scan_cmd(path, "--json", str(tmp_path / f"r{i}.json")),
                              env=_env(tmp_path, 0.02), stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "locked" not in err
    assert len(_rows(tmp_path / "cache" / "results.sqlite")) == 40
    from wstui import jsonio

    docs = [jsonio.loads_strict((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    assert docs[0]["tensors"] == docs[1]["tensors"]
