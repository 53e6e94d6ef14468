"""How tensor B differs from tensor A of the same name (DESIGN §5 "compare", diff mode).

`compare(a, b, *, name=None, kind=None, options=None) -> TensorResult` with
`metrics["compare"]`: `l2_distance = ‖B-A‖_F`, `rel_change = ‖B-A‖_F / ‖A‖_F`, `cosine`
(flattened), `max_abs_diff`, `frac_changed` (|B-A| > 1e-6·abs_max(A)); for matrices also the
spectrum of ΔW = B - A: `delta_stable_rank`, `delta_energy_rank_90`, and the power-law alphas
`alpha_a`, `alpha_b`, `delta_alpha = alpha_b - alpha_a` (None where a fit fails).
`data["compare"]`: `spectrum_a`, `spectrum_b` (σ descending, at most 4096 log-spaced picks,
at the 1-based ranks `spectrum_rank`),
`hist_edges` (65 common linear edges), `hist_a`, `hist_b` (64 counts each).
Finding `large_change` (warn) when rel_change > 0.5. Never raises: different shapes or
unreadable input land in `errors["compare"]`, NaN/Inf in `skipped["compare"]`.
`options["compare_spectral"] = False` leaves out the three spectra (the costly part);
`options["compare_elementwise"] = False` computes only them (diff mode's second pass, after a
first pass without spectra, so no work is done twice).

The spectra come from `analyzers.spectral.singular_values` (the scan's spectral path, with its
accuracy contract); without that module a float64 `torch.linalg.svdvals` stands in. Alphas
come from `analyzers.powerlaw`. `options["compare_known_spectra"]` = `{"alpha_a", "alpha_b",
"spectrum_a", "spectrum_b", "spectrum_rank"}` (from scans of A and B, e.g. their cached
`spectral` results) replaces the spectra of A and B: only the spectrum of ΔW is computed, one
of three.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from analyzers.core import (
    Severity,
    TensorResult,
    as_float32,
    finding,
    is_matrix_shape,
    register,
    thresholds_from,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

FRAC_CHANGED_REL = 1e-6
MAX_SPECTRUM_POINTS = 4096


def _source_version() -> str:
    """The cache version: a hash of this file, so that any change to it invalidates entries."""
    import hashlib
    from pathlib import Path

    try:
        text = Path(__file__).read_bytes()
    except OSError:  # pragma: no cover
        return "1"
    return "1-" + hashlib.sha256(text).hexdigest()[:12]


VERSION = _source_version()


def singular_values(m: torch.Tensor) -> np.ndarray:
    """σ of the matrix `m`, descending, float64 numpy. Everything compare derives from them
    (the alphas' tails, the stable rank and 90%-energy rank of ΔW) rests on the large σ, so
    the Gram path is kept even for a rank-deficient ΔW (a LoRA-like update always is), sparing
    an SVD three times as slow (`exact_small=False`)."""
    import numpy as np
    import torch

    try:
        from analyzers.spectral import singular_values as spectral_sv
    except ImportError:  # the spectral module is optional for the elementwise part
        return torch.linalg.svdvals(m.cpu().to(torch.float64)).numpy()
    sv, _method = spectral_sv(m, exact_small=False)
    return np.asarray(sv, dtype=np.float64)


def spectrum_ranks(n: int, limit: int = MAX_SPECTRUM_POINTS) -> np.ndarray:
    """1-based ranks to plot: all of 1..n up to `limit`, else at most `limit` log-spaced ones
    (first and last kept)."""
    import numpy as np

    if n <= limit:
        return np.arange(1, n + 1)
    return np.unique(np.geomspace(1, n, limit).round().astype(np.int64))


def spectrum_picks(sv: np.ndarray, limit: int = MAX_SPECTRUM_POINTS) -> list[float]:
    """σ at `spectrum_ranks(sv.size, limit)`."""
    return sv[spectrum_ranks(sv.size, limit) - 1].tolist()


def _alpha(sv: np.ndarray) -> float | None:
    from analyzers.powerlaw import fit_powerlaw

    fit = fit_powerlaw(sv * sv)
    return fit.alpha


def _delta_spectrum(sv: np.ndarray) -> dict[str, Any]:
    import numpy as np

    energy = sv * sv
    total = float(energy.sum())
    if total == 0.0:
        return {"delta_stable_rank": 0.0, "delta_energy_rank_90": 0}
    k = int(np.searchsorted(np.cumsum(energy), 0.9 * total, side="left")) + 1
    return {"delta_stable_rank": total / float(energy[0]),
            "delta_energy_rank_90": min(k, sv.size)}


def _elementwise(a: torch.Tensor, b: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
    import torch

    fa, fb = a.reshape(-1), b.reshape(-1)
    d = fb - fa
    s_dd = float(torch.dot(d, d))
    s_aa = float(torch.dot(fa, fa))
    s_bb = float(torch.dot(fb, fb))
    s_ab = float(torch.dot(fa, fb))
    l2 = math.sqrt(s_dd)
    norm_a = math.sqrt(s_aa)
    if norm_a > 0:
        rel = l2 / norm_a
    else:
        rel = 0.0 if l2 == 0 else math.inf
    denom = math.sqrt(s_aa * s_bb)
    if s_dd == 0.0 and s_aa > 0:
        cos = 1.0
    else:
        cos = max(-1.0, min(1.0, s_ab / denom)) if denom > 0 else math.nan
    n = d.numel()
    abs_d = d.abs_()
    max_diff = float(abs_d.max()) if n else 0.0
    abs_max_a = float(fa.abs().max()) if n else 0.0
    changed = int(torch.count_nonzero(abs_d > FRAC_CHANGED_REL * abs_max_a)) if n else 0
    return {
        "l2_distance": l2,
        "rel_change": rel,
        "cosine": cos,
        "max_abs_diff": max_diff,
        "frac_changed": changed / n if n else 0.0,
    }, abs_d


def _histograms(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    from analyzers.stats import histogram

    fa, fb = a.reshape(-1), b.reshape(-1)
    lo = min(float(fa.min()), float(fb.min()))
    hi = max(float(fa.max()), float(fb.max()))
    ha, hb = histogram(fa, lo, hi), histogram(fb, lo, hi)
    return {"hist_edges": ha["edges"], "hist_a": ha["counts"], "hist_b": hb["counts"]}


@register("compare", version=VERSION, heavy=True, default=False, scope="pair")
def compare(
    a: Any, b: Any, *, name: str | None = None, kind: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> TensorResult:
    """Compare B against A (base); see the module docstring. Never raises."""
    import torch

    t0 = time.perf_counter()
    opts: Mapping[str, Any] = options or {}
    result = TensorResult(name=name or "", kind=kind)
    try:
        ta = as_float32(a, opts.get("device"))
        tb = as_float32(b, opts.get("device"))
    except Exception as exc:
        result.errors["compare"] = f"{type(exc).__name__}: {exc}"
        result.elapsed_s = time.perf_counter() - t0
        return result
    result.shape = tuple(int(s) for s in ta.shape)
    if ta.shape != tb.shape:
        result.errors["compare"] = (
            f"shape mismatch: A {tuple(ta.shape)} vs B {tuple(tb.shape)}")
    elif ta.numel() == 0:
        result.skipped["compare"] = "empty tensor"
    elif not (bool(torch.isfinite(ta).all()) and bool(torch.isfinite(tb).all())):
        result.skipped["compare"] = "nonfinite"
    else:
        try:
            _fill(result, ta, tb, opts)
        except Exception as exc:
            result.errors["compare"] = f"{type(exc).__name__}: {exc}"
    result.timings["compare"] = result.elapsed_s = time.perf_counter() - t0
    return result


def _fill(result: TensorResult, ta: torch.Tensor, tb: torch.Tensor,
          opts: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    elementwise = opts.get("compare_elementwise", True)
    metrics, _ = _elementwise(ta, tb) if elementwise else ({}, None)
    data = _histograms(ta, tb) if elementwise else {}
    if is_matrix_shape(ta.shape) and opts.get("compare_spectral", True):
        ma = ta.reshape(ta.shape[0], -1)
        mb = tb.reshape(tb.shape[0], -1)
        # B == A: one spectrum and one fit serve both
        identical = metrics["l2_distance"] == 0.0 if elementwise else torch.equal(ta, tb)
        known = opts.get("compare_known_spectra")
        if known is not None:  # A's and B's spectra from their scans: ΔW's alone is left
            metrics.update(_delta_spectrum(np.zeros(0) if identical
                                           else singular_values(mb - ma)))
            alpha_a, alpha_b = known["alpha_a"], known["alpha_b"]
            metrics.update(alpha_a=alpha_a, alpha_b=alpha_b, delta_alpha=alpha_b - alpha_a
                           if None not in (alpha_a, alpha_b) else None)
            data.update(spectrum_a=list(known["spectrum_a"]),
                        spectrum_b=list(known["spectrum_b"]),
                        spectrum_rank=list(known["spectrum_rank"]))
            result.metrics["compare"] = metrics
            result.data["compare"] = data
            return
        sa = singular_values(ma)
        sb = sa if identical else singular_values(mb)
        metrics.update(_delta_spectrum(sa[:0] if identical else singular_values(mb - ma)))
        alpha_a = _alpha(sa)
        alpha_b = alpha_a if identical else _alpha(sb)
        metrics.update(alpha_a=alpha_a, alpha_b=alpha_b,
                       delta_alpha=alpha_b - alpha_a if None not in (alpha_a, alpha_b) else None)
        data.update(spectrum_a=spectrum_picks(sa), spectrum_b=spectrum_picks(sb),
                    spectrum_rank=spectrum_ranks(sa.size).tolist())
    result.metrics["compare"] = metrics
    result.data["compare"] = data
    if not elementwise:
        return
    th = thresholds_from(opts)["large_change"]
    rel = metrics["rel_change"]
    if rel > th:
        result.findings.append(finding("compare", "large_change", Severity.WARN, rel, th,
                                       f"‖B-A‖/‖A‖ = {rel:.3g} > {th:g}"))
