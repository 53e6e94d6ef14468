"""Every bad input is one `CheckpointError` line naming the file; the CLI prints it, exits 2."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badinput_corpus import CASE_NAMES, NOT_UNSAFE, Case, build_corpus
from wstui.checkpoint import CheckpointError, open_checkpoint

_ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return build_corpus(tmp_path_factory.mktemp("badinput"))


CLI_CASES = ["missing_path", "empty_folder", "index_missing_shard_st", "st_truncated",
             "st_header_length_too_large", "st_header_not_json", "bin_pickle_imports_code",
             "gguf_bad_magic"]


@pytest.fixture
def deny_unreadable(monkeypatch: pytest.MonkeyPatch, corpus: dict[str, Case]) -> None:
    """root reads a chmod-000 file anyway: make `open` refuse it as it would for anyone else."""
    if not _ROOT_USER:
        return
    denied = str(corpus["no_read_permission"].names)
    real_open, real_os_open = builtins.open, os.open

    def guarded(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == denied:
            raise PermissionError(13, "Permission denied", denied)
        return real_open(file, *args, **kwargs)

    def guarded_os(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == denied:
            raise PermissionError(13, "Permission denied", denied)
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(os, "open", guarded_os)


@pytest.fixture
def case_env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
             corpus: dict[str, Case]) -> None:
    """What a case needs around it: environment variables, and folders that cannot be listed
    (`deny_list`) or entered (`deny_stat`). The corpus chmods them; root ignores that, so for
    root the OS calls pathlib makes are refused as they would be for anyone else."""
    extra = corpus[request.node.callspec.params["name"]].extra
    for key, value in extra.get("env", {}).items():
        monkeypatch.setenv(key, value)
    if not _ROOT_USER:
        return
    no_list = {os.path.abspath(p) for p in extra.get("deny_list", ())}
    no_stat = {os.path.abspath(p) for p in extra.get("deny_stat", ())}
    if not (no_list or no_stat):
        return

    def where(path: object) -> str:  # no realpath: it would call the patched lstat
        return os.path.abspath(os.fspath(path)) if isinstance(path, (str, Path)) else ""

    for fn in ("scandir", "listdir", "stat", "lstat", "open"):
        real = getattr(os, fn)

        def guarded(path, *args, _real=real, _fn=fn, **kwargs):  # type: ignore[no-untyped-def]
            at = where(path)
            listing = _fn in ("scandir", "listdir")
            if (listing and at in no_list) or (not listing and os.path.dirname(at) in no_stat):
                raise PermissionError(13, "Permission denied", str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, fn, guarded)


def test_corpus_builds_every_named_case(corpus: dict[str, Case]) -> None:
    assert tuple(corpus) == CASE_NAMES


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_line_naming_the_file(
    name: str, corpus: dict[str, Case], deny_unreadable: None, case_env: None
) -> None:
    case = corpus[name]
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(case.target).close()
    msg = str(err.value)
    assert "\n" not in msg
    assert str(case.names) in msg, msg
    problem = msg.replace(str(case.names), "")  # the words must be in the problem, not the path
    for word in case.words:
        assert word in problem, msg


@pytest.mark.parametrize("name", NOT_UNSAFE)
def test_a_file_that_is_no_pickle_is_not_called_unsafe(name: str, corpus: dict[str, Case]) -> None:
    """Issue 13: any non-pickle .bin was "an unsafe pickle"; the message says what it is."""
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(corpus[name].target)
    assert "unsafe" not in str(err.value)


def test_unknown_ggml_type_lists_tensor_and_opens_the_rest(corpus: dict[str, Case]) -> None:
    path = corpus["gguf_bad_magic"].names.parent / "unknown_type.gguf"
    with open_checkpoint(path) as ckpt:
        k = next(t for t in ckpt.tensors if t.name == "blk.0.attn_k.weight")
        q = next(t for t in ckpt.tensors if t.name == "blk.0.attn_q.weight")
        assert not k.analyzable and "99" in (k.note or "")
        assert q.analyzable and float(q.load().sum()) == 8 * 32
        with pytest.raises(CheckpointError):
            k.load()


def test_unsafe_pickle_never_ran(corpus: dict[str, Case], tmp_path: Path) -> None:
    """The refusal happens before any call: the pickled os.system reference is never resolved."""
    for name in ("bin_pickle_imports_code", "bin_zip_pickle_imports_code"):
        with pytest.raises(CheckpointError, match="unsafe"):
            open_checkpoint(corpus[name].target)


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_prints_one_line_and_exits_2(name: str, corpus: dict[str, Case]) -> None:
    pytest.importorskip("wstui.commands.ls", reason="`wstui ls` not written yet")
    case = corpus[name]
    proc = subprocess.run(
        [sys.executable, "-m", "wstui", "ls", str(case.target)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(case.names) in lines[0]
    assert proc.stdout.strip() == ""


def test_cli_cases_are_flagged_in_the_corpus(corpus: dict[str, Case]) -> None:
    assert sorted(CLI_CASES) == sorted(n for n, c in corpus.items() if c.cli)
