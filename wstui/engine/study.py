"""The quantization study (`wstui quant`, `Scope.quant_study`): per layer SQNR and both alphas
under fake quantization, the summary table per setting, and a mixed-precision plan.

The per-matrix work is the `quant_sweep` analyzer, run by the scan engine (worker pool,
progress, cache); this module only gathers its results into the `wstui.quant/1` document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from analyzers.quant_study import plan, settings_of, summarize
from wstui._version import __version__
from wstui.checkpoint.base import Checkpoint, TensorRef

SCHEMA = "wstui.quant/1"


def study_tensors(checkpoint: Checkpoint, tensors: Sequence[TensorRef] | None = None) -> list:
    """The matrices the study covers: analyzable 2-D (or more) tensors with two rows or more."""
    refs = tensors if tensors is not None else checkpoint.tensors
    return [
        r for r in refs
        if r.analyzable and r.tied_to is None and len(r.shape) >= 2
        and r.shape[0] >= 2 and r.numel // max(r.shape[0], 1) >= 2
    ]


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
    from wstui.scan import ScanEngine

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
    engine, spec = study_engine(checkpoint, **settings)
    if engine_hook is not None:
        engine_hook(engine)
    return study_document(checkpoint, engine.run(on_progress=on_progress), spec)


def study_document(checkpoint: Checkpoint, report: Any, spec: Mapping[str, Any]) -> dict:
    """`wstui.quant/1` from a finished (or cancelled) sweep's ScanReport."""
    doc = build_document(checkpoint, report.entries, spec)
    doc["device"] = report.device
    doc["elapsed_s"] = report.elapsed_s
    doc["complete"] = report.complete
    return doc


def layer_record(ref: TensorRef, metrics: Mapping[str, Any]) -> dict[str, Any]:
    cols = ref.numel // ref.shape[0] if ref.shape and ref.shape[0] else None
    return {
        "name": ref.display_name,
        "kind": ref.kind,
        "block": ref.block,
        "shape": list(ref.shape),
        "numel": ref.numel,
        "cols": cols,
        "alpha": metrics.get("alpha"),
        "xmin": metrics.get("xmin"),
        "no_fit_reason": metrics.get("no_fit_reason"),
        "results": list(metrics.get("results", [])),
    }


def build_document(
    checkpoint: Checkpoint, entries: Sequence[Any], spec: Mapping[str, Any]
) -> dict[str, Any]:
    """`wstui.quant/1` from report entries (each with `.ref` and `.result`)."""
    layers, errors = [], []
    for e in entries:
        m = e.result.metrics.get("quant_sweep")
        if m:
            layers.append(layer_record(e.ref, m))
        else:
            why = e.result.errors.get("quant_sweep") or e.result.skipped.get("quant_sweep")
            if why:
                errors.append({"name": e.ref.display_name, "reason": why})
    settings = settings_of(layers)
    pairs = list(dict.fromkeys((g, s) for _, g, s in settings))
    return {
        "schema": SCHEMA,
        "wstui_version": __version__,
        "checkpoint": checkpoint.summary(),
        "dequantized": checkpoint.format == "gguf",
        "settings": [{"bits": b, "granularity": g, "scheme": s} for b, g, s in settings],
        "requested": dict(spec),
        "layers": layers,
        "skipped": errors,
        "summary": summarize(layers),
        "plan": [plan(layers, granularity=g, scheme=s) for g, s in pairs],
    }


def csv_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per layer and setting."""
    rows = []
    for layer in doc["layers"]:
        for r in layer["results"]:
            rows.append({
                "name": layer["name"], "kind": layer["kind"], "block": layer["block"],
                "alpha_unquantized": layer["alpha"], "xmin": layer["xmin"],
                **{k: r.get(k) for k in ("bits", "granularity", "scheme", "sqnr_db", "cosine",
                                         "alpha", "alpha_fixed_xmin", "no_fit_reason")},
            })
    return rows
