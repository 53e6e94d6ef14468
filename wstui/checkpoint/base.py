"""The types every reader produces: `TensorRef`, `Checkpoint`, `CheckpointError`.

Torch-free at import: `wstui ls` and the app's first paint list tensors without torch.
"""

from __future__ import annotations

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
