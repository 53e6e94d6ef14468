"""GGUF reader: header, scalar metadata and tensor infos parsed by hand; weights on demand.

Why not `gguf.GGUFReader` at open: it builds numpy views of every metadata array, so a
tokenizer with 50k-150k strings costs seconds before the first tensor is listed. Here the
header is read through a 1 MiB window and walked with `struct.unpack_from`; arrays are skipped
(string arrays by hopping over their lengths), so only the header's bytes are read.
Dequantizing stays with the `gguf` package (`gguf.quants`), which knows every ggml type.

Nothing is memory-mapped: a map's page beyond the end of a file that shrank (a download
rewritten, a disk full) kills the process with SIGBUS, where a positional read returns short
and becomes a one-line error for that tensor.
"""

from __future__ import annotations

import os
import re
import struct
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wstui.checkpoint.base import (
    CheckpointError,
    SharedFile,
    TensorRef,
    check_unchanged,
    fit_float32,
    open_regular,
    pread_into,
    signature,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
#: numeric arrays up to this length are kept in the metadata (per-layer head counts, ...)
SMALL_ARRAY = 64

#: GGUF value type -> struct format (scalars); 8 = string, 9 = array
_SCALARS = {k: struct.Struct(f) for k, f in {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d"}.items()}
_STRING, _ARRAY = 8, 9
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")

#: architectures whose q/k rows llama.cpp's converter permutes (LlamaModel.undo_permute and
#: the classes that inherit it): the "normal" rope pairs adjacent rows, HF pairs halves
PERMUTED_ARCHS = frozenset(
    {"llama", "mistral", "deci", "granite", "granitemoe", "granitehybrid", "llada",
     "nanbeige", "arcee", "smollm3", "apertus"}
)
#: architectures whose RMSNorm weights the converter stores as 1 + w (Gemma's (1 + w) norm)
NORM_PLUS_ONE_ARCHS = frozenset({"gemma", "gemma2", "gemma3"})
#: gpt2 stores Conv1D (in x out) matrices; the converter transposes them to (out x in)
_GPT2_TRANSPOSED = re.compile(r"^blk\.\d+\.(attn_qkv|attn_output|ffn_up|ffn_down)\.weight$")
_QK = re.compile(r"^blk\.(\d{1,18})\.attn_(q|k)\.(weight|bias)$")
_INT_TYPES = frozenset({"I8", "I16", "I32", "I64"})


class _Truncated(Exception):
    pass


def _ggml_types() -> tuple[Any, dict[Any, tuple[int, int]]]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGMLQuantizationType, GGML_QUANT_SIZES


@cache
def _loadable(type_id: int) -> bool:
    """Whether `gguf.quants` (or numpy, for F64) can turn this type into floats."""
    import gguf

    qt, sizes = _ggml_types()
    t = qt(type_id)
    if t.name in _INT_TYPES:
        return False
    if t.name in ("F32", "F16", "F64", "BF16"):
        return True
    _, type_size = sizes[t]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), t)
    except (NotImplementedError, ValueError, KeyError):
        return False
    return True


#: the header is read in windows of this size; only the window in use is kept
_CHUNK = 1 << 20
#: longest key or tensor name accepted (ggml's own limit is 64 bytes)
MAX_NAME = 1 << 16
#: longer string values (never seen in a real file) are skipped, not read
MAX_STRING = 1 << 20


class _Walker:
    """Cursor over a file's header, read through a window as the walk needs it; raises
    _Truncated when a read would run past the end. Every offset is checked against the file
    size before use (a length near 2^64 never reaches `unpack_from`), and memory stays at
    one window: a header that claims gigabytes of strings is hopped over, not read."""

    __slots__ = ("base", "buf", "fd", "off", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size, self.off, self.base, self.buf = fd, size, 0, 0, bytearray()

    def need(self, start: int, end: int) -> None:
        """Make sure file bytes [start, end) are in the window (bytes before start may go).
        The window is changed in place, so a caller's reference to `buf` stays good."""
        if end > self.size:
            raise _Truncated
        if self.base <= start and end <= self.base + len(self.buf):
            return
        if self.base <= start <= self.base + len(self.buf):
            del self.buf[: start - self.base]
        else:
            self.buf.clear()
        self.base = start
        want, have = min(max(end - start, _CHUNK), self.size - start), len(self.buf)
        while have < want:
            chunk = os.pread(self.fd, min(want - have, 1 << 30), start + have)
            if not chunk:  # the file shrank under us
                raise _Truncated
            self.buf += chunk
            have += len(chunk)

    def unpack(self, st: struct.Struct) -> tuple:
        self.need(self.off, self.off + st.size)
        v = st.unpack_from(self.buf, self.off - self.base)
        self.off += st.size
        return v

    def u32(self) -> int:
        return self.unpack(_U32)[0]

    def u64(self) -> int:
        return self.unpack(_U64)[0]

    def string(self, what: str = "") -> str | None:
        """A string; a key or name (`what`) longer than MAX_NAME is an error, a value longer
        than MAX_STRING is skipped (None)."""
        n = self.u64()
        start, end = self.off, self.off + n
        if n > (MAX_NAME if what else MAX_STRING):
            if end > self.size:
                raise _Truncated
            if what:
                raise ValueError(f"{what} of {n} bytes at offset {start - 8}")
            self.off = end
            return None
        self.need(start, end)
        s = bytes(self.buf[start - self.base:end - self.base]).decode("utf-8", errors="replace")
        self.off = end
        return s

    def skip_strings(self, count: int) -> None:
        """Hop over `count` length-prefixed strings without decoding them."""
        buf, off = self.buf, self.off  # `need` changes buf in place
        base, top = self.base, self.base + len(buf)
        unpack = _U64.unpack_from
        for _ in range(count):
            if off + 8 > top:  # also catches a huge length: need() checks the file size
                self.need(off, off + 8)
                base, top = self.base, self.base + len(buf)
            off += 8 + unpack(buf, off - base)[0]
        if off > self.size:
            raise _Truncated
        self.off = off

    def skip(self, nbytes: int) -> None:
        self.off += nbytes
        if self.off > self.size:
            raise _Truncated

    def value(self, vtype: int, key: str) -> Any:
        st = _SCALARS.get(vtype)
        if st is not None:
            return self.unpack(st)[0]
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array(key)
        raise ValueError(f"metadata {key!r} has unknown value type {vtype}")

    def array(self, key: str) -> Any:
        etype = self.u32()
        count = self.u64()
        st = _SCALARS.get(etype)
        if st is not None and count <= SMALL_ARRAY and etype != 7:
            return list(self.unpack(struct.Struct("<" + st.format[1] * count)) if count else ())
        self.skip_array(key, etype, count)
        return _SkippedArray(count)

    def skip_array(self, key: str, etype: int, count: int) -> None:
        """Hop over an array; arrays of arrays with an explicit stack (a file can nest them
        thousands deep, which recursion would not survive)."""
        stack: list[int] = []
        while True:
            st = _SCALARS.get(etype)
            if st is not None:
                self.skip(st.size * count)
            elif etype == _STRING:
                self.skip_strings(count)
            elif etype == _ARRAY:
                stack.append(count)
            else:
                raise ValueError(f"metadata {key!r} is an array of unknown type {etype}")
            while stack and stack[-1] == 0:
                stack.pop()
            if not stack:
                return
            stack[-1] -= 1
            etype, count = self.u32(), self.u64()


class _SkippedArray:
    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


class GGUFTensorReader:
    """Loads tensors of one GGUF file with positional reads of each tensor's own bytes."""

    def __init__(self, path: Path, infos: dict[str, tuple[int, int, tuple[int, ...]]],
                 metadata: dict[str, Any], sig: tuple[int, int] = (-1, -1)) -> None:
        self.path = path
        self._infos = infos  # name -> (absolute offset, ggml type id, ggml dims)
        self._meta = metadata
        self._sig = sig  # (size, mtime_ns) at open
        self._shared = SharedFile(path)  # workers load from threads; opened once

    def _file(self) -> int:
        return self._shared.fd()

    def close(self) -> None:
        self._shared.close()

    def release(self) -> None:
        """Drop the open file; a later load opens it again (`SharedFile.release`)."""
        self._shared.release()

    def raw(self, ref: TensorRef) -> np.ndarray:
        """The tensor's stored bytes, read into a fresh buffer."""
        off = self._infos[ref.name][0]
        buf = np.empty(ref.nbytes, dtype=np.uint8)
        fd = self._file()
        check_unchanged(self.path, fd, self._sig, ref.name)
        pread_into(fd, memoryview(buf), off, self.path, ref.name)
        return buf

    def array(self, ref: TensorRef, keep_f64: bool = False) -> np.ndarray:
        """The tensor as a float32 numpy array in PyTorch order, dequantized (an F64 tensor
        stays float64 with `keep_f64`)."""
        import gguf

        _, type_id, dims = self._infos[ref.name]
        qt, _ = _ggml_types()
        t = qt(type_id)
        raw = self.raw(ref)
        shape = tuple(reversed(dims))
        if t.name == "F32":
            out = raw.view(np.float32)
        elif t.name == "F64":
            out = raw.view(np.float64)
            if not keep_f64:
                fit_float32(self.path, ref.name, out)
                out = out.astype(np.float32)
        elif t.name == "F16":
            out = raw.view(np.float16).astype(np.float32)
        else:
            rows = 1
            for d in dims[1:]:
                rows *= d
            out = gguf.quants.dequantize(raw.reshape(rows, -1), t)
        return out.reshape(shape)

    def float32_array(self, ref: TensorRef) -> np.ndarray:
        """The tensor dequantized, as a float32 numpy array (no torch): what a CPU scan reads."""
        try:
            arr = self.array(ref)
        except (ValueError, OSError) as e:
            raise CheckpointError(self.path, f"tensor {ref.name}: {e}") from e
        return np.ascontiguousarray(arr, dtype=np.float32)

    def load(self, ref: TensorRef, *, device: str = "cpu", dtype: torch.dtype | None = None,
             hf_layout: bool = False) -> torch.Tensor:
        import torch

        try:
            arr = self.array(ref, keep_f64=dtype == torch.float64)
        except (ValueError, OSError) as e:
            raise CheckpointError(self.path, f"tensor {ref.name}: {e}") from e
        if hf_layout:
            arr = to_hf_layout(ref.name, arr, self._meta)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.to(device=device, dtype=dtype or torch.float32)


def _head_count(meta: dict[str, Any], arch: str, key: str, block: int) -> int | None:
    v = meta.get(f"{arch}.attention.{key}")
    if isinstance(v, list):
        v = v[block] if block < len(v) else None
    # a hostile file can put a string, a float or a bool here: only a positive int counts
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def to_hf_layout(name: str, arr: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Undo what llama.cpp's converter did to a tensor so it matches the HF checkpoint.

    llama family: q/k rows back from the interleaved rope order; gemma: norm weights minus
    the 1 the converter added; gpt2: Conv1D matrices back to (in x out).
    """
    from wstui.checkpoint.gguf_write import unpermute_qk

    arch = str(meta.get("general.architecture", ""))
    if arch in PERMUTED_ARCHS and (m := _QK.match(name)):
        block = int(m.group(1))
        n_head = _head_count(meta, arch, "head_count", block)
        if m.group(2) == "k":
            n_head = _head_count(meta, arch, "head_count_kv", block) or n_head
        if n_head and arr.shape[0] % (2 * n_head) == 0:
            return unpermute_qk(arr, n_head)
    elif arch in NORM_PLUS_ONE_ARCHS and name.endswith("norm.weight"):
        return arr - 1.0
    elif arch == "gpt2" and arr.ndim == 2 and _GPT2_TRANSPOSED.match(name):
        return arr.T
    return arr


def _parse(path: Path) -> tuple[dict[str, Any], list[tuple[str, int, tuple[int, ...], int]],
                                int, tuple[int, int]]:
    """(metadata, [(name, type id, ggml dims, relative offset)], data start, (size, mtime))."""
    if path.is_dir():
        raise CheckpointError(path, "is a directory, expected a .gguf file")
    fd = open_regular(path)
    try:
        sig = signature(fd)
        size = sig[0]
        if size < _HEADER.size:
            if os.pread(fd, 4, 0) not in (MAGIC[:size], MAGIC):
                raise CheckpointError(path, "not a GGUF file (bad magic)")
            raise CheckpointError(path, f"truncated GGUF: {size} bytes, header needs 24")
        try:
            meta, infos, start = _parse_header(path, _Walker(fd, size))
        except _Truncated:
            raise CheckpointError(path, "truncated GGUF: metadata runs past the end of "
                                        f"the file ({size} bytes)") from None
        except OSError as e:
            raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    return meta, infos, start, sig


def _parse_header(path: Path, w: _Walker):
    size = w.size
    magic, version, n_tensors, n_kv = w.unpack(_HEADER)
    if magic != MAGIC:
        raise CheckpointError(path, f"not a GGUF file (bad magic {magic!r})")
    if version not in SUPPORTED_VERSIONS:
        if struct.unpack("<I", struct.pack(">I", version))[0] in SUPPORTED_VERSIONS:
            raise CheckpointError(path, "big-endian GGUF is not supported")
        raise CheckpointError(path, f"unsupported GGUF version {version} (need 2 or 3)")
    # each KV takes >= 12 bytes and each tensor info >= 24: a bigger count is a broken file
    if n_kv * 12 + n_tensors * 24 > size:
        raise CheckpointError(path, f"corrupt GGUF header: {n_tensors} tensors, {n_kv} "
                                    f"metadata entries do not fit in {size} bytes")
    meta: dict[str, Any] = {"gguf.version": version}
    arrays: dict[str, int] = {}
    for _ in range(n_kv):
        try:
            key = w.string("metadata key") or ""
            vtype = w.u32()
            val = w.value(vtype, key)
        except ValueError as e:
            raise CheckpointError(path, str(e)) from None
        if isinstance(val, _SkippedArray):
            arrays[key] = val.count
        elif val is not None:  # None: a string value too long to keep
            meta[key] = val
    meta["gguf.arrays"] = arrays  # skipped arrays and their lengths (e.g. the vocab size)
    infos = []
    for _ in range(n_tensors):
        try:
            name = w.string("tensor name") or ""
        except ValueError as e:
            raise CheckpointError(path, str(e)) from None
        n_dims = w.u32()
        if n_dims > MAX_DIMS:
            raise CheckpointError(path, f"tensor {name}: {n_dims} dims (ggml allows {MAX_DIMS})")
        dims = w.unpack(struct.Struct("<" + "Q" * n_dims)) if n_dims else ()
        if any(d >= 2**63 for d in dims):
            raise CheckpointError(path, f"tensor {name}: bad dims {list(dims)}")
        type_id = w.u32()
        rel = w.u64()
        infos.append((name, type_id, tuple(int(d) for d in dims), rel))
    align = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0:
        raise CheckpointError(path, f"bad general.alignment {align!r}")
    start = -(-w.off // align) * align
    return meta, infos, start


def _tensor_nbytes(dims: tuple[int, ...], type_id: int) -> int | None:
    qt, sizes = _ggml_types()
    try:
        block, type_size = sizes[qt(type_id)]
    except (ValueError, KeyError):
        return None
    n = 1
    for d in dims:
        n *= d
    if dims and dims[0] % block:
        raise ValueError(f"row length {dims[0]} is not a multiple of the block size {block}")
    return n // block * type_size


def _open_one(path: Path) -> tuple[list[TensorRef], GGUFTensorReader, dict[str, Any]]:
    from wstui.checkpoint.gguf_names import gguf_to_hf

    meta, infos, start, sig = _parse(path)
    size = sig[0]
    qt, _ = _ggml_types()
    arch = str(meta.get("general.architecture", "llama"))
    ends = [*sorted({rel for _, _, _, rel in infos}), size - start]
    refs: list[TensorRef] = []
    table: dict[str, tuple[int, int, tuple[int, ...]]] = {}
    for name, type_id, dims, rel in infos:
        if name in table:  # llama.cpp refuses these too: one name, two tensors' data
            raise CheckpointError(path, f"tensor {name!r} appears twice in the tensor infos")
        shape = tuple(reversed(dims))
        try:
            nbytes = _tensor_nbytes(dims, type_id)
        except ValueError as e:
            raise CheckpointError(path, f"tensor {name}: {e}") from None
        note = None
        if nbytes is None:
            # unknown type: list it, sized up to the next tensor's offset
            nxt = next((e for e in ends if e > rel), size - start)
            nbytes = max(0, nxt - rel)
            dtype, analyzable, note = f"ggml_type_{type_id}", False, (
                f"unsupported ggml type {type_id}")
        else:
            dtype = qt(type_id).name
            if start + rel + nbytes > size:
                raise CheckpointError(path, f"truncated GGUF: tensor {name} data ends at byte "
                                            f"{start + rel + nbytes}, file has {size}")
            analyzable = _loadable(type_id)
            if not analyzable:
                note = ("integer tensor" if dtype in _INT_TYPES
                        else f"gguf.quants cannot dequantize {dtype}")
        table[name] = (start + rel, type_id, dims)
        refs.append(TensorRef(name=name, shape=shape, dtype=dtype, nbytes=nbytes, file=path,
                              hf_name=gguf_to_hf(name, arch), analyzable=analyzable,
                              note=note))
    reader = GGUFTensorReader(path, table, meta, sig)
    for r in refs:
        r.reader = reader
    return refs, reader, meta


def open_files(files: list[Path]) -> tuple[list[TensorRef], list[GGUFTensorReader],
                                           dict[str, Any]]:
    """Open one GGUF or the shards of a split GGUF; reads headers only.

    Metadata: the scalar KVs of the first file (`general.architecture`,
    `{arch}.block_count`, `{arch}.attention.head_count`, ...), numeric arrays of up to 64
    items as lists, `gguf.version`, and `gguf.arrays` (key -> length of each skipped array).
    """
    refs: list[TensorRef] = []
    readers: list[GGUFTensorReader] = []
    meta: dict[str, Any] = {}
    seen: dict[str, Path] = {}
    try:
        for i, f in enumerate(files):
            r, reader, m = _open_one(Path(f))
            readers.append(reader)
            if i == 0:
                meta = m
            else:  # shards share the first file's metadata (arch, head counts) for hf_layout
                reader._meta = meta
            for ref in r:
                if ref.name in seen:
                    raise CheckpointError(
                        f, f"tensor {ref.name!r} is also in {seen[ref.name].name}"
                    )
                seen[ref.name] = Path(f)
            refs.extend(r)
    except BaseException:
        for reader in readers:
            reader.close()
        raise
    return refs, readers, meta
