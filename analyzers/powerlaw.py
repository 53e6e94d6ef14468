"""Power-law fit of an eigenvalue spectrum's tail (DESIGN §5), WeightWatcher 0.7.x compatible.

WeightWatcher's default `analyze()` (its own `WWFit`, not the `powerlaw` package) does this:
keep λ > 1e-5, sort ascending; every λ_j but the largest is an xmin candidate; the tail is
λ_i >= λ_j with n = N - j values; α_j = 1 + n / Σ ln(λ_i/λ_j) (continuous MLE);
D_j = max_k |1 - (λ_k/λ_j)^(1-α_j) - k/n| over the tail, k = 0..n-1 (a one-sided empirical
CDF); D_j = 1 when α_j <= 1; the first j with the smallest D wins; σ_α = (α-1)/√n.
With fewer than 20 values it switches to a small-sample rule (bias-corrected α = 1 + (n-1)/Σ,
D only for tails of at least 8, then the smallest D); we do the same so that the numbers
agree, and refuse to fit at all below 10 values (DESIGN §5).

The KS distance of every candidate is O(N²) work. We bound it from below on a strided grid of
the tail (a max over fewer points can only be smaller), compute the exact D only for the
candidates whose bound does not already lose to the best exact D, and so find the same
minimiser as the full search in a fraction of the time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

EVALS_THRESH = 1e-5  # WeightWatcher's EVALS_THRESH: smaller eigenvalues are dropped
MIN_EVALS = 10  # DESIGN §5: fewer eigenvalues above the threshold get no fit
SMALL_N = 20  # WeightWatcher's SMALL_N_CUTOFF: below it the small-sample rule applies
SMALL_N_MIN_TAIL = 8
_STRIDES = (256, 32, 4, 1)  # coarse-to-fine grids of the KS search
_CHUNK = 1 << 20  # elements per broadcast block when computing exact distances


@dataclass(frozen=True)
class PowerLawFit:
    """Result of a fit; `alpha` is None (and `reason` says why) when there is no fit."""

    alpha: float | None
    alpha_sigma: float | None
    xmin: float | None
    xmax: float | None
    ks_distance: float | None
    num_pl_spikes: int
    n_evals: int
    alpha_weighted: float | None
    log_alpha_norm: float | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.alpha is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_powerlaw(evals: np.ndarray) -> PowerLawFit:
    """Fit α with the xmin that minimises the KS distance (WeightWatcher's default fit)."""
    all_ev, x = _prepare(evals)
    if x.size < MIN_EVALS:
        return _no_fit(all_ev, x, f"fewer than {MIN_EVALS} eigenvalues > {EVALS_THRESH:g}")
    if x.size < SMALL_N:
        j, alpha, d = _fit_small(x)
    else:
        j, alpha, d = _fit_standard(x)
    return _result(all_ev, x, j, alpha, d)


def fit_powerlaw_fixed_xmin(evals: np.ndarray, xmin: float) -> PowerLawFit:
    """Fit α on the tail λ >= xmin with xmin given, not searched: used to compare a perturbed
    spectrum's tail with the unperturbed fit's tail.

    α = 1 + n / Σ ln(λ_i / xmin) over the n eigenvalues λ_i >= xmin, and the KS distance is
    taken against the Pareto CDF that starts at that same xmin. Dividing by the smallest tail
    eigenvalue instead (as a searched fit does, where the two coincide) would bring the jump of
    xmin back in, which is what fixing it is meant to remove."""
    all_ev, x = _prepare(evals)
    if x.size < MIN_EVALS:
        return _no_fit(all_ev, x, f"fewer than {MIN_EVALS} eigenvalues > {EVALS_THRESH:g}")
    if not (np.isfinite(xmin) and xmin > 0):
        return _no_fit(all_ev, x, "xmin is not a positive number")
    j = int(np.searchsorted(x, xmin, side="left"))
    if x.size - j < 2:
        return _no_fit(all_ev, x, "fewer than 2 eigenvalues above xmin")
    log_ratio = np.log(x[j:]) - np.log(xmin)  # ln(λ_i / xmin) >= 0
    n = log_ratio.size
    s = float(np.sum(log_ratio))
    if not s > 0:
        return _no_fit(all_ev, x, "degenerate tail (all eigenvalues equal to xmin)")
    alpha = 1.0 + n / s
    # one-sided KS as in the searched fit: |1 - (λ_k/xmin)^(1-α) - k/n|, k = 0..n-1
    d = float(np.max(np.abs(-np.expm1((1.0 - alpha) * log_ratio) - np.arange(n) / n)))
    return _result(all_ev, x, j, alpha, d, xmin=float(xmin))


# -- internals ----------------------------------------------------------------------------


def _prepare(evals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(all finite eigenvalues, the ones > EVALS_THRESH), both float64 ascending."""
    ev = np.asarray(evals, dtype=np.float64).ravel()
    ev = np.sort(ev[np.isfinite(ev)])
    return ev, ev[ev > EVALS_THRESH]


def _no_fit(all_ev: np.ndarray, x: np.ndarray, reason: str) -> PowerLawFit:
    return PowerLawFit(None, None, None, float(x[-1]) if x.size else None, None, 0,
                       int(x.size), None, None, reason)


def _result(all_ev: np.ndarray, x: np.ndarray, j: int, alpha: float, d: float,
            xmin: float | None = None) -> PowerLawFit:
    """The fit of the tail x[j:]; its xmin is x[j] unless a fixed xmin is given."""
    n = x.size - j
    xmin, xmax = float(x[j]) if xmin is None else xmin, float(x[-1])
    if not np.isfinite(alpha):
        return _no_fit(all_ev, x, "degenerate tail (all eigenvalues equal)")
    # WeightWatcher: log_alpha_norm = log10 Σ λ^α over every eigenvalue (zeros add nothing).
    with np.errstate(over="ignore", divide="ignore"):
        pos = all_ev[all_ev > 0]
        # Σ λ^α in log space, so that large λ and α cannot overflow.
        la = alpha * np.log(pos)
        m = la.max()
        log_alpha_norm = float((m + np.log(np.sum(np.exp(la - m)))) / np.log(10.0))
    return PowerLawFit(
        alpha=float(alpha),
        alpha_sigma=float((alpha - 1.0) / np.sqrt(n)),
        xmin=xmin,
        xmax=xmax,
        ks_distance=float(d),
        num_pl_spikes=int(n),
        n_evals=int(x.size),
        alpha_weighted=float(alpha * np.log10(xmax)),
        log_alpha_norm=log_alpha_norm,
    )


def _alphas(x: np.ndarray, bias_corrected: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """α_j and n_j for every candidate j = 0..N-2 (cumulative sums of ln λ from the top)."""
    logx = np.log(x)
    tail_sum = np.cumsum(logx[::-1])[::-1]  # Σ_{i>=j} ln λ_i
    n = np.arange(x.size, 0, -1, dtype=np.float64)[:-1]
    s = tail_sum[:-1] - n * logx[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + ((n - 1.0) if bias_corrected else n) / s
    alpha[~(s > 0)] = np.inf
    return alpha, n


def _exact_d(x: np.ndarray, js: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Exact one-sided KS distance of candidates `js` (with their α) over their whole tails."""
    return _ks_on_grid(x, js, alphas, 1)


def _ks_on_grid(x: np.ndarray, js: np.ndarray, alphas: np.ndarray, stride: int) -> np.ndarray:
    """KS distance of candidates `js` (ascending) over the tail points k >= j with k a multiple
    of `stride` (plus k = j+1 and the last point): exact for stride 1, a lower bound otherwise.
    Candidates with α <= 1 (or no α) get 1, as in WeightWatcher."""
    out = np.ones(js.size)
    ok = np.isfinite(alphas) & (alphas > 1.0)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return out
    logx = np.log(x)
    size = x.size
    grid = np.arange(0, size, stride)
    if stride > 1 and grid[-1] != size - 1:
        grid = np.append(grid, size - 1)
    # Blocks of candidates; each block only looks at grid points at or after its first
    # candidate, so the work follows the triangle k >= j rather than the full square.
    rows = max(16, min(512, _CHUNK // max(1, grid.size)))
    for a in range(0, idx.size, rows):
        sel = idx[a : a + rows]
        j = js[sel]
        g = grid[np.searchsorted(grid, j[0]) :]
        inv_n = 1.0 / (size - j)
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.subtract.outer(-logx[j], -logx[g])  # ln(x_g / x_j)
            e *= (1.0 - alphas[sel])[:, None]
            np.exp(e, out=e)  # (x_g / x_j)^(1-α): the fitted survival function
            e += np.multiply.outer(inv_n, g) - (j * inv_n)[:, None]  # + (g - j)/n
            e -= 1.0
            np.abs(e, out=e)  # |1 - S_fit - (g - j)/n|
        before = g < j[-1]  # only the first columns can lie before some candidate's xmin
        if before.any():
            k = int(np.count_nonzero(before))
            e[:, :k][g[None, :k] < j[:, None]] = 0.0
        d = e.max(axis=1)
        if stride > 1:  # the point just after xmin, where small tails often peak
            j1 = np.minimum(j + 1, size - 1)
            with np.errstate(over="ignore", invalid="ignore"):
                first = np.abs(np.exp((1.0 - alphas[sel]) * (logx[j1] - logx[j])) + inv_n - 1.0)
            d = np.maximum(d, first)
        out[sel] = d
    return out


def _fit_standard(x: np.ndarray) -> tuple[int, float, float]:
    """Best candidate of WeightWatcher's standard search: (j, α_j, D_j).

    Coarse-to-fine: a lower bound of D on a strided grid prunes every candidate whose bound
    exceeds the exact D of the most promising one; the survivors go to a finer grid, and the
    last survivors get their exact D. The minimiser is the full search's minimiser."""
    alpha, _ = _alphas(x)
    cand = np.arange(x.size - 1)
    for stride in _STRIDES:
        lower = _ks_on_grid(x, cand, alpha[cand], stride)
        if stride == 1:
            break
        top = int(np.argmin(lower))
        d_top = _exact_d(x, cand[[top]], alpha[cand[[top]]])[0]
        keep = lower <= d_top
        cand = cand[keep]
    # ties: the first (smallest) xmin, like numpy's argmin over the full list
    w = int(np.argmin(lower))
    return int(cand[w]), float(alpha[cand[w]]), float(lower[w])


def _fit_small(x: np.ndarray) -> tuple[int, float, float]:
    """WeightWatcher's small-sample rule (N < 20): bias-corrected α = 1 + (n-1)/Σ, D only for
    tails of at least 8 (1 otherwise), then the first smallest D, as its `WWFit` ends up
    choosing (its D - 0.868/√n objective is overridden by the final argmin over D)."""
    alpha, n = _alphas(x, bias_corrected=True)
    cand = np.arange(x.size - 1)
    d = _exact_d(x, cand, np.where(n >= SMALL_N_MIN_TAIL, alpha, np.inf))
    j = int(np.argmin(d))
    return j, float(alpha[j]), float(d[j])
