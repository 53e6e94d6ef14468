"""PyTorch pickle reader (`.bin`, `.pt`, `.pth`): weights-only, memory-mapped where possible.

`torch.load(weights_only=True)` never runs code from the file: a pickle that asks for a global
outside the allow-list is refused, and we say which global it wanted. Zip-format files are
memory-mapped (`mmap=True`), so listing reads the pickle but not the tensor bytes; the legacy
non-zip format cannot be mapped and is read into memory.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wstui.checkpoint.base import CheckpointError, TensorRef, open_shards

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


def _torch_load(path: Path) -> Any:
    """`torch.load` with weights only; every failure becomes a one-line CheckpointError."""
    import torch

    try:
        with warnings.catch_warnings():  # torch warns on TorchScript archives; stderr stays clean
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, weights_only=True, mmap=True, map_location="cpu")
            except RuntimeError as exc:
                if "mmap can only be used" not in str(exc):
                    raise
                # legacy (non-zip) format: cannot be mapped, read it into memory
                return torch.load(path, weights_only=True, mmap=False, map_location="cpu")
    except pickle.UnpicklingError as exc:
        m = _GLOBAL_RE.search(str(exc))
        wanted = f"wants to import {m.group(1)}" if m else "asks for more than plain tensors"
        raise CheckpointError(
            path,
            f"unsafe pickle refused: it {wanted}; wstui loads PyTorch files with "
            "weights_only=True and never runs code from a checkpoint",
        ) from exc
    except PermissionError as exc:
        raise CheckpointError(path, "permission denied (cannot read the file)") from exc
    except IsADirectoryError as exc:
        raise CheckpointError(path, "is a directory where a weight file is expected") from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, … on bad bytes
        if "TorchScript" in str(exc):
            raise CheckpointError(
                path, "is a TorchScript archive, not a state dict; it is unsafe to load "
                "(TorchScript runs code), save the model's state_dict instead"
            ) from exc
        raise CheckpointError(
            path, f"not a readable PyTorch checkpoint (truncated or corrupt?): {_first_line(exc)}"
        ) from exc


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _holds_weights(node: dict) -> bool:
    """Tensors of at least one dimension at this level (0-d ones are counters like a step)."""
    return any(_is_tensor(v) and v.ndim > 0 for v in node.values())


def unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint, flattened to dotted names.

    `{"state_dict": …}`, `{"model": …}`, `{"module": …}` are unwrapped when the top level holds
    no weight tensors itself (a 0-d `global_step` does not count); other nested dicts of tensors
    get dotted names; non-tensors are dropped.
    """
    while isinstance(obj, dict) and not _holds_weights(obj):
        inner = next(
            (obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj[k]), None
        )
        if inner is None:
            break
        obj = inner
    out: dict[str, torch.Tensor] = {}

    def walk(prefix: str, node: Any) -> None:
        if _is_tensor(node):
            out[prefix] = node
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)

    if isinstance(obj, dict):
        walk("", obj)
    return out


class TorchReader:
    """One PyTorch file: its (memory-mapped) state dict."""

    def __init__(self, path: Path) -> None:
        self.path = path
        obj = _torch_load(path)
        if not isinstance(obj, dict):
            raise CheckpointError(
                path, f"holds a {type(obj).__name__}, not a state dict of tensors"
            )
        self.tensors: dict[str, torch.Tensor] | None = unwrap(obj)
        if not self.tensors:
            raise CheckpointError(path, "holds no tensors (not a weights file?)")

    def refs(self) -> list[TensorRef]:
        """TensorRefs in stored order."""
        import torch

        out: list[TensorRef] = []
        for name, t in (self.tensors or {}).items():
            dtype = dtype_name(t.dtype)
            note = None
            if t.layout != torch.strided or t.is_quantized:
                note = f"{t.layout} / quantized torch tensor: listed, not analyzed"
            elif dtype not in ANALYZABLE:
                note = f"integer/bool tensor ({dtype}): listed, not analyzed"
            out.append(
                TensorRef(
                    name=name, shape=tuple(t.shape), dtype=dtype,
                    nbytes=t.numel() * t.element_size(), file=self.path, reader=self,
                    analyzable=note is None, note=note,
                )
            )
        return out

    def storage_key(self, ref: TensorRef) -> tuple | None:
        """Equal for two tensors that are the same bytes (tied weights); `naming` groups by it."""
        t = (self.tensors or {}).get(ref.name)
        if t is None or not t.numel() or t.is_sparse or t.is_quantized:
            return None
        return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())

    def load(
        self, ref: TensorRef, *, device: str, dtype: torch.dtype | None, hf_layout: bool
    ) -> torch.Tensor:
        """A fresh tensor (never aliasing the map) as `dtype` on `device`."""
        import torch

        if self.tensors is None:
            raise CheckpointError(self.path, f"tensor {ref.name}: reader is closed")
        t = self.tensors[ref.name]
        if torch.device(device).type != "cpu":  # move the stored bytes, upcast on the device
            return t.to(device=device).to(dtype or t.dtype)
        out = t.to(dtype=dtype or t.dtype)
        if out.device.type == "cpu" and out.numel() and out.data_ptr() == t.data_ptr():
            out = out.clone()
        return out

    def close(self) -> None:
        self.tensors = None  # drops the mapped storages


def open_files(files: list[Path]) -> tuple[list[TensorRef], list[TorchReader], dict]:
    """Open PyTorch weight files (one model, possibly sharded): refs, readers, metadata."""
    refs, readers = open_shards(files, TorchReader)
    return refs, readers, {}
