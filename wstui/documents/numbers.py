"""Summary numbers the documents compute (and the render layer re-uses): one median."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Any


def median(values: Iterable[Any], *, finite: bool = False) -> float | None:
    """The median of the numbers among `values` (None, bools, strings and NaN left out;
    infinities count unless `finite`); None when there is none."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
          and not math.isnan(float(v)) and (not finite or math.isfinite(float(v)))]
    return statistics.median(xs) if xs else None
