"""Pure computation on weight tensors: tensor in, `TensorResult` out.

Never imports textual, rich or wstui. The core types import without torch; `analyze`,
`compare` and `names` load the analyzer modules (and torch) on first use.
"""

from __future__ import annotations

# Bound after the submodule import, so `analyzers.compare` stays the function (a lazy wrapper
# would be replaced by the submodule the first time anything imports `analyzers.compare`).
from analyzers.compare import compare
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

