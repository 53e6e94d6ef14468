"""The analysis engine: one worker pool, and the plans that run on it.

    pool.py        the scheduler: tasks with cost, slots and priority; cancel; progress
    progress.py    `Progress`, the one progress type
    placement.py   cores, threads, device, out-of-memory fallback, loading a tensor
    cache.py       the SQLite result cache
    jobs.py        the start/run/wait/cancel lifecycle of a background job
    scan.py        the scan plan (per-tensor analyzers): `ScanEngine`, `ScanReport`
    matching.py    diff mode's pairing of two checkpoints' tensors
    diff.py        the diff plan (the `compare` pair analyzer): `DiffEngine`, `DiffReport`
    study.py       the quantization study plan: `run_study`
    model.py       model-scope tasks (a whole model on one worker)
    sensitivity.py the sensitivity study as a model-scope task: `run_sensitivity`

Never imports rich, textual or `wstui.render`; the documents the plans' reports turn into live
in `wstui.documents`. Names are exported lazily, so `import wstui.engine` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ScanEngine": "scan", "ScanReport": "scan", "select_tensors": "scan",
    "validate_methods": "scan", "Progress": "progress", "ScanProgress": "progress",
    "describe_eta": "progress", "DiffEngine": "diff", "DiffReport": "diff",
    "match_tensors": "matching", "run_study": "study", "run_sensitivity": "sensitivity",
    "cpu_count": "placement",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'wstui.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"wstui.engine.{mod}"), name)
