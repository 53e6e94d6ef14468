"""The quantization study's document: `wstui.quant/1` (DESIGN §8) from the sweep's results,
and its CSV rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from analyzers.quant_study import plan, settings_of, summarize
from wstui._version import __version__
from wstui.checkpoint.base import Checkpoint, TensorRef

SCHEMA = "wstui.quant/1"


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
