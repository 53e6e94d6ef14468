"""The quantization study (`wstui quant`, `Scope.quant_study`) as a plan on the pool: the
`quant_sweep` analyzer over every matrix, through the scan plan (worker pool, progress,
cache). `wstui.documents.quant` turns its results into the `wstui.quant/1` document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from wstui.checkpoint.base import Checkpoint, TensorRef


def study_tensors(checkpoint: Checkpoint, tensors: Sequence[TensorRef] | None = None) -> list:
    """The matrices the study covers: analyzable 2-D (or more) tensors with two rows or more."""
    refs = tensors if tensors is not None else checkpoint.tensors
    return [r for r in refs if r.analyzable and r.tied_to is None and r.is_matrix]


def study_engine(
    checkpoint: Checkpoint,
    *,
    bits: Sequence[int] = (8, 6, 5, 4, 3, 2),
    granularity: Sequence[str] = ("tensor", "channel", "group128"),
    scheme: Sequence[str] = ("sym",),
    tensors: Sequence[TensorRef] | None = None,
    device: str = "auto",
    workers: int | None = None,
    use_cache: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """A scan engine (not started) that sweeps every matrix, and the sweep's spec.
    Raises ValueError on a bad setting, before any work starts."""
    from analyzers.quant_sweep import sweep_settings
    from wstui.engine.scan import ScanEngine

    spec = {"bits": list(bits), "granularity": list(granularity), "scheme": list(scheme)}
    sweep_settings(spec)
    engine = ScanEngine(
        checkpoint, methods=["quant_sweep"], device=device, workers=workers,
        use_cache=use_cache, options={"quant_sweep": spec},
        tensors=study_tensors(checkpoint, tensors),
    )
    return engine, spec


def run_study(
    checkpoint: Checkpoint,
    *,
    on_progress: Callable[[Any], None] | None = None,
    engine_hook: Callable[[Any], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Run the sweep over every matrix (blocking) and return the `wstui.quant/1` document.
    `settings`: the keyword arguments of `study_engine`."""
    from wstui.documents.quant import study_document

    engine, spec = study_engine(checkpoint, **settings)
    if engine_hook is not None:
        engine_hook(engine)
    return study_document(checkpoint, engine.run(on_progress=on_progress), spec)
