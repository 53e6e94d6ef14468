"""Elementwise statistics of a tensor (DESIGN §5 "stats").

Keys: `numel, mean, std (ddof=0), min, max, abs_max, rms, l2_norm, kurtosis (excess),
nan_count, inf_count, abs_p50, abs_p90, abs_p99, abs_p999, histogram, sampled`.
Runs on non-finite tensors too: it counts NaN and Inf, and every other number is over the
finite values (the `nonfinite` finding itself comes from `core.analyze`). Percentiles are exact
up to 2^24 values and over an evenly strided sample of 2^24 beyond (`sampled: true`). The
histogram has 64 linear bins between min and max (`{"edges": [65], "counts": [64]}`; one value
repeated gets the bins [v - 0.5, v + 0.5]); it is also in `data["stats"]["histogram"]`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from analyzers.core import (
    EXACT_QUANTILE_LIMIT,
    Context,
    Output,
    quantiles,
    register,
    strided_sample,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

HIST_BINS = 64
SMALL = 2**20
#: Elementwise passes work through the values this many at a time (64 MB of float32 scratch).
CHUNK = 2**24
#: Exact percentiles up to this many values (read at call time, so a test can lower it).
PERCENTILE_LIMIT = EXACT_QUANTILE_LIMIT
ABS_PERCENTILES = {"abs_p50": 0.5, "abs_p90": 0.9, "abs_p99": 0.99, "abs_p999": 0.999}


def histogram(x: torch.Tensor, lo: float, hi: float, bins: int = HIST_BINS) -> dict[str, list]:
    """Counts of the finite 1-D `x` in `bins` linear bins over [lo, hi] (hi in the last bin).
    Integer counts (bincount), exact beyond 2^24 values, unlike float-valued histc."""
    import numpy as np
    import torch

    if x.numel() == 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return {"edges": [], "counts": []}
    if hi <= lo:
        edges = np.linspace(lo - 0.5, lo + 0.5, bins + 1)
        counts = [0] * bins
        counts[bins // 2] = int(x.numel())
        return {"edges": edges.tolist(), "counts": counts}
    width = (hi - lo) / bins
    counts = torch.zeros(bins, dtype=torch.int64, device=x.device)
    for part in x.reshape(-1).split(CHUNK):  # bounded scratch memory on huge tensors
        if hi - lo < 3.0e38:
            idx = (part - lo).div_(width)
        else:  # x - lo would overflow float32
            idx = (part / width).sub_(lo / width)
        idx = idx.clamp_(0, bins - 1).to(torch.int32)
        counts += torch.bincount(idx, minlength=bins)[:bins]
    edges = np.linspace(lo, hi, bins + 1)
    return {"edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()]}


def _moments(x: torch.Tensor) -> tuple[float, float, float]:
    """Mean, variance (ddof=0) and 4th central moment of the finite 1-D `x`."""
    import torch

    n = x.numel()
    if n <= SMALL:  # float64 is cheap here and makes small hand-checked values exact
        x = x.cpu().to(torch.float64)  # (.cpu(): MPS has no float64)
    mean = float(x.sum()) / n
    s2 = s4 = 0.0
    for part in x.split(CHUNK):  # one chunk of scratch memory, not a copy of the tensor
        d = part - mean
        d.square_()
        s2 += float(d.sum())
        d.square_()
        s4 += float(d.sum())
    return mean, s2 / n, s4 / n


def compute(x: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics and plot data of any float32 tensor (NaN/Inf allowed)."""
    import torch

    flat = x.reshape(-1)
    numel = int(flat.numel())
    nan_count = inf_count = 0
    if numel and not math.isfinite(float(flat.sum())):
        nan_count = int(torch.isnan(flat).sum())
        inf_count = int(torch.isinf(flat).sum())
        if nan_count + inf_count:
            flat = flat[torch.isfinite(flat)]
    n = int(flat.numel())
    m: dict[str, Any] = {"numel": numel}
    if n == 0:
        nan = math.nan
        m.update(mean=nan, std=nan, min=nan, max=nan, abs_max=nan, rms=nan, l2_norm=nan,
                 kurtosis=nan, nan_count=nan_count, inf_count=inf_count,
                 **{k: nan for k in ABS_PERCENTILES}, histogram={"edges": [], "counts": []},
                 sampled=False)
        return m, {"histogram": m["histogram"]}
    mean, var, m4 = _moments(flat)
    lo, hi = (float(v) for v in torch.aminmax(flat))
    sumsq = n * (var + mean * mean)
    abs_vals = strided_sample(flat, PERCENTILE_LIMIT).abs()
    pcts = quantiles(abs_vals, list(ABS_PERCENTILES.values()), PERCENTILE_LIMIT, overwrite=True)
    hist = histogram(flat, lo, hi)
    m.update(
        mean=mean,
        std=math.sqrt(var),
        min=lo,
        max=hi,
        abs_max=max(-lo, hi),
        rms=math.sqrt(sumsq / n),
        l2_norm=math.sqrt(sumsq),
        kurtosis=m4 / (var * var) - 3.0 if var > 0 else math.nan,
        nan_count=nan_count,
        inf_count=inf_count,
        **dict(zip(ABS_PERCENTILES, pcts)),
        histogram=hist,
        sampled=n > PERCENTILE_LIMIT,
    )
    return m, {"histogram": hist}


@register("stats", version="1", needs_finite=False)
def stats(ctx: Context) -> Output:
    metrics, data = compute(ctx.tensor)
    return Output(metrics=metrics, data=data)
