"""quant_alpha: the alpha shift under 4-bit per-tensor sym fake quantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import analyzers
from analyzers import spectral
from analyzers.powerlaw import fit_powerlaw, fit_powerlaw_fixed_xmin
from analyzers.quantization import fake_quantize


def trained_like(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((300, 200))
    return (g * (rng.pareto(3.0, 200) + 1.0)).astype(np.float32)


def test_shift_is_after_minus_before() -> None:
    m = trained_like()
    r = analyzers.analyze("w", m, methods=["quant_alpha"])
    assert not r.errors
    own = r.metrics["quant_alpha"]
    ev = spectral.eigenvalues(m)
    q = fake_quantize(torch.from_numpy(m), 4, "tensor", "sym")
    ev_q = spectral.eigenvalues(q, exact_small=False)
    before, after = fit_powerlaw(ev), fit_powerlaw(ev_q)
    fixed = fit_powerlaw_fixed_xmin(ev_q, before.xmin)
    assert own["alpha"] == pytest.approx(before.alpha)
    assert own["alpha_shift"] == pytest.approx(after.alpha - before.alpha)
    assert own["alpha_fixed_xmin_shift"] == pytest.approx(fixed.alpha - before.alpha)
    q = r.metrics["quantization"]
    assert q["alpha_shift"] == own["alpha_shift"]
    assert q["alpha_fixed_xmin_shift"] == own["alpha_fixed_xmin_shift"]
    # 4 bits is coarse but the tail survives: the fixed-xmin refit moves little
    assert abs(own["alpha_fixed_xmin_shift"]) < 0.5


def test_reuses_the_spectral_eigenvalues(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = spectral.singular_values

    def counting(m: torch.Tensor, **kw: bool):
        calls.append(tuple(m.shape))
        return real(m, **kw)

    monkeypatch.setattr(spectral, "singular_values", counting)
    r = analyzers.analyze("w", trained_like(1), methods=["spectral", "quant_alpha"])
    assert not r.errors and "alpha" in r.metrics["spectral"]
    assert len(calls) == 2  # the matrix once, its quantized copy once
    assert r.metrics["quant_alpha"]["alpha"] == r.metrics["spectral"]["alpha"]


def test_not_default_and_skips() -> None:
    assert "quant_alpha" in analyzers.names()
    assert "quant_alpha" not in analyzers.default_methods()
    r = analyzers.analyze("b", np.ones(20, np.float32), methods=["quant_alpha"])
    assert r.skipped.get("quant_alpha") and not r.errors


def test_no_fit_gives_none_with_a_reason() -> None:
    m = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    r = analyzers.analyze("s", m, methods=["quant_alpha"])
    own = r.metrics["quant_alpha"]
    assert own["alpha_shift"] is None and own["no_fit_reason"]
    assert r.metrics["quantization"]["alpha_shift"] is None


def test_the_engine_computes_one_spectrum_per_matrix_for_spectral_and_quant_alpha(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: the engine ran each method in its own `analyze` call, so `spectral` and
    `quant_alpha` each took the matrix's spectrum (two, plus the quantized copy's). One task
    now runs all of a tensor's methods on one context: the matrix once, its copy once."""
    from tests.scan_helpers import make_checkpoint, small_model
    from wstui.engine.scan import ScanEngine

    calls: list[tuple[int, ...]] = []
    real = spectral.singular_values

    def counting(m: torch.Tensor, **kw: bool):
        calls.append(tuple(m.shape))
        return real(m, **kw)

    monkeypatch.setattr(spectral, "singular_values", counting)
    with make_checkpoint(tmp_path / "m", small_model()) as ckpt:
        seen: dict[str, set[str]] = {}
        engine = ScanEngine(ckpt, methods=["spectral", "quant_alpha"], use_cache=False,
                            device="cpu", workers=2)
        report = engine.run(on_result=lambda n, r: seen.setdefault(n, set()).update(r.metrics))
    matrices = [e for e in report.entries if "alpha" in e.result.metrics.get("spectral", {})]
    assert matrices and len(calls) == 2 * len(matrices)
    for e in matrices:  # the two methods' results still land one by one, and agree
        assert e.result.metrics["quant_alpha"]["alpha"] == e.result.metrics["spectral"]["alpha"]
        assert {"spectral", "quant_alpha"} <= seen[e.ref.name]
