"""The power-law fit: same minimiser as a brute-force search, recovers a known Pareto tail."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyzers.powerlaw import EVALS_THRESH, fit_powerlaw, fit_powerlaw_fixed_xmin


def brute_force(evals: np.ndarray) -> tuple[float, float, float]:
    """WeightWatcher's default search written out plainly: (alpha, xmin, D)."""
    x = np.sort(evals[evals > EVALS_THRESH])
    big = x.size >= 20
    best = (np.inf, 0.0, 0.0, 0)
    for j in range(x.size - 1):
        tail = x[j:]
        n = tail.size
        s = np.sum(np.log(tail)) - n * np.log(x[j])
        alpha = 1 + (n if big else n - 1) / s
        d = 1.0
        if alpha > 1 and (big or n >= 8):
            d = np.max(np.abs(1 - (tail / x[j]) ** (1 - alpha) - np.arange(n) / n))
        if d < best[0]:
            best = (d, alpha, x[j], j)
    return best[1], best[2], best[0]


def pareto_spectrum(alpha: float, n_tail: int, n_bulk: int, seed: int) -> np.ndarray:
    """Eigenvalues: a bulk below 1 and a tail with density ∝ λ^-alpha on [1, ∞)."""
    rng = np.random.default_rng(seed)
    tail = (1.0 - rng.random(n_tail)) ** (-1.0 / (alpha - 1.0))
    bulk = rng.uniform(0.05, 1.0, n_bulk) ** 2
    return np.concatenate([bulk, tail])


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 30)) if seed % 3 == 0 else int(rng.integers(30, 300))
    w = rng.standard_normal((n + int(rng.integers(0, n)), n))
    if seed % 2:
        w = w * (rng.pareto(2.5, n) + 1.0)
    ev = np.linalg.svd(w, compute_uv=False) ** 2
    fit = fit_powerlaw(ev)
    alpha, xmin, d = brute_force(ev)
    assert fit.xmin == xmin
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.ks_distance == pytest.approx(d, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("alpha", [1.5, 2.0, 2.5, 3.0, 4.0])
def test_recovers_pareto_alpha(alpha: float) -> None:
    """Across seeds the estimate is within 2σ always and within 1σ mostly (σ is a 1-sd)."""
    within_1sigma = 0
    seeds = range(6)
    for seed in seeds:
        fit = fit_powerlaw(pareto_spectrum(alpha, 3000, 1000, seed))
        assert fit.ok
        err = abs(fit.alpha - alpha)
        assert err <= 2 * fit.alpha_sigma, (seed, fit)
        within_1sigma += err <= fit.alpha_sigma
    assert within_1sigma >= 4


def test_keys_and_derived_values() -> None:
    ev = pareto_spectrum(3.0, 500, 200, 1)
    fit = fit_powerlaw(ev)
    tail = ev[ev >= fit.xmin]
    assert fit.num_pl_spikes == tail.size
    assert fit.xmax == ev.max()
    assert fit.n_evals == ev.size
    assert fit.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / fit.xmin)))
    assert fit.alpha_sigma == pytest.approx((fit.alpha - 1) / np.sqrt(tail.size))
    assert fit.alpha_weighted == pytest.approx(fit.alpha * np.log10(ev.max()))
    assert fit.log_alpha_norm == pytest.approx(np.log10(np.sum(ev**fit.alpha)))
    assert fit.reason is None


def test_too_few_eigenvalues_is_no_fit() -> None:
    ev = np.concatenate([np.linspace(1, 2, 9), np.full(50, 1e-7)])  # only 9 above 1e-5
    fit = fit_powerlaw(ev)
    assert not fit.ok and fit.alpha is None
    assert fit.n_evals == 9
    assert "fewer than 10" in fit.reason


def test_degenerate_and_nonfinite_input() -> None:
    assert not fit_powerlaw(np.ones(50)).ok
    ev = pareto_spectrum(3.0, 200, 100, 2)
    with_nan = np.concatenate([ev, [np.nan, np.inf]])
    assert fit_powerlaw(with_nan).alpha == fit_powerlaw(ev).alpha


def test_fixed_xmin() -> None:
    ev = pareto_spectrum(2.5, 1000, 500, 3)
    free = fit_powerlaw(ev)
    fixed = fit_powerlaw_fixed_xmin(ev, free.xmin)
    assert fixed.alpha == pytest.approx(free.alpha, rel=1e-12)
    assert fixed.xmin == free.xmin and fixed.num_pl_spikes == free.num_pl_spikes
    lower = fit_powerlaw_fixed_xmin(ev, 1.0)
    assert lower.xmin == 1.0 and lower.num_pl_spikes == int(np.sum(ev >= 1.0))


def test_fixed_xmin_divides_by_the_given_xmin() -> None:
    """Issue 18: the tail starts above xmin (tail[0] = 2 > xmin = 1.5), and the fit must use
    xmin itself in α = 1 + n / Σ ln(λ_i / xmin) and in the KS distance's Pareto CDF."""
    tail = np.array([2.0, 3.0, 5.0, 8.0, 13.0])
    ev = np.concatenate([np.linspace(0.1, 1.0, 10), tail])  # 15 eigenvalues > 1e-5
    xmin = 1.5
    fit = fit_powerlaw_fixed_xmin(ev, xmin)
    # by hand: Σ ln(λ/1.5) = ln(4/3) + ln 2 + ln(10/3) + ln(16/3) + ln(26/3)
    s = sum(math.log(v / xmin) for v in tail)
    alpha = 1.0 + 5 / s
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.alpha == pytest.approx(1.8308045387, rel=1e-9)  # the number itself, not a formula
    assert fit.xmin == xmin and fit.num_pl_spikes == 5
    d = max(abs(1.0 - (v / xmin) ** (1.0 - alpha) - k / 5) for k, v in enumerate(tail))
    assert fit.ks_distance == pytest.approx(d, rel=1e-12)
    assert fit.alpha_sigma == pytest.approx((alpha - 1.0) / math.sqrt(5), rel=1e-12)
    # dividing by tail[0] (the old bug) gives a different, larger alpha
    wrong = 1.0 + 5 / sum(math.log(v / tail[0]) for v in tail)
    assert wrong - fit.alpha > 0.1


def test_fixed_xmin_degenerate_inputs() -> None:
    ev = np.concatenate([np.linspace(0.1, 1.0, 10), [4.0, 4.0]])
    assert fit_powerlaw_fixed_xmin(ev, 4.0).reason.startswith("degenerate")
    assert not fit_powerlaw_fixed_xmin(ev, 5.0).ok  # nothing above xmin
    assert not fit_powerlaw_fixed_xmin(ev, float("nan")).ok
