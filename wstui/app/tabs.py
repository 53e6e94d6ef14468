"""The tab ids: one constant set, in tab order (a tab's position is its digit key: 1 to 9,
then 0 for the tenth, as a keyboard's row reads). Read by the tab bar, the digit bindings,
`e`, the palette and the help screen; a `StrEnum`, so a tab id is also its `TabPane` id and
the `view` of its `wstui.view/1` export."""

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
    SERIES = "series"


def digit(position: int) -> str:
    """The key of the tab at `position` (0-based): "1" … "9", then "0"."""
    if not 0 <= position < 10:
        raise ValueError(f"a tab needs a digit key: position {position} has none")
    return str((position + 1) % 10)
