"""Strict JSON: non-finite floats become null, numpy/torch values become plain Python.

Every JSON file wstui writes goes through `dump`, so that a strict parser (one that rejects
NaN and Infinity) reads all of them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from analyzers.core import to_plain


def strict(obj: Any) -> Any:
    """`obj` as plain JSON values with every non-finite float replaced by None."""
    return _finite_only(to_plain(obj))


def _finite_only(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_only(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_only(v) for v in obj]
    return obj


def dumps(obj: Any, *, indent: int | None = None) -> str:
    return json.dumps(strict(obj), indent=indent, allow_nan=False)


def dump(obj: Any, path: str | Path, *, indent: int | None = 1) -> Path:
    """Write through `wstui.outfile` (atomic for a regular file, in place for a FIFO or a
    device, `-` for stdout). The text is built first, so a value that cannot be serialized
    never truncates the target. Raises `outfile.OutputError` (one line) on a failed write."""
    from wstui import outfile

    return outfile.write_text(path, dumps(obj, indent=indent) + "\n")


def loads_strict(text: str) -> Any:
    """Parse JSON, rejecting NaN/Infinity (what tests use to check our output)."""

    def reject(token: str) -> Any:
        raise ValueError(f"non-strict JSON constant {token}")

    return json.loads(text, parse_constant=reject)
