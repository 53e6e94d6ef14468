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
from typing import Any

from analyzers.core import (
    EXACT_QUANTILE_LIMIT,
    Context,
    Output,
    abs_quantiles,
    is_torch,
    numel,
    quantiles,
    register,
    strided_sample,
    to_numpy,
    xp,
)

HIST_BINS = 64
SMALL = 2**20
#: Elementwise passes work through the values this many at a time (1 MB of float32 scratch,
#: which stays in cache for the several steps done on each chunk).
CHUNK = 2**18
#: Exact percentiles up to this many values (read at call time, so a test can lower it).
PERCENTILE_LIMIT = EXACT_QUANTILE_LIMIT
ABS_PERCENTILES = {"abs_p50": 0.5, "abs_p90": 0.9, "abs_p99": 0.99, "abs_p999": 0.999}


def histogram(x: Any, lo: float, hi: float, bins: int = HIST_BINS) -> dict[str, list]:
    """Counts of the finite 1-D `x` (numpy, or torch on any device) in `bins` linear bins over
    [lo, hi] (hi in the last bin). Integer counts (bincount), exact beyond 2^24 values, unlike
    float-valued histc."""
    if numel(x) == 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return {"edges": [], "counts": []}
    if hi <= lo:
        return _one_value_histogram(lo, numel(x), bins)
    b = xp(x)
    counts = b.zeros(bins, dtype=b.int64, like=x)
    flat = x.reshape(-1)
    scratch = b.empty(min(CHUNK, numel(flat)), dtype=b.float32, like=x)
    for i in range(0, numel(flat), CHUNK):  # bounded scratch memory on huge tensors
        part = flat[i:i + CHUNK]
        counts += _bin_counts(part, lo, hi, bins, scratch[: numel(part)])
    return _histogram_dict(lo, hi, counts, bins)


def _one_value_histogram(v: float, n: int, bins: int) -> dict[str, list]:
    import numpy as np

    counts = [0] * bins
    counts[bins // 2] = n
    return {"edges": np.linspace(v - 0.5, v + 0.5, bins + 1).tolist(), "counts": counts}


def _histogram_dict(lo: float, hi: float, counts: Any, bins: int) -> dict[str, list]:
    import numpy as np

    edges = np.linspace(lo, hi, bins + 1)
    return {"edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()]}


def _bin_counts(part: Any, lo: float, hi: float, bins: int, idx: Any) -> Any:
    """Bin counts of `part`, with `idx` (float32, same size) as scratch. numpy's bincount
    counts as fast as torch's (its histogram took 14.3 ns a value, bincount 1.8)."""
    b = xp(part)
    width = (hi - lo) / bins
    if hi - lo < 3.0e38:
        b.subtract(part, lo, out=idx)
        b.divide(idx, width, out=idx)
    else:  # x - lo would overflow float32
        b.divide(part, width, out=idx)
        b.subtract(idx, lo / width, out=idx)
    b.clip(idx, 0, bins - 1, out=idx)
    return b.bincount(b.astype(idx, b.int32 if is_torch(part) else b.intp), minlength=bins)[:bins]


def _moments_and_histogram(
    x: Any, lo: float, hi: float
) -> tuple[float, float, float, dict[str, list]]:
    """Mean, variance (ddof=0), 4th central moment and the histogram of the finite 1-D `x`,
    in one pass after the mean, CHUNK values at a time. The chunk stays in cache for all
    the steps on it: with 2^24-value chunks (64 MB) the moments cost 10.2 ns a value and the
    histogram 13.0 on 2^24 values; with 2^18 they cost 1.6 and 5.7 (2 cores, loaded)."""
    b = xp(x)
    n = numel(x)
    xm = x  # the values the moments are summed over
    if n <= SMALL:  # float64 is cheap here and makes small hand-checked values exact
        xm = b.astype(x.cpu() if is_torch(x) else x, b.float64)  # (.cpu(): MPS has no float64)
        b = xp(xm)
    mean = float(xm.sum()) / n
    one_value = not hi > lo
    bx = xp(x)
    counts = bx.zeros(HIST_BINS, dtype=bx.int64, like=x)
    s2 = s4 = 0.0
    d = b.empty(min(CHUNK, n), dtype=xm.dtype, like=xm)
    idx = bx.empty(min(CHUNK, n), dtype=bx.float32, like=x)
    for i in range(0, n, CHUNK):
        part32, part = x[i:i + CHUNK], xm[i:i + CHUNK]
        k = numel(part)
        if not one_value:  # bins of the float32 values, as `histogram` computes them
            counts += _bin_counts(part32, lo, hi, HIST_BINS, idx[:k])
        dk = d[:k]
        b.subtract(part, mean, out=dk)
        b.square(dk, out=dk)
        s2 += float(dk.sum())
        b.square(dk, out=dk)
        s4 += float(dk.sum())
    if one_value:
        hist = _one_value_histogram(lo, n, HIST_BINS)
    else:
        hist = _histogram_dict(lo, hi, counts, HIST_BINS)
    return mean, s2 / n, s4 / n, hist


def compute(x: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics and plot data of any float32 array (numpy, or torch; NaN/Inf allowed)."""
    import numpy as np

    b = xp(x)
    flat = x.reshape(-1)
    numel_ = numel(flat)
    nan_count = inf_count = 0
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(flat.sum()) if numel_ else 0.0
    if numel_ and not math.isfinite(total):
        nan_count = int(b.count_nonzero(b.isnan(flat)))
        inf_count = int(b.count_nonzero(b.isinf(flat)))
        if nan_count + inf_count:
            flat = flat[b.isfinite(flat)]
    n = numel(flat)
    m: dict[str, Any] = {"numel": numel_}
    if n == 0:
        nan = math.nan
        m.update(mean=nan, std=nan, min=nan, max=nan, abs_max=nan, rms=nan, l2_norm=nan,
                 kurtosis=nan, nan_count=nan_count, inf_count=inf_count,
                 **{k: nan for k in ABS_PERCENTILES}, histogram={"edges": [], "counts": []},
                 sampled=False)
        return m, {"histogram": m["histogram"]}
    lo, hi = float(b.min(flat)), float(b.max(flat))
    mean, var, m4, hist = _moments_and_histogram(flat, lo, hi)
    sumsq = n * (var + mean * mean)
    sample = strided_sample(flat, PERCENTILE_LIMIT)
    qs = list(ABS_PERCENTILES.values())
    if not is_torch(sample) or sample.device.type == "cpu":
        pcts = abs_quantiles(np.ascontiguousarray(to_numpy(sample)), qs)
    else:
        pcts = quantiles(sample.abs(), qs, PERCENTILE_LIMIT, overwrite=True)
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
