"""The tab ids: one constant set, in tab order (a tab's position is its digit key). Read by the
tab bar, the `1`-`9` bindings, `e`, the palette and the help screen; a `StrEnum`, so a tab id
is also its `TabPane` id and the `view` of its `wstui.view/1` export."""

from __future__ import annotations

from enum import StrEnum


class Tab(StrEnum):
    OVERVIEW = "overview"
    SPECTRUM = "spectrum"
    HISTOGRAM = "histogram"
    QUANTIZATION = "quantization"
    TABLE = "table"
    DEPTH = "depth"
    FINDINGS = "findings"
    DIFF = "diff"
    SENSITIVITY = "sensitivity"
