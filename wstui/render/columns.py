"""The metric columns every face shows the same way: getters on a tensor's `metrics` mapping,
which is the same shape in a `TensorResult` and in a `wstui.scan/1` tensor, so that the CLI's
tables, the app and the report read one definition."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

Metrics = Mapping[str, Any]


def metric(metrics: Metrics, analyzer: str, key: str) -> Any:
    return (metrics.get(analyzer) or {}).get(key)


def tensor_metric(tensor: Mapping[str, Any], analyzer: str, key: str) -> Any:
    """A metric of a `wstui.scan/1` tensor (None when not computed)."""
    return metric(tensor.get("metrics") or {}, analyzer, key)


def int8_sqnr(metrics: Metrics) -> float | None:
    """Per-tensor symmetric 8-bit SQNR (dB), the number behind `int8_lossy`."""
    for s in metric(metrics, "quantization", "schemes") or []:
        if (s.get("bits"), s.get("granularity"), s.get("scheme")) == (8, "tensor", "sym"):
            return s.get("sqnr_db")
    return None


def _getter(analyzer: str, key: str) -> Callable[[Metrics], Any]:
    return lambda m: metric(m, analyzer, key)


#: (column title, getter of a metrics mapping) of the per-kind summary; a column shows when
#: any kind has a value
KIND_COLUMNS: Sequence[tuple[str, Callable[[Metrics], Any]]] = (
    ("alpha", _getter("spectral", "alpha")),
    ("cond. number", _getter("spectral", "condition_number")),
    ("stable rank", _getter("spectral", "stable_rank")),
    ("rank util.", _getter("spectral", "rank_utilization")),
    ("int8 SQNR dB", int8_sqnr),
    ("kurtosis", _getter("stats", "kurtosis")),
    ("outliers 1.5IQR", _getter("quantization", "outlier_frac_1p5")),
)
