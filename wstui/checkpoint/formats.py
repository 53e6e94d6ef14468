"""The weight formats wstui reads, in one table: extensions, the reader module, the index
file of a sharded checkpoint, and the order in which a folder's files are preferred.

A new format is one row here and one reader module with `open_files(files) -> (refs,
readers, metadata)`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str  # the `Checkpoint.format` value
    extensions: tuple[str, ...]  # lower case, with the dot
    module: str  # the reader: wstui.checkpoint.<module>.open_files
    #: a sharded checkpoint's index: (preferred file name, glob)
    index: tuple[str, str] | None = None
    #: in a folder, files whose name starts with this are used only when nothing else is
    #: there (Mistral repos ship the same weights twice: HF-named shards and `consolidated.*`)
    fallback_prefix: str | None = None


#: in a folder's order of preference: safetensors, PyTorch pickles, GGUF
FORMATS = (
    Format("safetensors", (".safetensors",), "safetensors",
           index=("model.safetensors.index.json", "*.safetensors.index.json"),
           fallback_prefix="consolidated"),
    Format("torch", (".bin", ".pt", ".pth"), "torch_bin",
           index=("pytorch_model.bin.index.json", "*.bin.index.json")),
    Format("gguf", (".gguf",), "gguf"),
)

BY_NAME = {f.name: f for f in FORMATS}

#: file extension -> format name
EXTENSIONS = {ext: f.name for f in FORMATS for ext in f.extensions}

#: files of a training run that share the extensions but hold no weights
NOT_WEIGHTS = frozenset(
    {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"}
)


def describe_extensions() -> str:
    """`.safetensors, .bin, .pt, .pth, .gguf` for messages."""
    return ", ".join(EXTENSIONS)
