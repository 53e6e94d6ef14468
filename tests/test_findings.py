"""Every DESIGN §6 finding these analyzers own fires on a planted tensor, stays quiet on a
clean Gaussian of the same shape, and follows threshold overrides."""

from __future__ import annotations

import math

import pytest
import torch

import analyzers

CHEAP = ["stats", "sparsity", "quantization", "embedding"]
SHAPE = (256, 256)


def _gauss(seed: int = 0) -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(seed))


def _codes(t, kind="embedding", options=None):
    """Runs the embedding analyzer too (kind embedding), so low-norm rows may show up."""
    r = analyzers.analyze("w", t, kind=kind, methods=CHEAP, options=options)
    assert not r.errors, r.errors
    return {(f.code, f.severity.value) for f in r.findings}, r


def _spike(v: float) -> torch.Tensor:
    w = _gauss()
    w[0, 0] = v
    return w


def _outliers(frac: float) -> torch.Tensor:
    w = _gauss()
    n = int(frac * w.numel())
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(w.numel(), generator=g)[:n]
    w.view(-1)[idx] = torch.where(torch.rand(n, generator=g) < 0.5, -8.0, 8.0)
    return w


def _dead(rows: int) -> torch.Tensor:
    w = _gauss()
    w[:rows] = 0.0
    return w


def _low_norm() -> torch.Tensor:
    w = _gauss()
    w[[9, 99]] *= 0.01
    return w


def _nan() -> torch.Tensor:
    w = _gauss()
    w[3, 4] = math.nan
    return w


PLANTED = {
    ("nonfinite", "critical"): _nan,
    ("int8_lossy", "warn"): lambda: _spike(30.0),
    ("int8_lossy", "critical"): lambda: _spike(200.0),
    ("outliers", "warn"): lambda: _outliers(0.08),
    ("outliers", "critical"): lambda: _outliers(0.20),
    ("dead_units", "warn"): lambda: _dead(1),
    ("dead_units", "critical"): lambda: _dead(40),
    ("low_norm_tokens", "info"): _low_norm,
}


def test_clean_gaussian_has_no_findings():
    codes, r = _codes(_gauss())
    assert codes == set()
    assert "embedding" in r.metrics and not r.skipped


@pytest.mark.parametrize("code", list(PLANTED), ids=lambda c: f"{c[0]}-{c[1]}")
def test_planted_tensor_triggers_its_finding(code):
    codes, r = _codes(PLANTED[code]())
    assert code in codes
    # the same rule never fires twice at two levels
    assert len([c for c in codes if c[0] == code[0]]) == 1
    f = next(f for f in r.findings if f.code == code[0])
    assert f.message and f.threshold is not None and f.value is not None


def test_nonfinite_skips_the_other_analyzers():
    _, r = _codes(_nan())
    assert set(r.skipped) == {"sparsity", "quantization", "embedding"}
    assert r.metrics["stats"]["nan_count"] == 1


def test_large_change_on_a_pair_not_on_a_small_update():
    a = _gauss()
    big = analyzers.compare(a, a + 0.8 * _gauss(1), options={"compare_spectral": False})
    small = analyzers.compare(a, a + 0.01 * _gauss(1), options={"compare_spectral": False})
    assert [(f.code, f.severity.value) for f in big.findings] == [("large_change", "warn")]
    assert small.findings == []


def test_quantization_findings_are_for_matrices_only():
    v = torch.ones(4096)
    v[:800] = 40.0
    v[0] = 1e4
    codes, r = _codes(v, kind="norm")
    assert codes == set()
    assert r.metrics["quantization"]["outlier_frac_1p5"] > 0.12


@pytest.mark.parametrize("override,tensor,expect", [
    ({"int8_lossy": 50.0}, _gauss, {("int8_lossy", "warn")}),
    ({"int8_lossy": 8.0, "int8_lossy.critical": 5.0}, lambda: _spike(200.0), set()),
    ({"outliers": 0.25, "outliers.critical": 0.3}, lambda: _outliers(0.2), set()),
    ({"outliers": 0.001}, _gauss, {("outliers", "warn")}),
    ({"dead_units": 5}, lambda: _dead(1), set()),
    ({"dead_units.critical": 0.5}, lambda: _dead(40), {("dead_units", "warn")}),
    ({"low_norm_tokens": 2}, _low_norm, set()),
])
def test_threshold_overrides(override, tensor, expect):
    kind = "embedding" if "low_norm_tokens" in override else "mlp_up"
    codes, r = _codes(tensor(), kind=kind, options={"thresholds": override})
    assert codes == expect
    for f in r.findings:
        key = f.code if f.severity.value != "critical" else f"{f.code}.critical"
        assert f.threshold == pytest.approx(override.get(key, analyzers.DEFAULT_THRESHOLDS[key]))


def test_int8_ready_follows_the_threshold():
    _, r = _codes(_spike(30.0))
    assert r.metrics["quantization"]["int8_ready"] is False
    _, r = _codes(_spike(30.0), options={"thresholds": {"int8_lossy": 20}})
    assert r.metrics["quantization"]["int8_ready"] is True
