"""Singular values of a weight matrix and the spectral metrics of DESIGN §5.

Accuracy contract (DESIGN §5), against a float64 LAPACK SVD of the same float32 values: σ_i >=
1e-3·σ_max within relative 1e-6, σ_i >= 1e-6·σ_max within absolute 1e-7·σ_max, the condition
number within 1e-3 relative below 1e12. The fast path is the float64 Gram matrix of the smaller
side (numpy's `bᵀ @ b` is a BLAS `syrk`, half the flops of a product) and its eigenvalues
(LAPACK `syevd`): 2 to 3 times faster than an SVD. Its relative error on σ_i is about
ε64·(σ_max/σ_i)²/2, so when its own estimate of the condition number passes `GRAM_MAX_COND`
the σ are recomputed with a float64 SVD (numpy's LAPACK gesdd, which releases the GIL). On CUDA
the Gram matrix and its eigenvalues are computed on the device in float64 (float32 is not
accurate enough); out of memory falls back to the CPU; MPS has no float64: CPU.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from analyzers.core import (
    Context,
    Output,
    Severity,
    SkipAnalyzer,
    finding,
    is_torch,
    loaded_torch,
    register,
)
from analyzers.powerlaw import EVALS_THRESH, PowerLawFit, fit_powerlaw

if TYPE_CHECKING:  # pragma: no cover
    import torch

VERSION = "1"
#: Above this condition number (as the Gram matrix sees it) the σ come from an SVD instead.
GRAM_MAX_COND = 1e5
#: σ below this fraction of σ_max (capped by max(rows, cols)·ε64) count as exactly zero.
ZERO_REL_CAP = 5e-13
MAX_PICKS = 4096
ESD_BINS = 64
_CHUNK_ELEMENTS = 1 << 23  # rows converted to float64 at a time for the Gram matrix


def singular_values(m: Any, *, exact_small: bool = True) -> tuple[np.ndarray, str]:
    """σ of a matrix (numpy, or torch on any device; more than two dims: reshaped to
    (shape[0], -1)), float64 descending, and the method that produced them: `gram-cpu`,
    `gram-cuda`, `svd-cpu` or `svd-cuda`.

    `exact_small=False` keeps the Gram path even for an ill-conditioned matrix: the large σ
    stay accurate (absolute error ~ε64·σ_max²), only the small ones lose the contract. That is
    enough for a power-law fit of the tail, and it spares the 3x slower SVD on the
    rank-deficient matrices that low-bit quantization makes."""
    if m.ndim != 2:
        m = m.reshape(m.shape[0], math.prod(m.shape[1:]))
    if is_torch(m):
        import torch

        if m.dtype not in (torch.float32, torch.float64):
            m = m.to(torch.float32)
        x = m if m.shape[0] >= m.shape[1] else m.T  # tall: the Gram matrix is cols x cols
        if x.device.type == "cuda":
            try:
                lam = _gram_eigvals_torch(x)
                if exact_small and _gram_too_coarse(lam):
                    sv = torch.linalg.svdvals(x.to(torch.float64)).cpu().numpy()
                    return _finish(sv, x.shape), "svd-cuda"
                return _finish(np.sqrt(np.clip(lam, 0.0, None)), x.shape), "gram-cuda"
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
        x = x.detach().cpu().numpy()  # MPS has no float64
    else:
        x = np.asarray(m)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        x = x if x.shape[0] >= x.shape[1] else x.T
    lam = _gram_eigvals_cpu(x)
    if exact_small and _gram_too_coarse(lam):
        # LAPACK's gesdd through numpy (it releases the GIL, like the Gram path)
        sv = np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)
        return _finish(sv, x.shape), "svd-cpu"
    return _finish(np.sqrt(np.clip(lam, 0.0, None)), x.shape), "gram-cpu"


def eigenvalues(matrix: Any, *, exact_small: bool = True) -> np.ndarray:
    """λ = σ² of W itself (no 1/N scaling), float64, DESCENDING. Accepts torch or numpy.
    `exact_small`: see `singular_values`."""
    if not is_torch(matrix):
        matrix = np.asarray(matrix)
        if matrix.dtype != np.float32:
            matrix = matrix.astype(np.float32)
    else:
        import torch

        if matrix.dtype != torch.float32:
            matrix = matrix.to(torch.float32)
    sv, _ = singular_values(matrix, exact_small=exact_small)
    return sv * sv


def spectral_metrics(sv: np.ndarray, design_rank: int) -> dict[str, Any]:
    """The σ-based metrics of DESIGN §5 from σ (descending, float64)."""
    smax = float(sv[0])
    smin = float(sv[-1])
    energy = sv * sv
    total = float(energy.sum())
    if smax <= 0.0:  # an all-zero matrix
        nan = math.nan
        return {
            "sv_max": 0.0, "sv_min": 0.0, "condition_number": math.inf, "rank_deficient": True,
            "stable_rank": nan, "effective_rank": nan, "rank_at_1pct": 0, "numerical_rank": 0,
            "design_rank": design_rank, "energy_rank_90": 0, "rank_utilization": 0.0,
            "log_norm": -math.inf, "log_spectral_norm": -math.inf, "spectral_entropy": nan,
        }
    p = sv / sv.sum()
    pz = p[p > 0]
    nz = energy[energy > 0]
    q = nz / total
    r = nz.size
    energy_rank = int(np.searchsorted(np.cumsum(energy), 0.9 * total, side="left")) + 1
    energy_rank = min(energy_rank, sv.size)
    return {
        "sv_max": smax,
        "sv_min": smin,
        "condition_number": smax / smin if smin > 0 else math.inf,
        "rank_deficient": bool(smin <= 0),
        "stable_rank": total / (smax * smax),
        "effective_rank": float(np.exp(-np.sum(pz * np.log(pz)))),
        "rank_at_1pct": int(np.count_nonzero(sv > 0.01 * smax)),
        "numerical_rank": int(np.count_nonzero(sv > 1e-6 * smax)),
        "design_rank": int(design_rank),
        "energy_rank_90": energy_rank,
        "rank_utilization": energy_rank / design_rank,
        "log_norm": math.log10(total),
        "log_spectral_norm": math.log10(smax * smax),
        "spectral_entropy": float(-np.sum(q * np.log(q)) / math.log(r)) if r > 1 else 0.0,
    }


def powerlaw_metrics(fit: PowerLawFit) -> dict[str, Any]:
    return {
        "alpha": fit.alpha,
        "alpha_sigma": fit.alpha_sigma,
        "xmin": fit.xmin,
        "xmax": fit.xmax,
        "ks_distance": fit.ks_distance,
        "num_pl_spikes": fit.num_pl_spikes,
        "alpha_weighted": fit.alpha_weighted,
        "log_alpha_norm": fit.log_alpha_norm,
        "n_evals": fit.n_evals,
        "no_fit_reason": fit.reason,
    }


def plot_data(sv: np.ndarray, fit: PowerLawFit) -> dict[str, Any]:
    """Spectrum picks, the log-binned ESD and the fitted power law's density over [xmin, xmax]."""
    r = sv.size
    if r <= MAX_PICKS:
        ranks = np.arange(1, r + 1)
    else:
        ranks = np.unique(np.round(np.geomspace(1, r, MAX_PICKS)).astype(np.int64))
    lam = sv * sv
    lam = np.sort(lam[lam > EVALS_THRESH])
    esd: dict[str, list[float]] = {"edges": [], "density": []}
    if lam.size:
        lo, hi = float(lam[0]), float(lam[-1])
        if hi <= lo:
            lo, hi = lo * 0.9, hi * 1.1
        edges = np.geomspace(lo, hi, ESD_BINS + 1)
        counts, _ = np.histogram(lam, bins=edges)
        esd = {"edges": edges.tolist(), "density": (counts / (lam.size * np.diff(edges))).tolist()}
    fit_xy: dict[str, list[float]] = {"x": [], "y": []}
    if fit.ok and lam.size:
        a, xmin = float(fit.alpha), float(fit.xmin)
        xs = np.geomspace(xmin, float(fit.xmax), 64)
        tail_mass = fit.num_pl_spikes / lam.size
        ys = tail_mass * (a - 1.0) / xmin * (xs / xmin) ** (-a)
        fit_xy = {"x": xs.tolist(), "y": ys.tolist()}
    return {
        "spectrum": sv[ranks - 1].tolist(),
        "spectrum_rank": ranks.tolist(),
        "esd": esd,
        "fit": fit_xy,
        "xmin": fit.xmin,
        "xmax": fit.xmax,
    }


