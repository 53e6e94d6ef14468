"""How one matrix's spectrum moves under fake quantization: the per-layer part of the study.

For each setting (bits x granularity x scheme) the matrix is quantized round-to-nearest
(`quantization.fake_quantize`), and we record the error (SQNR, cosine) and two refits of the
power-law alpha of the quantized matrix's eigenvalues:

- `alpha`: the free refit (xmin searched again), what the published WeightWatcher quantization
  study measures. It is a noisy witness: a small change of the spectrum can move the KS-chosen
  xmin and with it alpha.
- `alpha_fixed_xmin`: the tail above the *unquantized* matrix's xmin refitted, which follows
  the spectrum's change smoothly.

A lost fit is reported as `alpha: None` with `no_fit_reason`, never dropped. One
eigen-decomposition per setting: this analyzer is heavy and not part of the default scan;
`wstui quant` runs it through the scan engine (worker pool, progress, cache).

Options: `options["quant_sweep"] = {"bits": [...], "granularity": [...], "scheme": [...]}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analyzers.core import Context, Output, SkipAnalyzer, register

DEFAULT_SWEEP: dict[str, tuple] = {
    "bits": (8, 6, 5, 4, 3, 2),
    "granularity": ("tensor", "channel", "group128"),
    "scheme": ("sym",),
}


def sweep_settings(spec: Mapping[str, Any] | None) -> list[tuple[int, str, str]]:
    """The (bits, granularity, scheme) settings of a sweep, in table order."""
    from analyzers.quantization import GRANULARITIES, SCHEMES

    spec = {**DEFAULT_SWEEP, **(spec or {})}
    for g in spec["granularity"]:
        if g not in GRANULARITIES:
            raise ValueError(f"unknown granularity {g!r} (one of {', '.join(GRANULARITIES)})")
    for s in spec["scheme"]:
        if s not in SCHEMES:
            raise ValueError(f"unknown scheme {s!r} (one of {', '.join(SCHEMES)})")
    for b in spec["bits"]:
        if not 2 <= int(b) <= 8:
            raise ValueError(f"bits must be between 2 and 8, not {b}")
    return [
        (int(b), g, s)
        for s in spec["scheme"]
        for g in spec["granularity"]
        for b in sorted({int(b) for b in spec["bits"]}, reverse=True)
    ]


@register("quant_sweep", version="3", heavy=True, default=False)
def quant_sweep(ctx: Context) -> Output:
    from analyzers.powerlaw import fit_powerlaw, fit_powerlaw_fixed_xmin
    from analyzers.quantization import _as_matrix, _dot, _error_row, fake_quantize
    from analyzers.spectral import eigenvalues

    if not ctx.is_matrix:
        raise SkipAnalyzer("not a matrix")
    settings = sweep_settings(ctx.options.get("quant_sweep"))
    m = _as_matrix(ctx.matrix())
    # The fit needs the tail: the Gram path's large eigenvalues are exact to rounding, and low
    # bit widths make rank-deficient matrices that would send every setting to a slow SVD.
    base = fit_powerlaw(eigenvalues(m, exact_small=False))
    flat = m.reshape(-1)
    s_ww = _dot(flat, flat)
    results = []
    for bits, gran, scheme in settings:
        q = fake_quantize(m, bits, gran, scheme)
        fit = fit_powerlaw(ev := eigenvalues(q, exact_small=False))
        fixed = fit_powerlaw_fixed_xmin(ev, base.xmin) if base.ok else None
        err = _error_row(flat, q.reshape(-1), s_ww, bits, gran, scheme)
        reason = fit.reason if not fit.ok else None
        if fixed is not None and not fixed.ok:
            reason = reason or f"fixed-xmin refit: {fixed.reason}"
        results.append({
            "bits": bits,
            "granularity": gran,
            "scheme": scheme,
            "sqnr_db": err["sqnr_db"],
            "cosine": err["cosine"],
            "alpha": fit.alpha,
            "alpha_fixed_xmin": fixed.alpha if fixed is not None else None,
            "no_fit_reason": reason,
        })
    metrics = {
        "alpha": base.alpha,
        "xmin": base.xmin,
        "no_fit_reason": base.reason,
        "numel": int(m.shape[0] * m.shape[1]),
        "results": results,
    }
    return Output(metrics=metrics)
