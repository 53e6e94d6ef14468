"""The types every reader produces: `TensorRef`, `Checkpoint`, `CheckpointError`.

Torch-free at import: `wstui ls` and the app's first paint list tensors without torch.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    import torch


class CheckpointError(Exception):
    """A checkpoint that cannot be read. The message is one line naming the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)


#: what `os.stat` calls a file that is not a regular one, for the one-line refusal
_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def not_regular(mode: int) -> str | None:
    """What a non-regular file is (None for a regular file): opening a FIFO blocks forever."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _FILE_KINDS if test(mode)), "not a regular file")


def open_regular(path: Path) -> int:
    """A read-only descriptor of a regular file, never blocking on a FIFO or a device.

    O_NONBLOCK makes the open of a FIFO return at once; the fstat then refuses it (and anything
    else that is not a regular file) before a byte is read.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError as exc:
        raise CheckpointError(path, "permission denied (cannot read the file)") from exc
    except OSError as exc:
        raise CheckpointError(path, f"cannot open: {exc.strerror or exc}") from exc
    what = not_regular(os.fstat(fd).st_mode)
    if what is not None:
        os.close(fd)
        raise CheckpointError(path, f"is {what}, not a regular weight file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


class SharedFile:
    """One read-only descriptor of a weight file for all the worker threads of a reader,
    opened on first use (through `open_regular`) and refused once the reader is closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.closed = False
        self._fd: int | None = None
        self._lock = threading.Lock()

    def fd(self) -> int:
        with self._lock:
            if self.closed:
                raise CheckpointError(self.path, "reader is closed (checkpoint closed)")
            if self._fd is None:
                self._fd = open_regular(self.path)
            return self._fd

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def release(self) -> None:
        """Close the descriptor but not the reader: the next load opens the file again. Only
        when no other thread is reading (a model task runs alone on its pool)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def signature(fd: int) -> tuple[int, int]:
    """(size, mtime_ns) of an open file: a reader compares it before each load."""
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns


def check_unchanged(path: Path, fd: int, opened: tuple[int, int], name: str) -> None:
    """Refuse to load from a file that changed since it was opened (its offsets may lie)."""
    now = signature(fd)
    if now[0] < opened[0]:
        raise CheckpointError(
            path, f"tensor {name}: file ends early, it shrank from {opened[0]} to {now[0]} "
            "bytes since it was opened"
        )
    if now != opened:
        raise CheckpointError(
            path, f"tensor {name}: file changed since it was opened (size {opened[0]} -> "
            f"{now[0]} bytes, new mtime); reopen it"
        )


def pread_into(fd: int, buf: memoryview, offset: int, path: Path, name: str) -> None:
    """Fill `buf` from the file at `offset` with positional reads.

    A read past the end of a file that shrank returns short, where touching a memory map's
    page beyond it kills the process with SIGBUS: every reader loads tensor bytes this way.
    Several reads, because Linux caps one at ~2 GiB.
    """
    done = 0
    while done < len(buf):
        try:
            if hasattr(os, "preadv"):
                n = os.preadv(fd, [buf[done:]], offset + done)
            else:  # pragma: no cover - Windows has no positional read
                chunk = os.pread(fd, len(buf) - done, offset + done)
                buf[done : done + len(chunk)] = chunk
                n = len(chunk)
        except OSError as exc:
            raise CheckpointError(
                path, f"tensor {name}: read failed ({exc.strerror or exc})"
            ) from exc
        if n <= 0:
            raise CheckpointError(
                path, f"tensor {name}: file ends early (changed since it was opened?)"
            )
        done += n


def read_small(path: Path, limit: int, what: str) -> bytes:
    """A whole small file (an index, a config), opened as `open_regular` does (never blocking
    on a FIFO swapped in after the check); bigger than `limit` is refused, not read."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise CheckpointError(path, f"{what} is {size} bytes, more than {limit} is refused")
        data = os.pread(fd, size, 0)
        if len(data) < size:
            raise CheckpointError(path, f"{what} ends early (changed while read?)")
        return data
    finally:
        os.close(fd)


def parse_json(path: Path, raw: bytes | str, what: str) -> Any:
    """JSON from a file, or a one-line error: bad syntax, huge integers and deep nesting
    (ValueError, RecursionError) all say what was wrong instead of a traceback."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise CheckpointError(path, f"{what} is not valid JSON (not UTF-8: {exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(path, f"{what} is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise CheckpointError(path, f"{what} is not usable JSON (nested too deep)") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise CheckpointError(path, f"{what} is not usable JSON ({exc})") from exc


def safe_name(name: str) -> str:
    """A name as stored, with lone surrogates (not UTF-8, from JSON or pickle escapes) written
    as `\\udXXX`: such a str cannot be printed, cached or written as UTF-8 anywhere later."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name


def fit_float(path: Path, name: str, t: torch.Tensor, dtype: torch.dtype) -> None:
    """Refuse an F64 tensor whose finite values do not survive the cast to `dtype`.

    1e300 becomes inf in float32 and would be reported as an Inf value; a tensor whose largest
    magnitude is below float32's smallest normal (1e-300) would read as all zeros (dead units).
    """
    import torch

    if t.dtype != torch.float64 or not dtype.is_floating_point or dtype == torch.float64:
        return
    if not t.numel():
        return
    info = torch.finfo(dtype)
    a = t.abs()
    amax = float(torch.where(torch.isfinite(a), a, torch.zeros((), dtype=a.dtype)).max())
    if amax > info.max:
        raise CheckpointError(
            path, f"tensor {name}: F64 values up to {amax:.3g} do not fit {str(dtype)[6:]} "
            f"(max {info.max:.3g}); not analyzed"
        )
    if 0 < amax < info.tiny:
        raise CheckpointError(
            path, f"tensor {name}: the largest F64 magnitude, {amax:.3g}, is below "
            f"{str(dtype)[6:]}'s smallest normal ({info.tiny:.3g}); not analyzed"
        )


def fit_float32(path: Path, name: str, a: Any) -> None:
    """`fit_float` for a float64 numpy array about to become float32 (no torch)."""
    import numpy as np

    if a.dtype != np.float64 or not a.size:
        return
    finite = np.abs(a[np.isfinite(a)])
    amax = float(finite.max()) if finite.size else 0.0
    info = np.finfo(np.float32)
    if amax > float(info.max):  # compared as Python floats: no float32 cast to overflow
        raise CheckpointError(
            path, f"tensor {name}: F64 values up to {amax:.3g} do not fit float32 "
            f"(max {info.max:.3g}); not analyzed"
        )
    if 0 < amax < float(info.tiny):
        raise CheckpointError(
            path, f"tensor {name}: the largest F64 magnitude, {amax:.3g}, is below "
            f"float32's smallest normal ({info.tiny:.3g}); not analyzed"
        )


class TensorReader(Protocol):
    """A reader that owns open files and can materialise one of its tensors."""

    def load(
        self, ref: TensorRef, *, device: str, dtype: torch.dtype | None, hf_layout: bool
    ) -> torch.Tensor: ...

    def close(self) -> None: ...


#: storage dtypes whose values the analyzers can read (after upcasting or dequantizing)
FLOAT_DTYPES = frozenset(
    {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E4M3FN", "F8_E5M2FNUZ"}
)


@dataclass(eq=False)
class TensorRef:
    """One tensor of a checkpoint, not yet loaded.

    `shape` is (rows, cols) in PyTorch order; `dtype` is the storage type (`BF16`, `Q4_K`, …);
    `kind` and `block` come from `naming`; `analyzable` is False for integer tensors and for
    GGUF types that cannot be dequantized, with the reason in `note`.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    file: Path
    reader: TensorReader | None = field(default=None, repr=False)
    hf_name: str | None = None
    kind: str = "other"
    block: int | None = None
    analyzable: bool = True
    note: str | None = None
    tied_to: str | None = None  # set on a tensor that shares its storage with another one

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n

    @property
    def display_name(self) -> str:
        return self.hf_name or self.name

    @property
    def is_matrix(self) -> bool:
        """DESIGN §5: two dims or more (`(shape[0], -1)` beyond two), at least two rows and
        two columns; the rule `analyzers.core.is_matrix_shape` applies to loaded tensors."""
        shape = self.shape
        return len(shape) >= 2 and int(shape[0]) >= 2 and self.numel // int(shape[0]) >= 2

    def load(
        self,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        hf_layout: bool = False,
    ) -> torch.Tensor:
        """The tensor as `dtype` (float32 by default) on `device`; GGUF types are dequantized.

        `hf_layout=True` undoes llama.cpp's q/k row permutation so a GGUF tensor compares
        elementwise with the safetensors it came from.
        """
        if self.reader is None:
            raise CheckpointError(self.file, f"tensor {self.name} has no reader (closed?)")
        if not self.analyzable:
            raise CheckpointError(self.file, f"tensor {self.name} cannot be loaded: {self.note}")
        if dtype is None:
            import torch

            dtype = torch.float32
        return self.reader.load(self, device=device, dtype=dtype, hf_layout=hf_layout)


@dataclass(eq=False)
class Checkpoint:
    """An opened checkpoint: files, tensor refs, parsed config. Close it (or use `with`)."""

    path: Path
    format: str  # "safetensors" | "torch" | "gguf"
    files: list[Path]
    tensors: list[TensorRef]
    config: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. GGUF architecture
    readers: list[TensorReader] = field(default_factory=list, repr=False)

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for r in self.readers:
            r.close()
        self.readers.clear()

    @property
    def notes(self) -> list[str]:
        """One-line notes on a checkpoint that opened anyway (index disagreements, an ignored
        config.json, …); `metadata["notes"]` holds them, so JSON and the API see the same."""
        return list(self.metadata.get("notes", []))

    def tensor(self, name: str) -> TensorRef:
        """By stored name or HF name."""
        for t in self.tensors:
            if t.name == name or t.hf_name == name:
                return t
        raise KeyError(name)

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors if t.tied_to is None)

    @property
    def dtypes(self) -> dict[str, int]:
        """Storage dtype -> number of tensors."""
        return dict(Counter(t.dtype for t in self.tensors))

    def summary(self) -> dict[str, Any]:
        """The DESIGN §8 `checkpoint` block."""
        return {
            "path": str(self.path),
            "format": self.format,
            "files": [str(f) for f in self.files],
            "n_tensors": len(self.tensors),
            "n_params": self.n_params,
            "dtypes": self.dtypes,
        }


R = TypeVar("R")


def open_shards(
    files: list[Path], open_reader: Callable[[Path], R]
) -> tuple[list[TensorRef], list[R]]:
    """One reader per shard and all their refs, in file order. A tensor name in two shards is
    an error; on any error the readers already opened are closed."""
    refs: list[TensorRef] = []
    readers: list[Any] = []
    seen: dict[str, Path] = {}
    try:
        for path in files:
            reader = open_reader(path)
            readers.append(reader)
            for ref in reader.refs():
                if ref.name in seen:
                    raise CheckpointError(
                        path, f"tensor {ref.name!r} is also in {seen[ref.name].name}"
                    )
                seen[ref.name] = path
                refs.append(ref)
    except BaseException:
        for r in readers:
            r.close()
        raise
    return refs, readers
