"""Pure computation on weight tensors: tensor in, `TensorResult` out.

Never imports textual, rich or wstui. The core types import without torch; `analyze`,
`compare` and `names` load the analyzer modules (and torch) on first use.
"""

from __future__ import annotations

from typing import Any

from analyzers.core import (
    DEFAULT_THRESHOLDS,
    Finding,
    Severity,
    TensorResult,
    analyze,
    default_methods,
    iter_findings,
    names,
    pick_device,
    top_issue_key,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Finding",
    "Severity",
    "TensorResult",
    "analyze",
    "compare",
    "default_methods",
    "iter_findings",
    "names",
    "pick_device",
    "top_issue_key",
]


def compare(a: Any, b: Any, **kwargs: Any) -> TensorResult:
    """Compare two tensors of one name (diff mode); see `analyzers.compare.compare`."""
    from analyzers.compare import compare as _compare

    return _compare(a, b, **kwargs)
