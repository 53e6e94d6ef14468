"""Output files (`--json`, `--csv`, `ls --json`, the app's exports) go through `wstui.outfile`:
a regular file is replaced atomically, a FIFO or a device is written in place and stays what
it was, a symlink is written through, `-` is stdout, and an unwritable target is refused with
one line before any work starts."""

from __future__ import annotations

import csv
import errno
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wstui import jsonio, outfile

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "WSTUI_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT),
            "COLUMNS": "160"}


def wstui(tmp: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wstui", *args], env=_env(tmp),
                          capture_output=True, text=True, timeout=180, **kw)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("out")
    g = torch.Generator().manual_seed(0)
    t = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(32, 16, generator=g)
         for i in range(3)}
    path = d / "model.safetensors"
    save_file(t, str(path))
    return path


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------ regular files
def test_regular_file_is_replaced_atomically_and_keeps_its_mode(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old\n")
    target.chmod(0o640)
    old_link = tmp_path / "hardlink"
    os.link(target, old_link)  # still names the old inode after an atomic replace
    jsonio.dump({"a": float("nan"), "b": 1}, target)
    assert jsonio.loads_strict(target.read_text()) == {"a": None, "b": 1}
    assert old_link.read_text() == "old\n"  # a new inode: the old file was never truncated
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_new_file_gets_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        outfile.write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644


def test_failure_mid_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("previous,good\n")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), outfile.open_text(target) as fh:
        fh.write("half a fi")
        raise Boom
    assert target.read_text() == "previous,good\n"
    assert _leftovers(tmp_path) == []


def test_quant_csv_is_atomic(tmp_path, monkeypatch):
    """`wstui quant --csv` used to write in place: a failure mid-write destroyed the old CSV.
    Every command's --csv now goes through the shared tail and the one CSV writer."""
    import argparse

    from wstui.commands import quant as quant_cmd
    from wstui.commands._run import write_outputs

    class BadRow(dict):
        def get(self, key, default=None):
            raise OSError(errno.EIO, "Input/output error")

    target = tmp_path / "study.csv"
    target.write_text("name,bits\nold,8\n")
    args = argparse.Namespace(json=None, csv=str(target))
    monkeypatch.setattr("wstui.documents.quant.csv_rows", lambda doc: [{"name": "a", "bits": 4},
                                                            BadRow(name="b", bits=4)])
    [failed] = write_outputs(args, table=lambda: quant_cmd.study_table({}))
    assert failed.endswith("study.csv: Input/output error")
    assert target.read_text() == "name,bits\nold,8\n"
    assert _leftovers(tmp_path) == []
    monkeypatch.setattr("wstui.documents.quant.csv_rows", lambda doc: [{"name": "=HYPERLINK(1)",
                                                             "bits": 4}])
    assert write_outputs(args, table=lambda: quant_cmd.study_table({})) == []
    assert list(csv.reader(target.open())) == [["name", "bits"], ["'=HYPERLINK(1)", "4"]]


# --------------------------------------------------------------- targets that are not files
def test_fifo_is_written_in_place_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    outfile.check_target(fifo)  # does not open it (that would block without a reader)
    jsonio.dump({"x": 1}, fifo)
    reader.join(10)
    assert jsonio.loads_strict(got[0]) == {"x": 1}
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert _leftovers(tmp_path) == []


