"""The result cache under faults: a lock held by another process, a read-only cache, real
damage. Only damage sets the file aside; a lock or a read-only file never costs the cache, and
a lock never stalls a scan for more than a few seconds."""

from __future__ import annotations

import os
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
from wstui.engine import cache as cache_mod
from wstui.engine.cache import FileKey, ResultCache
from wstui.engine.scan import ScanEngine

ROOT = Path(__file__).resolve().parents[1]

LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
if len(sys.argv) > 3:
    con.execute("PRAGMA journal_mode=" + sys.argv[3])
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""


def _hold_lock(db: Path, seconds: float, mode: str | None = None) -> subprocess.Popen[str]:
    """Another process holding `BEGIN EXCLUSIVE` on the cache for `seconds`."""
    args = [sys.executable, "-c", LOCKER, str(db), str(seconds)] + ([mode] if mode else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    install_fakes(monkeypatch)


def _frag(i: int = 0) -> TensorResult:
    return TensorResult(name="t", kind="attn_q", shape=(2, 2), metrics={"fstats": {"mean": i}})


def _set_aside(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.corrupt-*")
                  if not p.name.endswith(("-wal", "-shm")))


def _rows(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    finally:
        con.close()


# ---------------------------------------------------------------------------- locks
def test_exclusive_lock_during_a_scan_costs_seconds_not_the_cache(fakes, tmp_path):
    """Before: the scan sat silent for 60 s per write, then renamed the good database
    `*.corrupt-*` and recomputed everything."""
    c = make_checkpoint(tmp_path / "m", small_model())
    ScanEngine(c, methods=["fstats"], workers=2).run()  # a healthy cache with rows in it
    db = tmp_path / "cache" / "results.sqlite"
    before = _rows(db)
    locker = _hold_lock(db, 60)
    try:
        t0 = time.monotonic()
        eng = ScanEngine(c, methods=["fstats", "fquant"], workers=2)
        report = eng.run()
        notices = _flush_and_notices(eng)
        elapsed = time.monotonic() - t0
    finally:
        locker.kill()
        locker.wait()
    assert elapsed < 10, elapsed  # one short wait, then the workers never wait again
    assert all(e.result.metrics.get("fquant") or e.result.skipped or e.result.errors
               for e in report.entries)
    assert _set_aside(tmp_path / "cache") == []
    assert len(notices) == 1 and "not saved" in notices[0] and "locked" in notices[0]
    assert "\n" not in notices[0]
    assert _rows(db) >= before  # nothing lost (a late write may land once the lock is gone)
    n = len(CALLS)
    ScanEngine(c, methods=["fstats"], workers=2).run()  # the fstats rows are still used
    assert len(CALLS) == n


def _flush_and_notices(engine) -> list[str]:
    from wstui.commands._run import cache_notices

    return cache_notices(engine)


def test_writes_that_met_a_lock_are_saved_once_it_is_released(tmp_path):
    db = tmp_path / "c.sqlite"
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 10)
    fk = FileKey.of(f)
    with ResultCache(db) as c:
        c.put(fk, "t0", "fstats", "1", "h", _frag(0))
        locker = _hold_lock(db, cache_mod.BUSY_TIMEOUT_S + 1.5)  # longer than one wait
        t0 = time.monotonic()
        for i in range(1, 30):
            c.put(fk, f"t{i}", "fstats", "1", "h", _frag(i))
        assert time.monotonic() - t0 < cache_mod.BUSY_TIMEOUT_S + 1  # one wait, not 29
        assert c.pending() > 0
        got = c.get(fk, "t5", "fstats", "1", "h")  # a queued row is already visible
        assert got is not None and got.metrics["fstats"]["mean"] == 5
        locker.wait(30)
        deadline = time.monotonic() + 10
        while c.pending() and time.monotonic() < deadline:
            time.sleep(0.1)  # the retry thread writes them, off the callers' threads
        assert c.pending() == 0
        assert c.notices() == []
    assert _rows(db) == 30


def test_a_lock_that_blocks_readers_bypasses_the_cache_without_renaming(tmp_path):
    """A rollback-journal database under BEGIN EXCLUSIVE cannot even be read."""
    db = tmp_path / "c.sqlite"
    ResultCache(db).close()
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    locker = _hold_lock(db, 60, "DELETE")
    try:
        t0 = time.monotonic()
        c = ResultCache(db, timeout_s=0.5)
        fk_file = tmp_path / "w.bin"
        fk_file.write_bytes(b"x")
        fk = FileKey.of(fk_file)
        assert c.lookup_file(fk, {("fstats", "1", "h")}) == {}
        c.put(fk, "t", "fstats", "1", "h", _frag())
        c.flush(timeout_s=0.5)
        assert time.monotonic() - t0 < 8
        assert c.notices() and all("\n" not in n for n in c.notices())
        assert any("locked" in n for n in c.notices())
        c.close()
    finally:
        locker.kill()
        locker.wait()
    assert _set_aside(tmp_path) == [] and db.exists()


@pytest.mark.slow
def test_cli_scan_under_a_lock_prints_one_notice(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({f"model.layers.{i}.mlp.up_proj.weight": torch.randn(16, 8) for i in range(6)},
              str(path))
    env = {**os.environ, "WSTUI_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "wstui", "scan", str(path), "--methods", "stats", "--quiet"]
    subprocess.run(cmd, env=env, check=True, timeout=120)
    db = tmp_path / "cache" / "results.sqlite"
    locker = _hold_lock(db, 120)
    try:
        r = subprocess.run([*cmd, "--methods", "stats,sparsity"], env=env, capture_output=True,
                           text=True, timeout=120)
    finally:
        locker.kill()
        locker.wait()
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wstui: ") and "locked" in lines[0], lines
    assert _set_aside(tmp_path / "cache") == []


# ------------------------------------------------------------------------ read-only
def _query_only_connect(monkeypatch):
    """A read-only cache as SQLite reports one. Tests run as root, where a chmod does not
    stop a write, and a read-only mount is not available: every read-write connection is
    made `query_only`, so that writes fail with SQLITE_READONLY exactly where they would."""
    real = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.execute("PRAGMA query_only=1")
        return conn

    monkeypatch.setattr(cache_mod.sqlite3, "connect", connect)


def test_read_only_cache_is_used_for_reading_and_never_renamed(fakes, tmp_path, monkeypatch):
    c = make_checkpoint(tmp_path / "m", small_model())
    ScanEngine(c, methods=["fstats"], workers=2).run()
    db = tmp_path / "cache" / "results.sqlite"
    before = _rows(db)
    n = len(CALLS)
    _query_only_connect(monkeypatch)
    eng = ScanEngine(c, methods=["fstats", "fquant"], workers=2)
    eng.run()
    notices = _flush_and_notices(eng)
    assert not [call for call in CALLS[n:] if call[0] == "fstats"]  # cached rows were read
    assert [call for call in CALLS[n:] if call[0] == "fquant"]
    assert len(notices) == 1 and "read-only" in notices[0], notices
    assert _set_aside(tmp_path / "cache") == []
    monkeypatch.undo()
    assert _rows(db) == before


def test_cache_that_cannot_be_opened_read_write_is_opened_read_only(tmp_path, monkeypatch):
    """A read-only folder: SQLite cannot open the file read-write (SQLITE_CANTOPEN)."""
    db = tmp_path / "c.sqlite"
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    fk = FileKey.of(f)
    with ResultCache(db) as c:
        c.put(fk, "t", "fstats", "1", "h", _frag(7))
    real = sqlite3.connect

    def connect(database, *args, **kwargs):
        if not kwargs.get("uri"):
            raise sqlite3.OperationalError("unable to open database file")
        return real(database, *args, **kwargs)

    monkeypatch.setattr(cache_mod.sqlite3, "connect", connect)
    with ResultCache(db) as c:
        assert c.read_only
        got = c.lookup_file(fk, {("fstats", "1", "h")})
        assert got[("t", "fstats")].metrics["fstats"]["mean"] == 7
        c.put(fk, "u", "fstats", "1", "h", _frag())  # dropped quietly: the notice says so
        assert len(c.notices()) == 1 and "read only" in c.notices()[0]
    assert _set_aside(tmp_path) == []


def test_unusable_cache_folder_bypasses_with_a_notice(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c = ResultCache(blocker / "sub" / "c.sqlite")  # the folder cannot be created
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    c.put(FileKey.of(f), "t", "fstats", "1", "h", _frag())
    assert c.get(FileKey.of(f), "t", "fstats", "1", "h") is None
    assert len(c.notices()) == 1 and "not used" in c.notices()[0]
    c.close()


# --------------------------------------------------------------------------- damage
def test_garbage_file_is_set_aside_with_a_notice(tmp_path):
    db = tmp_path / "c.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with ResultCache(db) as c:
        assert c.count() == 0
        (line,) = c.notices()
    assert "set aside" in line and "not a database" in line and "\n" not in line
    assert len(_set_aside(tmp_path)) == 1


def test_damaged_pages_found_mid_run_are_set_aside(tmp_path):
    """Pages overwritten after the header: SQLite opens the file and fails on the data
    ("malformed"); integrity_check confirms it, the file is set aside, the run goes on."""
    db = tmp_path / "c.sqlite"
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    fk = FileKey.of(f)
    with ResultCache(db) as c:
        for i in range(400):
            c.put(fk, f"t{i}", "fstats", "1", "h", TensorResult(
                name="t", kind="other", shape=(1,), metrics={"fstats": {"pad": "y" * 500}}))
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    size = db.stat().st_size
    with db.open("r+b") as fh:
        fh.seek(3 * page)
        fh.write(os.urandom(size - 3 * page))
    c = ResultCache(db)
    c.lookup_file(fk, {("fstats", "1", "h")})
    c.put(fk, "new", "fstats", "1", "h", _frag(1))
    assert any("set aside" in n for n in c.notices()), c.notices()
    assert len(_set_aside(tmp_path)) == 1
    assert c.get(fk, "new", "fstats", "1", "h") is not None  # the new file works
    c.close()
