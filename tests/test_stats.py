"""stats: exact values on hand-made tensors, percentiles, histogram, NaN/Inf, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import analyzers
from analyzers import stats as stats_mod

STATS_KEYS = {
    "numel", "mean", "std", "min", "max", "abs_max", "rms", "l2_norm", "kurtosis", "nan_count",
    "inf_count", "abs_p50", "abs_p90", "abs_p99", "abs_p999", "histogram", "sampled",
}


def _stats(t, **kw):
    r = analyzers.analyze("t", t, methods=["stats"], **kw)
    assert not r.errors, r.errors
    return r, r.metrics["stats"]


def test_exact_values_on_a_hand_made_tensor():
    r, m = _stats(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
    assert set(m) == STATS_KEYS
    assert m["numel"] == 4
    assert m["mean"] == pytest.approx(-0.5)
    assert m["std"] == pytest.approx(math.sqrt(7.25))
    assert (m["min"], m["max"], m["abs_max"]) == (-4.0, 3.0, 4.0)
    assert m["rms"] == pytest.approx(math.sqrt(7.5))
    assert m["l2_norm"] == pytest.approx(math.sqrt(30.0))
    d = np.array([1.5, -1.5, 3.5, -3.5])
    assert m["kurtosis"] == pytest.approx((d**4).mean() / (d**2).mean() ** 2 - 3.0)
    assert (m["nan_count"], m["inf_count"], m["sampled"]) == (0, 0, False)
    a = np.array([1.0, 2.0, 3.0, 4.0])
    for key, q in (("abs_p50", 0.5), ("abs_p90", 0.9), ("abs_p99", 0.99), ("abs_p999", 0.999)):
        assert m[key] == pytest.approx(float(np.quantile(a, q)))
    assert r.data["stats"]["histogram"] == m["histogram"]


def test_kurtosis_of_uniform_values():
    x = torch.linspace(-1, 1, 10001)
    _, m = _stats(x)
    assert m["kurtosis"] == pytest.approx(-1.2, abs=1e-3)


def test_histogram_linear_bins_between_min_and_max():
    x = torch.tensor([0.0, 0.5, 1.0, 1.0, 64.0])
    _, m = _stats(x)
    h = m["histogram"]
    assert len(h["edges"]) == 65 and len(h["counts"]) == 64
    assert h["edges"][0] == 0.0 and h["edges"][-1] == 64.0
    assert h["edges"][1] == pytest.approx(1.0)
    assert h["counts"][0] == 2 and h["counts"][1] == 2 and h["counts"][63] == 1
    assert sum(h["counts"]) == 5


def test_histogram_counts_match_numpy_on_gaussian():
    x = torch.randn(5000, generator=torch.Generator().manual_seed(1))
    _, m = _stats(x)
    counts, edges = np.histogram(x.numpy(), bins=64, range=(m["min"], m["max"]))
    assert np.allclose(m["histogram"]["edges"], edges)
    assert np.abs(np.array(m["histogram"]["counts"]) - counts).sum() <= 2  # float edge ties


def test_constant_tensor():
    _, m = _stats(torch.full((3, 3), 2.0))
    assert m["std"] == 0.0 and math.isnan(m["kurtosis"])
    assert sum(m["histogram"]["counts"]) == 9
    assert m["histogram"]["edges"][0] < 2.0 < m["histogram"]["edges"][-1]


def test_nonfinite_counted_and_moments_over_finite_values():
    x = torch.tensor([1.0, float("nan"), 3.0, float("inf"), float("-inf"), 5.0])
    r, m = _stats(x)
    assert (m["nan_count"], m["inf_count"], m["numel"]) == (1, 2, 6)
    assert m["mean"] == pytest.approx(3.0) and m["max"] == 5.0 and m["min"] == 1.0
    assert sum(m["histogram"]["counts"]) == 3
    assert [f.code for f in r.findings] == ["nonfinite"]


def test_all_nonfinite_gives_nan_metrics_not_an_error():
    _, m = _stats(torch.full((4,), float("nan")))
    assert m["nan_count"] == 4 and math.isnan(m["mean"])
    assert m["histogram"] == {"edges": [], "counts": []}


def test_percentiles_exact_then_sampled_beyond_the_limit(monkeypatch):
    x = torch.randn(5003, generator=torch.Generator().manual_seed(2))
    _, m = _stats(x)
    a = np.abs(x.numpy())
    assert m["abs_p99"] == pytest.approx(float(np.quantile(a, 0.99)), rel=1e-6)
    assert m["sampled"] is False
    monkeypatch.setattr(stats_mod, "PERCENTILE_LIMIT", 1000)
    _, m = _stats(x)
    assert m["sampled"] is True
    idx = (np.arange(1000) * (5003 / 1000)).astype(np.int64)
    assert m["abs_p50"] == pytest.approx(float(np.quantile(a[idx], 0.5)), rel=1e-6)
    assert m["mean"] == pytest.approx(float(x.double().mean()), abs=1e-9)  # moments: all values


def test_large_tensor_float32_path_agrees_with_float64():
    x = torch.randn(1100, 1000, generator=torch.Generator().manual_seed(3)) * 3 + 1
    _, m = _stats(x)
    d = x.double()
    assert m["mean"] == pytest.approx(float(d.mean()), abs=1e-5)
    assert m["std"] == pytest.approx(float(d.std(correction=0)), rel=1e-5)
    k = float(((d - d.mean()) ** 4).mean() / d.var(correction=0) ** 2 - 3)
    assert m["kurtosis"] == pytest.approx(k, abs=1e-3)
