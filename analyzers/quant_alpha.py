"""How 4-bit quantization moves the power-law alpha of a matrix (DESIGN §5, quantization).

`alpha_shift` is α after 4-bit per-tensor symmetric fake quantization minus α before, both
with a free xmin (as the published WeightWatcher quantization study measures it);
`alpha_fixed_xmin_shift` refits only the tail above the unquantized xmin, which is far less
noisy because the free refit's xmin can jump under a small perturbation. Both land in
`metrics["quantization"]`; the analyzer's own section keeps the alphas behind them. Heavy and
not in the default scan: it costs a second eigen-decomposition.
"""

from __future__ import annotations

from typing import Any

from analyzers import spectral
from analyzers.core import Context, Output, SkipAnalyzer, register
from analyzers.powerlaw import fit_powerlaw, fit_powerlaw_fixed_xmin

VERSION = "2"  # 2: the fixed-xmin refit divides by the given xmin (issue 18)
BITS, GRANULARITY, SCHEME = 4, "tensor", "sym"


@register("quant_alpha", version=VERSION, heavy=True, default=False)
def analyze_quant_alpha(ctx: Context) -> Output:
    if not ctx.is_matrix:
        raise SkipAnalyzer("not a matrix with at least 2 rows and 2 columns")
    from analyzers.quantization import fake_quantize

    _, before, _ = spectral.spectrum_and_fit(ctx)  # shared with `spectral` in one call
    q = fake_quantize(ctx.matrix(), BITS, GRANULARITY, SCHEME)
    # the tail is all the fit needs: no SVD fallback for the (often rank-deficient) copy
    sv_q, _ = spectral.singular_values(q, exact_small=False)
    ev_q = sv_q * sv_q
    after = fit_powerlaw(ev_q)
    fixed = fit_powerlaw_fixed_xmin(ev_q, before.xmin) if before.ok else None

    shift = after.alpha - before.alpha if before.ok and after.ok else None
    fixed_alpha = fixed.alpha if fixed is not None and fixed.ok else None
    fixed_shift = fixed_alpha - before.alpha if fixed_alpha is not None else None
    reason = before.reason or after.reason or (fixed.reason if fixed is not None else None)
    metrics: dict[str, Any] = {
        "bits": BITS,
        "granularity": GRANULARITY,
        "scheme": SCHEME,
        "alpha": before.alpha,
        "alpha_quantized": after.alpha,
        "alpha_fixed_xmin_quantized": fixed_alpha,
        "alpha_shift": shift,
        "alpha_fixed_xmin_shift": fixed_shift,
        "no_fit_reason": reason,
    }
    return Output(
        metrics=metrics,
        extra_metrics={
            "quantization": {"alpha_shift": shift, "alpha_fixed_xmin_shift": fixed_shift}
        },
    )