def spectrum_and_fit(ctx: Context) -> tuple[np.ndarray, PowerLawFit, str]:
    """σ and the power-law fit of the context's matrix, computed once per `analyze` call
    (kept in `ctx.cache` for `quant_alpha` and any other analyzer of the same call)."""
    hit = ctx.cache.get("spectral.sv")
    if hit is None:
        sv, method = singular_values(ctx.matrix())
        fit = fit_powerlaw(sv * sv)
        hit = ctx.cache["spectral.sv"] = (sv, fit, method)
    return hit


@register("spectral", version=VERSION, heavy=True)
def analyze_spectral(ctx: Context) -> Output:
    if not ctx.is_matrix:
        raise SkipAnalyzer("not a matrix with at least 2 rows and 2 columns")
    m = ctx.matrix()
    sv, fit, method = spectrum_and_fit(ctx)
    metrics = spectral_metrics(sv, min(int(m.shape[0]), int(m.shape[1])))
    metrics.update(powerlaw_metrics(fit))
    data = plot_data(sv, fit)
    data["method"] = method
    return Output(metrics=metrics, data=data, findings=_findings(metrics, ctx))


def _findings(m: dict[str, Any], ctx: Context) -> list:
    th = ctx.thresholds
    out = []
    cond = m["condition_number"]
    warn, crit = th["ill_conditioned"], th["ill_conditioned.critical"]
    if cond > warn:
        sev = Severity.CRITICAL if cond > crit else Severity.WARN
        out.append(finding("spectral", "ill_conditioned", sev, cond,
                           crit if sev is Severity.CRITICAL else warn,
                           f"condition number {cond:.3g} > "
                           f"{crit if sev is Severity.CRITICAL else warn:.3g}"))
    alpha = m["alpha"]
    if alpha is not None:
        if alpha < th["alpha_low"]:
            out.append(finding("spectral", "alpha_low", Severity.WARN, alpha, th["alpha_low"],
                               f"power-law alpha {alpha:.2f} < {th['alpha_low']:g} "
                               "(very heavy tail: over-fit or corrupted)"))
        if alpha > th["alpha_high"]:
            out.append(finding("spectral", "alpha_high", Severity.INFO, alpha,
                               th["alpha_high"], f"power-law alpha {alpha:.2f} > "
                               f"{th['alpha_high']:g} (under-trained)"))
    util, design = m["rank_utilization"], m["design_rank"]
    if design >= th["low_rank.min_design_rank"] and util < th["low_rank"]:
        out.append(finding("spectral", "low_rank", Severity.INFO, util, th["low_rank"],
                           f"90% of the energy in {m['energy_rank_90']} of {design} directions"))
    return out


