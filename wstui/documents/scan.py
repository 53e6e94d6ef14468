"""The scan document: a ScanReport as the `wstui.scan/1` JSON of DESIGN §8, flat records, CSV.

Plot arrays (`TensorResult.data`) stay out of the scan JSON: they are for the app's plots and
the view export, and would make the file a hundred times larger.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from analyzers.core import TensorResult, to_plain
from wstui import jsonio
from wstui._version import __version__
from wstui.checkpoint.base import TensorRef

#: a `wstui.engine.scan.ScanReport` (documents read reports, they never import the engine)
ScanReport = Any

SCAN_SCHEMA = "wstui.scan/1"
BASE_COLUMNS = ("name", "hf_name", "kind", "block", "shape", "dtype", "worst_severity",
                "findings")
_SCHEME_LABEL_KEYS = ("bits", "granularity", "scheme")


def metrics_json(result: TensorResult) -> dict[str, Any]:
    """The metrics of one tensor as plain values; an infinite condition number is flagged
    with `rank_deficient` (the strict writer turns the infinity itself into null)."""
    metrics = to_plain(result.metrics)
    spectral = metrics.get("spectral")
    if isinstance(spectral, dict) and "condition_number" in spectral:
        cn = spectral["condition_number"]
        deficient = cn is None or (isinstance(cn, float) and not math.isfinite(cn))
        spectral["rank_deficient"] = bool(spectral.get("rank_deficient", False) or deficient)
    return metrics


def tensor_json(ref: TensorRef, result: TensorResult) -> dict[str, Any]:
    return {
        "name": ref.name,
        "hf_name": ref.hf_name,
        "shape": [int(s) for s in ref.shape],
        "dtype": ref.dtype,
        "kind": ref.kind,
        "block": ref.block,
        "metrics": metrics_json(result),
        "findings": [f.to_dict() for f in result.findings],
        "errors": [{"analyzer": a, "message": m} for a, m in result.errors.items()],
        "skipped": dict(result.skipped),
    }


def scan_json(report: ScanReport) -> dict[str, Any]:
    """The `wstui.scan/1` document (already strict: non-finite numbers are None)."""
    doc = {
        "schema": SCAN_SCHEMA,
        "wstui_version": __version__,
        "checkpoint": report.checkpoint,
        "methods": list(report.methods),
        "device": report.device,
        "elapsed_s": report.elapsed_s,
        "complete": report.complete,
        "tensors": [tensor_json(e.ref, e.result) for e in report.entries],
        "top_issues": [i.to_dict() for i in report.top_issues],
    }
    return jsonio.strict(doc)


def write_json(report: ScanReport, path: str | Path) -> Path:
    """The document, written atomically (`-`: stdout)."""
    return jsonio.dump(scan_json(report), path)


def _scheme_label(item: Mapping[str, Any]) -> str:
    bits = item.get("bits")
    return ".".join(
        [f"{bits}bit"] + [str(item[k]) for k in ("granularity", "scheme") if item.get(k)]
    )


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}", v)
    elif isinstance(value, (list, tuple)):
        # Quantization settings: one column per metric and setting, e.g.
        # quantization.sqnr_db.8bit.tensor.sym. Other lists (indices, arrays) stay out.
        if value and all(isinstance(v, Mapping) and "bits" in v for v in value):
            parent = prefix.rsplit(".", 1)[0]
            for item in value:
                label = _scheme_label(item)
                for k, v in item.items():
                    if k not in _SCHEME_LABEL_KEYS and _is_scalar(v):
                        yield f"{parent}.{k}.{label}", v
    elif _is_scalar(value):
        yield prefix, value


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def record(ref: TensorRef, result: TensorResult) -> dict[str, Any]:
    """One flat dict for one tensor: identity columns plus `<analyzer>.<key>` scalars."""
    worst = result.worst_severity
    rec: dict[str, Any] = {
        "name": ref.name,
        "hf_name": ref.hf_name,
        "kind": ref.kind,
        "block": ref.block,
        "shape": "x".join(str(int(s)) for s in ref.shape),
        "dtype": ref.dtype,
        "worst_severity": worst.value if worst else None,
        "findings": ",".join(f.code for f in result.findings),
    }
    for analyzer, values in metrics_json(result).items():
        for key, v in _flatten(analyzer, values):
            rec[key] = v
    return rec


def records(report: ScanReport) -> list[dict[str, Any]]:
    return [record(e.ref, e.result) for e in report.entries]


def csv_columns(recs: list[dict[str, Any]], methods: list[str] | None = None) -> list[str]:
    """Identity columns first, then metric columns grouped by analyzer in scan order."""
    order = {m: i for i, m in enumerate(methods or [])}
    seen: dict[str, None] = {}
    for r in recs:
        for k in r:
            if k not in BASE_COLUMNS:
                seen.setdefault(k, None)
    metric_cols = sorted(seen, key=lambda c: (order.get(c.split(".", 1)[0], len(order)), c))
    return [*BASE_COLUMNS, *metric_cols]


def write_csv(report: ScanReport, path: str | Path) -> Path:
    """One row per tensor, flattened metric columns (empty cell: not computed / null)."""
    from wstui import outfile

    recs = records(report)
    return outfile.write_csv(path, recs, csv_columns(recs, list(report.methods)))