def test_dev_null_stays_a_character_device():
    outfile.check_target("/dev/null")
    outfile.write_csv("/dev/null", [{"a": 1}], ["a"])
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_symlink_is_written_through(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    jsonio.dump([1, 2], link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert jsonio.loads_strict(real.read_text()) == [1, 2]
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "made.json")
    jsonio.dump([3], dangling)
    assert dangling.is_symlink() and jsonio.loads_strict((tmp_path / "made.json").read_text())
    assert _leftovers(tmp_path) == []


def test_dash_is_stdout(capsys):
    jsonio.dump({"k": "v"}, "-")
    assert jsonio.loads_strict(capsys.readouterr().out) == {"k": "v"}


def test_dev_stdout_is_written_through_the_descriptor(tmp_path):
    """A redirected stdout file is appended to, not truncated nor replaced by a rename."""
    out = tmp_path / "captured.txt"
    code = ("import sys; from wstui import outfile\n"
            "print('before', flush=True)\n"
            "outfile.write_text('/dev/stdout', 'file body\\n')\n"
            "print('after')\n")
    with out.open("w") as fh:
        subprocess.run([sys.executable, "-c", code], stdout=fh, env=_env(tmp_path), check=True,
                       timeout=60)
    assert out.read_text() == "before\nfile body\nafter\n"


# ------------------------------------------------------------------------ refused at once
def test_unwritable_targets_are_refused_with_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    cases = {
        str(tmp_path): "it is a directory",
        str(tmp_path / "missing" / "out.json"): "does not exist",
        str(tmp_path / ("n" * 300 + ".json")): "too long",
        str(tmp_path / "afile" / "out.json"): "Not a directory",
        "/proc/wstui-test/out.json": "",
        "": "empty",
    }
    for target, why in cases.items():
        with pytest.raises(outfile.OutputError) as info:
            outfile.check_target(target)
        msg = str(info.value)
        assert "\n" not in msg and why in msg, (target, msg)
    with pytest.raises(outfile.OutputError, match="cannot both write to stdout"):
        outfile.check_targets(json="-", csv="-")


def test_read_only_folder_is_refused(tmp_path, monkeypatch):
    """Tests run as root, where a mode bit does not stop a write: simulate the error the
    kernel gives for a read-only file system where the write would really happen."""

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(outfile, "_make_temp", read_only)
    with pytest.raises(outfile.OutputError, match="Read-only file system"):
        outfile.check_target(tmp_path / "out.json")


def test_scan_refuses_a_bad_target_before_the_scan(model, tmp_path):
    r = wstui(tmp_path, "scan", str(model), "--json", str(tmp_path / "nope" / "x.json"),
              "--methods", "stats")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and "nope" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "cache").exists()  # the scan never started


def test_a_failed_write_still_prints_the_report(model, tmp_path):
    """/dev/full passes the pre-flight (a device) and fails at the write: the other file and
    the report are still there, one line on stderr, exit 2."""
    good = tmp_path / "ok.csv"
    r = wstui(tmp_path, "scan", str(model), "--methods", "stats", "--json", "/dev/full",
              "--csv", str(good))
    assert r.returncode == 2, r.stderr
    assert "model.layers" in r.stdout or "parameters" in r.stdout
    assert r.stderr.strip() == "wstui: cannot write /dev/full: No space left on device"
    assert good.exists()
    r = wstui(tmp_path, "ls", str(model), "--json", "/dev/full")
    assert r.returncode == 2
    assert "model.layers.0.mlp.up_proj.weight" in r.stdout
    assert r.stderr.strip() == "wstui: cannot write /dev/full: No space left on device"


def test_json_dash_keeps_stdout_for_the_file(model, tmp_path):
    r = wstui(tmp_path, "scan", str(model), "--methods", "stats", "--json", "-")
    assert r.returncode == 0, r.stderr
    doc = jsonio.loads_strict(r.stdout)  # the tables went to stderr
    assert doc["schema"] == "wstui.scan/1"
    r = wstui(tmp_path, "ls", str(model), "--json", "-")
    assert jsonio.loads_strict(r.stdout)["schema"] == "wstui.ls/1"


# --------------------------------------------------------------------------------- CSV
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(tmp_path):
    rows = [{"name": n, "v": v} for n, v in
            [("=cmd|' /C calc'!A0", 1), ("+1+1", -2.5), ("-2+3", 0), ("@SUM(A1)", None),
             ("\tx", 1), ("model.ok", -1)]]
    target = tmp_path / "t.csv"
    outfile.write_csv(target, rows, ["name", "v"])
    got = list(csv.reader(target.open(newline="")))
    assert got[1:] == [["'=cmd|' /C calc'!A0", "1"], ["'+1+1", "-2.5"], ["'-2+3", "0"],
                       ["'@SUM(A1)", ""], ["'\tx", "1"], ["model.ok", "-1"]]


def test_every_writer_goes_through_outfile():
    """No module writes a file by itself (the binary demo weights, the cache's own set-aside
    rename and the hub's refs in the HF cache are not output targets)."""
    pattern = re.compile(r"write_text\(|write_bytes\(|open\([^)]*[\"']w|os\.replace\(|"
                         r"\.replace\(tmp|csv\.(Dict)?[Ww]riter")
    allowed = {"outfile.py", "demo.py", "cache.py", "hub.py"}
    offenders = [f"{p.relative_to(ROOT)}:{i}"
                 for p in (ROOT / "wstui").rglob("*.py") if p.name not in allowed
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line) and "outfile." not in line]
    assert offenders == []
