"""PyTorch pickle reader (`.bin`, `.pt`, `.pth`): weights-only, each tensor read on demand.

`torch.load(weights_only=True)` never runs code from the file: a pickle that asks for a global
outside the allow-list is refused, and we say which global it wanted.

Zip-format files (every `torch.save` since 1.6) are opened with `map_location="meta"`: the
pickle is read, no tensor byte is, and each storage carries its offset in the file. A load
then reads the tensor's own bytes with a positional read, as the safetensors reader does.
Why not `mmap=True`: a page of a map beyond the end of a file that shrank (rewritten while a
scan runs) kills the process with SIGBUS, and a map's RSS grows with every page touched; a
positional read returns short (one-line error for that tensor) and grows by one tensor.
The legacy non-zip format cannot be read in pieces and is loaded into memory; a zip whose
tensors torch cannot build on the meta device (quantized ones) falls back to `mmap=True`,
with the file's size and mtime checked before each load.

Views are bounded by the bytes stored: a stride-0 or overlapping view (a 1.6 KB file can
hold `torch.ones(1).expand(20000, 20000)`, 1.6 GB once materialised) is listed, not loaded.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wstui.checkpoint.base import (
    CheckpointError,
    SharedFile,
    TensorRef,
    check_unchanged,
    fit_float,
    open_regular,
    open_shards,
    pread_into,
    safe_name,
    signature,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: torch dtype name -> the safetensors vocabulary used for every format
DTYPE_NAMES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint32": "U32",
    "uint64": "U64",
    "bool": "BOOL",
    "complex64": "C64",
    "complex128": "C128",
}
ANALYZABLE = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})

#: keys under which training code nests the weights
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `BF16` (safetensors vocabulary; unknown types keep torch's name)."""
    name = str(dtype).removeprefix("torch.")
    return DTYPE_NAMES.get(name, name.upper())


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception message (torch's run to paragraphs)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return text[:200] or type(exc).__name__


_ZIP_MAGIC = b"PK\x03\x04"
_DATA_RECORD = re.compile(r"(?:^|/)data/[^/]+$")
_OPERAND_RE = re.compile(r"Unsupported operand (\d+)")
_WO_DETAIL_RE = re.compile(r"WeightsUnpickler error:\s*(.+)")


def _sniff(head: bytes, size: int) -> str | None:
    """What a file that is not a PyTorch checkpoint is, from its first bytes (None: try it)."""
    if size == 0:
        return "is empty (0 bytes)"
    if head.startswith(b"GGUF"):
        return "is a GGUF file, not a PyTorch checkpoint (rename it .gguf)"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < size:
        return "is a safetensors file, not a PyTorch checkpoint (rename it .safetensors)"
    return None


def _unpickling_problem(exc: BaseException, head: bytes) -> str:
    """The one-line problem of a pickle the weights-only unpickler refused: only a global it
    wanted to import makes it an unsafe pickle; a byte it does not know is a damaged or
    foreign file."""
    text = str(exc)
    m = _GLOBAL_RE.search(text)
    if m:
        return (f"unsafe pickle refused: it wants to import {m.group(1)}; wstui loads PyTorch "
                "files with weights_only=True and never runs code from a checkpoint")
    m = _OPERAND_RE.search(text)
    if m:
        op = int(m.group(1))
        if not head.startswith(b"\x80"):
            return (f"not a PyTorch checkpoint: neither a zip archive nor a pickle "
                    f"(starts with {head[:8]!r})")
        return (f"not a readable PyTorch checkpoint (truncated or corrupt?): pickle opcode "
                f"{op} ({chr(op)!r}) is not one torch.save writes")
    m = _WO_DETAIL_RE.search(text)
    detail = m.group(1).strip() if m else _first_line(exc)
    return (f"unsafe pickle refused: it asks for more than plain tensors ({detail[:160]}); "
            "wstui loads PyTorch files with weights_only=True")


def _torch_load(path: Path, head: bytes, **kwargs: Any) -> Any:
    """`torch.load` with weights only; every failure becomes a one-line CheckpointError."""
    import torch

    try:
        with warnings.catch_warnings():  # torch warns on TorchScript archives; stderr stays clean
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(path, _unpickling_problem(exc, head)) from exc
    except PermissionError as exc:
        raise CheckpointError(path, "permission denied (cannot read the file)") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(path, "is a directory where a weight file is expected") from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, … on bad bytes
        text = str(exc)
        if "TorchScript" in text:
            raise CheckpointError(
                path, "is a TorchScript archive, not a state dict; it is unsafe to load "
                "(TorchScript runs code), save the model's state_dict instead"
            ) from exc
        if isinstance(exc, EOFError) or "unexpected EOF" in text:
            raise CheckpointError(path, "truncated: the pickle ends early") from exc
        if not head.startswith((b"\x80", _ZIP_MAGIC)):
            raise CheckpointError(
                path, "not a PyTorch checkpoint: neither a zip archive nor a pickle "
                f"(starts with {head[:8]!r})"
            ) from exc
        if "Invalid magic number" in text:
            raise CheckpointError(
                path, "a pickle, but not a PyTorch checkpoint (no torch.save magic number)"
            ) from exc
        raise CheckpointError(
            path, f"not a readable PyTorch checkpoint (truncated or corrupt?): {_first_line(exc)}"
        ) from exc


def _zip_layout(path: Path, fd: int) -> tuple[dict[int, int], bool]:
    """(data offset of each stored record -> its size, big-endian data?) of a torch zip.

    Offsets come from each record's local header, as torch's own reader computes them; a
    compressed record (torch never writes one) is left out, so its tensors are not loaded.
    """
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
                raise CheckpointError(
                    path, "a zip archive, but not a PyTorch checkpoint (no data.pkl in it)"
                )
            order = next((i for i in infos if i.filename.endswith("/byteorder")), None)
            big = order is not None and z.read(order).strip() == b"big"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise CheckpointError(
            path, f"truncated or corrupt zip archive (a PyTorch checkpoint is one): {exc}"
        ) from exc
    records: dict[int, int] = {}
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or not _DATA_RECORD.search(info.filename):
            continue
        local = os.pread(fd, 30, info.header_offset)
        if len(local) < 30 or local[:4] != _ZIP_MAGIC:
            continue
        n_name, n_extra = struct.unpack_from("<HH", local, 26)
        records[info.header_offset + 30 + n_name + n_extra] = info.file_size
    return records, big


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _holds_weights(node: dict) -> bool:
    """Tensors of at least one dimension at this level (0-d ones are counters like a step)."""
    return any(_is_tensor(v) and v.ndim > 0 for v in node.values())


def _subscript_name(path: tuple) -> str:
    """`("a", "b")` -> `a['b']`: the name of a nested tensor whose dotted name is taken."""
    return str(path[0]) + "".join(f"[{k!r}]" for k in path[1:])


def unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint, flattened to dotted names.

    `{"state_dict": …}`, `{"model": …}`, `{"module": …}` are unwrapped when the top level holds
    no weight tensors itself (a 0-d `global_step` does not count); other nested dicts of tensors
    get dotted names; non-tensors are dropped. Names are unique: where `{"a.b": x}` and
    `{"a": {"b": y}}` would both be `a.b`, the nested one is `a['b']`. The walk keeps its own
    stack (a dict nested 5000 deep is a file's choice, not a reason for RecursionError).
    """
    while isinstance(obj, dict) and not _holds_weights(obj):
        inner = next(
            (obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj[k]), None
        )
        if inner is None:
            break
        obj = inner
    found: list[tuple[tuple, torch.Tensor]] = []
    if isinstance(obj, dict):
        stack: list[tuple[tuple, Any]] = [((), iter(obj.items()))]
        while stack:
            prefix, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                continue
            key, value = item
            if _is_tensor(value):
                found.append(((*prefix, key), value))
            elif isinstance(value, dict):
                stack.append(((*prefix, key), iter(value.items())))
    dotted = [".".join(str(k) for k in path) for path, _ in found]
    counts = Counter(dotted)
    out: dict[str, torch.Tensor] = {}
    for (path, t), name in zip(found, dotted, strict=True):
        if counts[name] > 1 and len(path) > 1:
            name = _subscript_name(path)
        name = base = safe_name(name)
        n = 2
        while name in out:
            name, n = f"{base} #{n}", n + 1
        out[name] = t
    return out


def _span(t: torch.Tensor) -> int:
    """How many consecutive storage elements a strided tensor's view covers."""
    if not t.numel():
        return 0
    return 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride(), strict=True))


