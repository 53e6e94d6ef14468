"""Every output file wstui writes (`--json`, `--csv`, `ls --json`, the app's exports) goes here.

Why one module: a target is not always a regular file. A FIFO, a device (/dev/null) or
/dev/stdout is written in place and stays what it was; a symlink is written through (its target
replaced); `-` is stdout; a regular file is replaced atomically (temp file in the same folder,
then `os.replace`), so a reader, a kill or a full disk never leaves half a file where a good one
was. `check_target` refuses what cannot be written before any work starts, so that a long scan
never ends in a failed write it could have foreseen.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

STDOUT = "-"

#: first characters that make a spreadsheet evaluate a cell (DESIGN §10; OWASP adds tab and CR)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FD_ALIAS = re.compile(r"^/(?:dev/fd|proc/self/fd)/(\d+)$")


class OutputError(Exception):
    """An output target that cannot be written; the message is one line naming it."""


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def is_stdout(path: str | os.PathLike[str] | None) -> bool:
    return path is not None and os.fspath(path) == STDOUT


def _fd_of(p: str) -> int | None:
    """The descriptor a path names (/dev/stdout, /dev/fd/N, ...): written through that
    descriptor, never reopened, so that a redirected stdout file is not truncated."""
    if p in ("/dev/stdout", "/proc/self/fd/1"):
        return 1
    if p in ("/dev/stderr", "/proc/self/fd/2"):
        return 2
    m = _FD_ALIAS.match(p)
    return int(m.group(1)) if m else None


def _plan(path: str | os.PathLike[str]) -> tuple[str, Any]:
    """How to write `path`: ("stdout", None), ("fd", n), ("inplace", path), ("atomic", real)."""
    p = os.fspath(path)
    if p == STDOUT:
        return "stdout", None
    if not p:
        raise OutputError("output file name is empty")
    if "\x00" in p:
        raise OutputError(f"{p!r}: a file name cannot contain NUL")
    fd = _fd_of(p)
    if fd is not None:
        return "fd", fd
    try:
        st: os.stat_result | None = os.stat(p)  # follows symlinks
    except FileNotFoundError:
        st = None
    except OSError as exc:  # name too long, a file used as a folder, a loop, no permission
        raise OutputError(f"cannot write {p}: {_why(exc)}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {p}: it is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        return "inplace", p  # FIFO, character or block device, socket
    return "atomic", os.path.realpath(p)  # a symlink (even dangling) is written through


def check_target(path: str | os.PathLike[str] | None) -> None:
    """Refuse, with one line, a target that cannot be written; run before any work starts.

    Nothing lasting is created: for a regular file the check creates and removes a temp file in
    the target's folder, which is what the real write does (it catches read-only folders and
    file systems, /proc, full inode tables). A FIFO is not opened (that would block).
    """
    if path is None:
        return
    kind, where = _plan(path)
    p = os.fspath(path)
    if kind == "fd":
        try:
            os.fstat(where)
        except OSError:
            raise OutputError(f"cannot write {p}: descriptor {where} is not open") from None
    elif kind == "inplace":
        if not os.access(where, os.W_OK):
            raise OutputError(f"cannot write {p}: permission denied")
    elif kind == "atomic":
        parent, name = os.path.split(where)
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            raise OutputError(f"cannot write {p}: folder {parent} does not exist") from None
        except OSError as exc:
            raise OutputError(f"cannot write {p}: {_why(exc)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write {p}: {parent} is not a folder")
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no pathconf: skip
            if len(os.fsencode(name)) > os.pathconf(parent, "PC_NAME_MAX"):
                raise OutputError(f"cannot write {p}: file name too long")
        if os.path.exists(where) and not os.access(where, os.W_OK):
            raise OutputError(f"cannot write {p}: the file is read-only")
        try:
            fd, tmp = _make_temp(parent, name, None)
        except OSError as exc:
            raise OutputError(f"cannot write {p}: {_why(exc)}") from None
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def check_targets(**targets: str | os.PathLike[str] | None) -> None:
    """`check_target` for each option (`json=..., csv=...`); at most one of them may be `-`."""
    to_stdout = [k for k, v in targets.items() if is_stdout(v)]
    if len(to_stdout) > 1:
        names = " and ".join(f"--{k}" for k in to_stdout)
        raise OutputError(f"{names} cannot both write to stdout ('-')")
    for value in targets.values():
        check_target(value)


def _make_temp(parent: str, name: str, mode: int | None) -> tuple[int, str]:
    """A new hidden temp file beside the target (same file system, so `os.replace` is atomic).
    Its name stays short whatever the target's length. Created 0666 minus the umask, like the
    file a plain `open()` makes, or with the mode of the file it replaces."""
    for _ in range(100):
        tmp = os.path.join(parent, f".{name[:40]}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o666)
        except FileExistsError:
            continue
        if mode is not None:
            with contextlib.suppress(OSError):
                os.fchmod(fd, mode)
        return fd, tmp
    raise OSError(errno.EEXIST, "no free temp file name")  # pragma: no cover


@contextlib.contextmanager
def open_text(path: str | os.PathLike[str], *, newline: str | None = None) -> Iterator[TextIO]:
    """A text file to write `path` through; committed (renamed into place) on a clean exit.

    Raises OutputError (one line) when the target cannot be written; a temp file never stays.
    A BrokenPipeError on stdout is left to the caller (the CLI exits quietly, as coreutils do).
    """
    p = os.fspath(path)
    kind, where = _plan(path)
    if kind in ("stdout", "fd") and where in (None, 1, 2):
        stream = sys.stderr if where == 2 else sys.stdout
        try:
            yield stream
            stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            name = "stdout" if kind == "stdout" else p
            raise OutputError(f"cannot write {name}: {_why(exc)}") from None
        return
    if kind in ("fd", "inplace"):
        try:  # a FIFO blocks here until a reader opens it, as a shell redirection does
            fd = (os.dup(where) if kind == "fd"
                  else os.open(where, os.O_WRONLY | os.O_TRUNC | _CLOEXEC))
            fh = os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        except OSError as exc:
            raise OutputError(f"cannot write {p}: {_why(exc)}") from None
        try:
            with fh:
                yield fh
        except OSError as exc:
            raise OutputError(f"cannot write {p}: {_why(exc)}") from None
        return
    yield from _atomic(p, where, newline)


def _atomic(p: str, real: str, newline: str | None) -> Iterator[TextIO]:
    parent, name = os.path.split(real)
    try:
        mode = stat.S_IMODE(os.stat(real).st_mode)
    except OSError:
        mode = None
    try:
        fd, tmp = _make_temp(parent, name, mode)
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {_why(exc)}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, real)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {p}: {_why(exc)}") from None
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` to `path` (see the module docstring for what each kind of target gets)."""
    with open_text(path) as fh:
        fh.write(text)
    return Path(path)


def csv_cell(value: Any) -> Any:
    """A CSV cell: None is empty; a string a spreadsheet would run as a formula gets a leading
    `'` (numbers stay numbers, so a negative value is still a number)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> Path:
    """One CSV writer for every table: a header of `columns`, one line per row (missing keys
    and None are empty cells, keys outside `columns` are left out), cells guarded by
    `csv_cell`."""
    with open_text(path, newline="") as fh:
        w = csv.writer(fh)
        w.writerow([csv_cell(c) for c in columns])
        for r in rows:
            w.writerow([csv_cell(r.get(c)) for c in columns])
    return Path(path)
