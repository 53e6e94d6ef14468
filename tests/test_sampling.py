"""DESIGN §5, cost of the elementwise analyzers: beyond 2^24 values the quantization error
sums come from an evenly strided sample (flagged `sampled`), the scales from every value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import analyzers
from analyzers import quantization as qmod
from analyzers.core import abs_quantiles

DEFAULT_ROWS = [(b, g, "sym") for g in ("tensor", "channel", "group128") for b in (8, 4)]


def _sumsq(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x.reshape(-1), dtype=torch.float64)) ** 2


def _exact_sqnr(w: torch.Tensor, bits: int, gran: str, scheme: str) -> float:
    """The reference: `fake_quantize` over every value, sums in float64."""
    e = qmod.fake_quantize(w, bits, gran, scheme).sub_(w)
    return 10 * math.log10(_sumsq(w) / _sumsq(e))


def _heavy(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Student-t values with a few huge rows: per-group scales differ from one another."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(4, size=(rows, cols)).astype(np.float32) * 0.02
    x[:: max(1, rows // 7)] *= 30.0
    return torch.from_numpy(x)


def test_sampled_rows_quantize_each_value_as_fake_quantize_does(monkeypatch):
    # a lowered limit makes a small tensor "large": stride 1.6, a last partial group of 72
    monkeypatch.setattr(qmod, "SAMPLE_LIMIT", 20_000)
    monkeypatch.setattr(qmod, "SAMPLE_FROM", 1)
    w = _heavy(160, 200, 0)
    r = analyzers.analyze("w", w, kind="mlp_up", methods=["quantization"])
    m = r.metrics["quantization"]
    assert m["sampled"] is True
    idx = (np.arange(20_000, dtype=np.float64) * (w.numel() / 20_000)).astype(np.int64)
    scale = w.numel() / 20_000  # Σw² is exact; the error sums are the sample's, scaled
    for row in m["schemes"]:
        q = qmod.fake_quantize(w, row["bits"], row["granularity"], row["scheme"])
        e = q.reshape(-1).double()[idx] - w.reshape(-1).double()[idx]
        want = 10 * math.log10(_sumsq(w) / (float((e * e).sum()) * scale))
        assert row["sqnr_db"] == pytest.approx(want, abs=1e-4), row
        assert row["max_abs_err"] == pytest.approx(float(e.abs().max()), rel=1e-6)
    # the scales are exact: crest factor over every value
    flat = w.reshape(-1).double()
    crest = float(flat.abs().max()) / math.sqrt(float((flat**2).mean()))
    assert m["crest_factor"] == pytest.approx(crest, rel=1e-6)


def test_exact_up_to_the_limit_then_flagged():
    w = _heavy(64, 256, 1)
    m = analyzers.analyze("w", w, kind="mlp_up", methods=["quantization"]).metrics
    assert m["quantization"]["sampled"] is False
    for row in m["quantization"]["schemes"]:
        want = _exact_sqnr(w, row["bits"], row["granularity"], row["scheme"])
        assert row["sqnr_db"] == pytest.approx(want, abs=1e-6)


def _llm_like(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Heavy-tailed values (a log-normal scale mixture of Gaussians), log-normal row scales
    and a few outlier input channels: the energy is spread over many rows, as in trained
    weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g).mul_(0.02)
    x *= torch.randn(rows, cols, generator=g).mul_(0.4).exp_()
    x *= torch.exp(0.5 * torch.randn(rows, 1, generator=g))
    x[:, torch.randperm(cols, generator=g)[:8]] *= 6.0
    return x


def test_sampling_starts_at_sample_from_times_the_limit(monkeypatch):
    monkeypatch.setattr(qmod, "SAMPLE_LIMIT", 1000)
    w = _heavy(40, 100, 4)  # 4 x the limit: still exact
    assert analyzers.analyze("w", w, methods=["quantization"]).metrics[
        "quantization"]["sampled"] is False
    w = _heavy(41, 100, 4)
    assert analyzers.analyze("w", w, methods=["quantization"]).metrics[
        "quantization"]["sampled"] is True


@pytest.mark.slow
def test_sqnr_on_a_sampled_tensor_within_001_db_of_the_exact_one(monkeypatch):
    # 1.5 x 2^24 values: past the real limit, a stride that is not an integer (sampling
    # from the limit itself, not from SAMPLE_FROM times it, to test the real sample size)
    monkeypatch.setattr(qmod, "SAMPLE_FROM", 1)
    w = _llm_like(6144, 4096, 2)
    assert w.numel() > qmod.SAMPLE_LIMIT == 2**24
    m = analyzers.analyze("w", w, kind="mlp_up", methods=["quantization"]).metrics
    q = m["quantization"]
    assert q["sampled"] is True
    got = {(r["bits"], r["granularity"], r["scheme"]): r["sqnr_db"] for r in q["schemes"]}
    assert set(got) == set(DEFAULT_ROWS)
    for key in DEFAULT_ROWS:
        assert got[key] == pytest.approx(_exact_sqnr(w, *key), abs=0.01), key


def test_abs_quantiles_match_numpy_exactly():
    rng = np.random.default_rng(3)
    qs = [0.5, 0.9, 0.99, 0.999]
    for a in (rng.standard_normal(300_001).astype(np.float32),
              rng.standard_t(2, size=70_000).astype(np.float32),
              np.ones(5000, dtype=np.float32),  # one bucket: the select fallback
              np.array([-0.0, 0.0, -1.0], dtype=np.float32),
              np.zeros(1, dtype=np.float32)):
        want = [float(v) for v in np.quantile(np.abs(a), qs)]
        assert abs_quantiles(a, qs, chunk=4096) == want
