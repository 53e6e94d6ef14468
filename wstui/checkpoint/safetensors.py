"""safetensors reader: parses the header itself, so opening reads a few kilobytes and no torch.

The format is an 8-byte little-endian header length, a JSON header mapping tensor names to
`{dtype, shape, data_offsets}` (offsets relative to the data section), then the raw bytes.
Every inconsistency a damaged file can have is checked at open and raised as a one-line
`CheckpointError`.

Loading reads exactly one tensor's bytes with a positional read (`os.preadv`) into a fresh
torch buffer, then upcasts. Measured against a memory map (numpy memmap + `torch.frombuffer`)
and `safetensors.safe_open(framework="pt")`, it was as fast or faster and its peak RSS grows
by the largest tensor only, where a map's grows by every page touched (the whole model over a
scan). A loaded tensor never aliases the file, so in-place edits are safe.
"""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wstui.checkpoint.base import (
    FLOAT_DTYPES,
    CheckpointError,
    SharedFile,
    TensorRef,
    check_unchanged,
    fit_float,
    fit_float32,
    open_regular,
    open_shards,
    parse_json,
    pread_into,
    safe_name,
    signature,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: safetensors dtype -> (bytes per element, torch dtype attribute); None itemsize = sub-byte
DTYPES: dict[str, tuple[int | None, str | None]] = {
    "BOOL": (1, "bool"),
    "U8": (1, "uint8"),
    "I8": (1, "int8"),
    "I16": (2, "int16"),
    "U16": (2, "uint16"),
    "I32": (4, "int32"),
    "U32": (4, "uint32"),
    "I64": (8, "int64"),
    "U64": (8, "uint64"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "F32": (4, "float32"),
    "F64": (8, "float64"),
    "F8_E4M3": (1, "float8_e4m3fn"),
    "F8_E5M2": (1, "float8_e5m2"),
    "F8_E8M0": (1, "float8_e8m0fnu"),
    "C64": (8, "complex64"),
    "F4": (None, None),
    "F6_E2M3": (None, None),
    "F6_E3M2": (None, None),
}

#: the safetensors library refuses headers above 100 MB; so do we (a garbage length is huge)
MAX_HEADER = 100_000_000


def _note_for(dtype: str) -> str | None:
    """Why a tensor of this storage dtype is listed but not analyzed (None: analyzable)."""
    if dtype in FLOAT_DTYPES and dtype in DTYPES:
        return None
    if dtype in ("BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"):
        return f"integer/bool tensor ({dtype}): listed, not analyzed"
    if dtype in ("C64", "C128"):
        return f"complex tensor ({dtype}): listed, not analyzed"
    if dtype == "F8_E8M0":
        return "F8_E8M0 holds exponent-only scales: listed, not analyzed"
    if dtype in DTYPES:
        return f"{dtype} is not supported by the analyzers"
    return f"unknown safetensors dtype {dtype}"


def read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """(header dict, start of the data section, data section size); validates the framing."""
    header, start, data_size, _ = _read_header(path)
    return header, start, data_size


def _read_header(path: Path) -> tuple[dict[str, Any], int, int, tuple[int, int]]:
    """`read_header` plus the file's (size, mtime_ns) when it was read."""
    if path.is_dir():
        raise CheckpointError(path, "is a directory, expected a .safetensors file")
    fd = open_regular(path)
    try:
        sig = signature(fd)
        size = sig[0]
        head = os.pread(fd, 8, 0)
        if len(head) < 8:
            raise CheckpointError(
                path, f"too short for a safetensors file ({size} bytes; truncated?)"
            )
        (hlen,) = struct.unpack("<Q", head)
        if hlen > size - 8:
            raise CheckpointError(
                path,
                f"header length {hlen} is larger than the file ({size} bytes); "
                "truncated or not a safetensors file",
            )
        if hlen > MAX_HEADER:
            raise CheckpointError(path, f"header length {hlen} is implausibly large")
        raw = os.pread(fd, hlen, 8)
        if len(raw) < hlen:
            raise CheckpointError(path, "header ends early (changed while read?)")
    except OSError as exc:
        raise CheckpointError(path, f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    header = parse_json(path, raw, "header")
    if not isinstance(header, dict):
        raise CheckpointError(path, "header is not a JSON object")
    return header, 8 + hlen, size - 8 - hlen, sig


def _parse_entry(path: Path, name: str, entry: Any, data_size: int) -> tuple[str, tuple, int, int]:
    """(dtype, shape, begin, end) of one header entry, checked against the data section."""
    if not isinstance(entry, dict):
        raise CheckpointError(path, f"header entry for tensor {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise CheckpointError(path, f"tensor {name!r} has no dtype")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63 for s in shape
    ):
        raise CheckpointError(path, f"tensor {name!r} has a bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CheckpointError(path, f"tensor {name!r} has bad data_offsets {offsets!r}")
    begin, end = offsets
    if end > data_size:
        raise CheckpointError(
            path,
            f"tensor {name!r} data_offsets [{begin}, {end}] lie outside the data section "
            f"({data_size} bytes; truncated file?)",
        )
    numel = 1
    for s in shape:
        numel *= s
    itemsize = DTYPES.get(dtype, (None, None))[0]
    if itemsize is not None and numel * itemsize != end - begin:
        raise CheckpointError(
            path,
            f"tensor {name!r}: dtype {dtype} x shape {shape} needs {numel * itemsize} bytes "
            f"but data_offsets span {end - begin}",
        )
    return dtype, tuple(shape), begin, end


class SafetensorsReader:
    """One .safetensors file: its parsed header and, once a tensor is loaded, a memory map."""

    def __init__(self, path: Path) -> None:
        self.path = path
        header, self.data_start, self.data_size, self._sig = _read_header(path)
        meta = header.pop("__metadata__", None)
        # the format says str -> str (the safetensors library refuses anything else); keep
        # only that, so no nested or non-UTF-8 value travels further
        self.metadata: dict[str, Any] = {
            safe_name(k): safe_name(v) for k, v in meta.items() if isinstance(v, str)
        } if isinstance(meta, dict) else {}
        self.entries: dict[str, tuple[str, tuple, int, int]] = {}
        for raw_name, entry in header.items():
            name = safe_name(raw_name)
            if name in self.entries:  # only after escaping: JSON keys are unique otherwise
                raise CheckpointError(path, f"two tensors are named {name!r}")
            self.entries[name] = _parse_entry(path, name, entry, self.data_size)
        spans = sorted(
            ((b, e, n) for n, (_, _, b, e) in self.entries.items() if e > b),
        )
        for (_, e0, n0), (b1, _, n1) in itertools.pairwise(spans):
            if b1 < e0:
                raise CheckpointError(path, f"tensors {n0!r} and {n1!r} overlap in the data")
        self._shared = SharedFile(path)  # workers load from threads; opened once

    def refs(self) -> list[TensorRef]:
        """TensorRefs in file-offset order (the order the writer laid them out)."""
        out = []
        for name, (dtype, shape, begin, end) in sorted(
            self.entries.items(), key=lambda kv: (kv[1][2], kv[0])
        ):
            note = _note_for(dtype)
            out.append(
                TensorRef(
                    name=name, shape=shape, dtype=dtype, nbytes=end - begin, file=self.path,
                    reader=self, analyzable=note is None, note=note,
                )
            )
        return out

    def _file(self) -> int:
        return self._shared.fd()

    def _read_into(self, buf: memoryview, offset: int, name: str) -> None:
        """Fill `buf` from the file at `offset`, if the file is still the one opened."""
        fd = self._file()
        check_unchanged(self.path, fd, self._sig, name)
        pread_into(fd, buf, offset, self.path, name)

    def stored(self, ref: TensorRef) -> torch.Tensor:
        """The tensor in its storage dtype, read from disk into a fresh buffer."""
        import torch

        dtype, shape, begin, end = self.entries[ref.name]
        tdtype = getattr(torch, DTYPES[dtype][1] or "", None)
        if tdtype is None:
            raise CheckpointError(self.path, f"tensor {ref.name}: dtype {dtype} has no torch type")
        out = torch.empty(shape, dtype=tdtype)
        if end > begin:
            raw = out.view(-1).view(torch.uint8).numpy()
            self._read_into(memoryview(raw).cast("B"), self.data_start + begin, ref.name)
        return out

    def float32_array(self, ref: TensorRef) -> Any:
        """The tensor as a float32 numpy array, without torch (what a CPU scan reads), or None
        for a dtype numpy cannot widen by itself (FP8: `load` does it). BF16 is the top half
        of a float32: its bits shifted left by 16 (0.17 ns a value, torch's cast 1.7)."""
        import numpy as np

        dtype, shape, begin, end = self.entries[ref.name]
        kinds = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}
        if dtype not in kinds:
            return None
        out = np.empty(shape, dtype=kinds[dtype])
        if end > begin:
            raw = out.reshape(-1).view(np.uint8)
            self._read_into(memoryview(raw).cast("B"), self.data_start + begin, ref.name)
        if dtype == "BF16":
            return np.left_shift(out, 16, dtype=np.uint32).view(np.float32)
        if dtype == "F64":
            fit_float32(self.path, ref.name, out)
        return out if dtype == "F32" else out.astype(np.float32)

    def load(
        self, ref: TensorRef, *, device: str, dtype: torch.dtype | None, hf_layout: bool
    ) -> torch.Tensor:
        """The tensor as `dtype` on `device` (a fresh tensor; never aliases the file).

        Off the CPU the stored bytes travel first and are upcast on the device: a BF16 tensor
        crosses the bus at half the size of its float32 copy.
        """
        t = self.stored(ref)
        if dtype is not None:
            fit_float(self.path, ref.name, t, dtype)
        return t.to(device=device).to(dtype or t.dtype)

    def close(self) -> None:
        self._shared.close()


def open_files(files: list[Path]) -> tuple[list[TensorRef], list[SafetensorsReader], dict]:
    """Open .safetensors files (one model, possibly sharded): refs, readers, metadata."""
    refs, readers = open_shards(files, SafetensorsReader)
    metadata: dict[str, Any] = {}
    for reader in readers:
        for k, v in reader.metadata.items():
            metadata.setdefault(k, v)
    return refs, readers, {"safetensors_metadata": metadata} if metadata else {}