def _view_problem(t: torch.Tensor, stored: int) -> str | None:
    """Why a strided tensor cannot be materialised from `stored` bytes of its storage."""
    numel = t.numel()
    if not numel:
        return None
    if any(st < 0 for st in t.stride()):
        return "negative strides: listed, not analyzed"
    span = _span(t)
    need = (t.storage_offset() + span) * t.element_size()
    if need > stored:
        return (f"its view needs {need} bytes of a storage that holds {stored} "
                "(truncated or corrupt?): listed, not analyzed")
    if numel > span:
        return (f"a view that repeats {span} stored value(s) as {numel} elements (stride 0 "
                "or overlapping strides): listed, not analyzed")
    return None


@dataclass(frozen=True)
class _Slot:
    """Where a tensor's bytes lie: `offset` of its first element in the file, `span`
    elements from there, viewed with `shape` and `stride`."""

    record: int
    offset: int
    span: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int


class TorchReader:
    """One PyTorch file: its tensors' layout (zip) or its tensors (legacy, in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = open_regular(path)
        try:
            self._sig = signature(fd)
            head = os.pread(fd, 16, 0)
            problem = _sniff(head, self._sig[0])
            if problem:
                raise CheckpointError(path, problem)
            if head.startswith(_ZIP_MAGIC):
                self._records, self._big = _zip_layout(path, fd)
                obj, self.mode = self._load_zip(head)
            else:  # legacy format: cannot be mapped or read in pieces
                self._records, self._big = {}, False
                obj, self.mode = _torch_load(path, head, mmap=False, map_location="cpu"), "memory"
        finally:
            os.close(fd)
        if not isinstance(obj, dict):
            raise CheckpointError(
                path, f"holds a {type(obj).__name__}, not a state dict of tensors"
            )
        self.tensors: dict[str, torch.Tensor] | None = unwrap(obj)
        if not self.tensors:
            raise CheckpointError(path, "holds no tensors (not a weights file?)")
        self._slots: dict[str, _Slot] = {}
        self._notes: dict[str, str] = {}
        for name, t in self.tensors.items():
            note = self._plan(name, t)
            if note:
                self._notes[name] = note
        self._shared = SharedFile(path)  # workers load from threads; opened once

    def _load_zip(self, head: bytes) -> tuple[Any, str]:
        """Meta tensors that know their storage's file offset ("disk").

        torch computes those offsets from the layout its own writer uses; in a zip another
        tool rewrote they can miss the records, and then the file is loaded into memory
        (torch checks each record's size there; its map does not, and reads past a short
        record). A tensor the meta device cannot build (quantized), or a torch without
        offsets, gets the memory-mapped load ("mapped"), with a size check before each load.
        """
        try:
            obj = _torch_load(self.path, head, map_location="meta")
        except CheckpointError as exc:
            if isinstance(exc.__cause__, pickle.UnpicklingError):
                raise
            return _torch_load(self.path, head, mmap=True, map_location="cpu"), "mapped"
        offsets = [getattr(t.untyped_storage(), "_checkpoint_offset", None)
                   for t in _strided(obj)]
        if any(off is None for off in offsets):
            return _torch_load(self.path, head, mmap=True, map_location="cpu"), "mapped"
        if any(off not in self._records for off in offsets):
            return _torch_load(self.path, head, mmap=False, map_location="cpu"), "memory"
        return obj, "disk"

    def _plan(self, name: str, t: torch.Tensor) -> str | None:
        """The note of a tensor that will not be loaded; records where the others lie."""
        import torch

        dtype = dtype_name(t.dtype)
        if t.layout != torch.strided or t.is_quantized:
            return f"{t.layout} / quantized torch tensor: listed, not analyzed"
        if t.is_complex():
            return f"complex tensor ({dtype}): listed, not analyzed"
        if dtype not in ANALYZABLE:
            return f"integer/bool tensor ({dtype}): listed, not analyzed"
        storage = t.untyped_storage()
        if self.mode != "disk":
            return _view_problem(t, storage.nbytes())
        record = storage._checkpoint_offset  # type: ignore[attr-defined]
        size = self._records[record]
        if storage.nbytes() > size:
            return (f"its storage declares {storage.nbytes()} bytes, the file holds {size} "
                    "(truncated or corrupt?): listed, not analyzed")
        problem = _view_problem(t, storage.nbytes())
        if problem is None:
            self._slots[name] = _Slot(
                record, record + t.storage_offset() * t.element_size(), _span(t),
                tuple(t.shape), tuple(t.stride()), t.storage_offset(),
            )
        return problem

    def refs(self) -> list[TensorRef]:
        """TensorRefs in stored order."""
        import torch

        out: list[TensorRef] = []
        for name, t in (self.tensors or {}).items():
            note = self._notes.get(name)
            nbytes = t.numel() * t.element_size()
            if t.layout == torch.strided and not t.is_quantized:  # the bytes really stored
                nbytes = min(nbytes, _span(t) * t.element_size())
            out.append(
                TensorRef(
                    name=name, shape=tuple(t.shape), dtype=dtype_name(t.dtype),
                    nbytes=nbytes, file=self.path, reader=self,
                    analyzable=note is None, note=note,
                )
            )
        return out

    def storage_key(self, ref: TensorRef) -> tuple | None:
        """Equal for two tensors that are the same bytes (tied weights); `naming` groups by it."""
        slot = self._slots.get(ref.name)
        if slot is not None:
            return (slot.record, slot.storage_offset, slot.shape, slot.stride)
        t = (self.tensors or {}).get(ref.name)
        if t is None or self.mode == "disk" or not t.numel() or t.is_sparse or t.is_quantized:
            return None
        return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())

    def _file(self) -> int:
        return self._shared.fd()

    def _read(self, ref: TensorRef, slot: _Slot, tdtype: torch.dtype) -> torch.Tensor:
        """The tensor's bytes read from the file into a fresh buffer, viewed as stored."""
        import torch

        buf = torch.empty(slot.span, dtype=tdtype)
        if slot.span:
            fd = self._file()
            check_unchanged(self.path, fd, self._sig, ref.name)
            raw = buf.view(torch.uint8).numpy()
            pread_into(fd, memoryview(raw).cast("B"), slot.offset, self.path, ref.name)
            if self._big:
                buf.untyped_storage().byteswap(tdtype)
        return buf.as_strided(slot.shape, slot.stride)

    def load(
        self, ref: TensorRef, *, device: str, dtype: torch.dtype | None, hf_layout: bool
    ) -> torch.Tensor:
        """A fresh tensor (never aliasing the file) as `dtype` on `device`."""
        import torch

        if self.tensors is None or self._shared.closed:
            raise CheckpointError(self.path, f"tensor {ref.name}: reader is closed")
        t = self.tensors[ref.name]
        slot = self._slots.get(ref.name)
        if slot is not None:
            t = self._read(ref, slot, t.dtype)
        elif self.mode == "disk":
            raise CheckpointError(self.path, f"tensor {ref.name}: {self._notes.get(ref.name)}")
        elif self.mode == "mapped":  # do not touch a page of a file that shrank or changed
            st = os.stat(self.path)
            if (st.st_size, st.st_mtime_ns) != self._sig:
                check_unchanged(self.path, self._file(), self._sig, ref.name)
        if dtype is not None:
            fit_float(self.path, ref.name, t, dtype)
        if torch.device(device).type != "cpu":  # move the stored bytes, upcast on the device
            return t.to(device=device).to(dtype or t.dtype).contiguous()
        out = t.to(dtype=dtype or t.dtype)
        if slot is None and out.numel() and out.data_ptr() == t.data_ptr():
            out = out.clone()
        return out.contiguous()

    def close(self) -> None:
        self._shared.close()
        self.tensors = None  # drops a mapped file's storages


def _strided(obj: Any) -> list[torch.Tensor]:
    """The strided, non-quantized tensors of a loaded object (the ones read from the file)."""
    import torch

    return [
        t for t in unwrap(obj).values()
        if t.layout == torch.strided and not t.is_quantized
    ] if isinstance(obj, dict) else []


def open_files(files: list[Path]) -> tuple[list[TensorRef], list[TorchReader], dict]:
    """Open PyTorch weight files (one model, possibly sharded): refs, readers, metadata."""
    refs, readers = open_shards(files, TorchReader)
    return refs, readers, {}