# -- singular value paths -----------------------------------------------------------------


def _gram_eigvals_cpu(x: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of xᵀx in float64, accumulated over row chunks.

    numpy, not scipy: numpy's `bᵀ @ b` (a BLAS syrk) and `eigvalsh` (LAPACK syevd) release
    the GIL, scipy's BLAS/LAPACK wrappers hold it for seconds, which would stall the scan's
    other workers and the app's event loop."""
    rows, cols = int(x.shape[0]), int(x.shape[1])
    step = max(1, _CHUNK_ELEMENTS // max(1, cols))
    xn = x
    g = None
    for a in range(0, rows, step):
        b = np.asarray(xn[a : a + step], dtype=np.float64, order="C")
        part = b.T @ b
        g = part if g is None else np.add(g, part, out=g)
    return eigvalsh_cpu(g)


#: From this size on a CPU eigvalsh goes through torch (MKL's LAPACK) when torch is loaded:
#: 1.9x faster than numpy's (OpenBLAS's reference LAPACK) at n = 1536 on one thread, 2.4x at
#: 4096; the same at 896 and below. The engine imports torch for a scan where it pays.
TORCH_EIGH_MIN = 1024
#: ... but from 1024 to 2048 only on one thread: MKL's threaded eigvalsh of a 1536 matrix took
#: 1.14 s on 2 threads against 0.16 s on one (2 cores).
TORCH_EIGH_THREADED_MIN = 2048


def eigvalsh_cpu(g: np.ndarray) -> np.ndarray:
    """Eigenvalues (ascending) of the symmetric float64 `g`: MKL's (through torch) for a big
    `g` when torch is already loaded, numpy's otherwise; they agree to about 1e-14 relative."""
    n = int(g.shape[0])
    torch = loaded_torch() if n >= TORCH_EIGH_MIN else None
    if torch is not None and (n >= TORCH_EIGH_THREADED_MIN or torch.get_num_threads() == 1):
        return torch.linalg.eigvalsh(torch.from_numpy(g)).numpy()
    return np.linalg.eigvalsh(g)


def _gram_eigvals_torch(x: torch.Tensor) -> np.ndarray:
    """Eigenvalues (ascending) of xᵀx in float64 on x's device (CUDA)."""
    import torch

    rows, cols = int(x.shape[0]), int(x.shape[1])
    step = max(1, _CHUNK_ELEMENTS // max(1, cols))
    g = torch.zeros((cols, cols), dtype=torch.float64, device=x.device)
    for a in range(0, rows, step):
        b = x[a : a + step].to(torch.float64)
        g.addmm_(b.T, b)
    return torch.linalg.eigvalsh(g).cpu().numpy()


def _gram_too_coarse(lam: np.ndarray) -> bool:
    """True when the Gram matrix's σ_max/σ_min passes GRAM_MAX_COND (or σ_min is lost)."""
    top, low = float(lam[-1]), float(lam[0])
    if not top > 0 or not low > 0:
        return True
    return math.sqrt(top / low) > GRAM_MAX_COND


def _finish(sv: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Descending float64; σ at rounding level (below max(m, n)·ε64·σ_max, at most
    ZERO_REL_CAP·σ_max, so that any condition number below 1e12 survives) become exactly 0."""
    sv = np.sort(np.asarray(sv, dtype=np.float64))[::-1].copy()
    if sv.size and sv[0] > 0:
        tol = min(max(shape) * np.finfo(np.float64).eps, ZERO_REL_CAP) * sv[0]
        sv[sv < tol] = 0.0
    return sv
