"""Checkpoint readers: safetensors, PyTorch pickles, GGUF; naming and the layer tree."""

from __future__ import annotations

from pathlib import Path

from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorReader, TensorRef

__all__ = ["Checkpoint", "CheckpointError", "TensorReader", "TensorRef", "open_checkpoint"]


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a file, folder, sharded index or cached HF repo id; reads headers only."""
    from wstui.checkpoint.resolve import open_checkpoint as _open

    return _open(path)
