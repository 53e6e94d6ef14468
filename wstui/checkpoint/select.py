"""Choosing tensors of a checkpoint by name: the `--tensors GLOB` of every command."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from wstui.checkpoint.base import TensorRef


def select_tensors(
    tensors: Sequence[TensorRef], patterns: str | Sequence[str] | None
) -> list[TensorRef]:
    """Tensors whose stored or HF name matches one of the globs (comma-separated in a string).

    A pattern without glob characters also matches as an exact name.
    """
    if patterns is None:
        return list(tensors)
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    pats = list(patterns)
    out = []
    for ref in tensors:
        names = [ref.name] + ([ref.hf_name] if ref.hf_name else [])
        if any(fnmatch.fnmatchcase(n, p) for n in names for p in pats):
            out.append(ref)
    return out
