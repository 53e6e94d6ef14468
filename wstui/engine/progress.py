"""The one progress type of the engine: what every job (scan, diff, study, model task) reports."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Where a job stands; `done`/`total` count tasks (a tensor's cheap or heavy analysis, a
    pair's pass, a model-scope step list)."""

    done: int
    total: int
    current: str | None
    # "cache" | "cheap" | "heavy" | "request" | "model" | "done" | "cancelled"
    phase: str
    elapsed_s: float
    eta_s: float | None
    cached: int = 0  # units (tensors, pairs) whose results all came from the cache
    n_tensors: int = 0  # units in the job (tensors of a scan, pairs of a diff)


#: the name the faces know it by
ScanProgress = Progress


def describe_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"
