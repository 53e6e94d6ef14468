"""Round-to-nearest fake quantization and the error it makes (DESIGN §5 "quantization").

`fake_quantize(w, bits, granularity, scheme)` is public: the quant study and `quant_alpha`
reuse it. Conventions:

- The tensor is viewed as a matrix `(shape[0], -1)`; a 1-D tensor is one row, a 0-d tensor a
  1x1 matrix. The result has the input's shape and is float32.
- granularity `tensor`: one scale; `channel`: one scale per output row; `group128`: one scale
  per 128 consecutive values along the input dim (columns), a last partial group allowed.
- scheme `sym`: scale = absmax / (2^(b-1) - 1), levels -(2^(b-1)-1) .. 2^(b-1)-1.
  scheme `asym`: scale = (max - min) / (2^b - 1), levels 0 .. 2^b - 1 offset by the group's
  min (the zero point kept as a float, as GGUF Q4_1 does), so min and max are exact.
- A group of zeros (sym) or of one constant value (asym) reconstructs exactly.

Analyzers:

- `quantization` (default): rows for `options["quant_bits"]` (ints or "8,4"; default 8, 4) x
  `options["quant_schemes"]` (default tensor/channel/group128, sym). `options["quant_full"]`
  true gives the full sweep. `quant_schemes` items are `"granularity:scheme"` strings,
  `(granularity, scheme)` pairs or `{"granularity", "scheme"}` dicts.
- `quantization_full` (not in the default scan): the full sweep 8,6,5,4,3,2 bits x three
  granularities x sym, asym. It writes the same keys into `metrics["quantization"]` and
  `data["quantization"]` (through `Output.extra_metrics` / `Output.extra_data`), so that a
  consumer always reads the section `quantization`; `schemes` then holds all 36 rows.

Metric keys (`metrics["quantization"]`): `schemes` (list of `{bits, granularity, scheme,
sqnr_db, cosine, rel_mse, max_abs_err}`), `outlier_frac_1p5`, `outlier_frac_3`,
`crest_factor`, `int8_ready`, `min_bits_30db`, `sampled`. Plot data:
`data["quantization"]["curves"]`. Beyond 2^24 values (`sampled: true`) the scales and Σw² come
from every value and the error sums (hence SQNR, cosine, rel_mse, max_abs_err) from an evenly
strided sample of 2^24 (DESIGN §5; from 4 x 2^24 on, where sampling is the cheaper way).
A perfect reconstruction has `sqnr_db = inf` and `cosine = 1`. `min_bits_30db` searches 2..8
bits (None when 8 bits stay below 30 dB). The quartiles behind the outlier fences come from at
most 2^20 evenly spaced values; the fractions are counted over all of them. Findings
`int8_lossy` and `outliers` are for matrices only (DESIGN §6).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from analyzers.core import (
    EXACT_QUANTILE_LIMIT,
    Context,
    Output,
    Severity,
    SkipAnalyzer,
    finding,
    quantiles,
    register,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

GRANULARITIES = ("tensor", "channel", "group128")
SCHEMES = ("sym", "asym")
FULL_BITS = (8, 6, 5, 4, 3, 2)
DEFAULT_BITS = (8, 4)
GROUP_SIZE = 128
MIN_BITS_TARGET_DB = 30.0
MIN_BITS_RANGE = (2, 3, 4, 5, 6, 7, 8)


def _as_matrix(w: torch.Tensor) -> torch.Tensor:
    import torch

    w = w.detach()
    if w.dtype != torch.float32:
        w = w.to(torch.float32)
    if w.dim() == 0:
        return w.reshape(1, 1)
    if w.dim() == 1:
        return w.reshape(1, -1)
    return w.flatten(1)


def _groups(m: torch.Tensor, granularity: str) -> list[torch.Tensor]:
    """Views (never copies) of the contiguous matrix `m` whose last dim is one group."""
    if granularity == "tensor":
        return [m.view(1, -1)]
    if granularity == "channel":
        return [m]
    if granularity == "group128":
        cols = m.shape[1]
        full = cols // GROUP_SIZE * GROUP_SIZE
        parts = []
        if full:
            parts.append(m[:, :full].unflatten(1, (full // GROUP_SIZE, GROUP_SIZE)))
        if full < cols:
            parts.append(m[:, full:])
        return parts
    raise ValueError(f"unknown granularity {granularity!r} (one of {', '.join(GRANULARITIES)})")


def _group_range(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group min and max (amin and amax apart: faster than aminmax over a dim)."""
    return g.amin(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)


def _quantize_groups(
    g: torch.Tensor, rng: tuple[torch.Tensor, torch.Tensor], bits: int, scheme: str,
    out: torch.Tensor,
) -> None:
    """Fake-quantize `g` group by group (a group = its last dim) into the view `out`;
    `rng` = `_group_range(g)`."""
    lo, hi = rng
    _apply_scale(g, lo, _scale(lo, hi, bits, scheme), bits, scheme, out)


def _scale(lo: torch.Tensor, hi: torch.Tensor, bits: int, scheme: str) -> torch.Tensor:
    """The step of each group from its min and max (1 where the group is one value)."""
    import torch

    if scheme == "sym":
        scale = torch.maximum(hi, lo.neg()).div_(float(2 ** (bits - 1) - 1))
    elif scheme == "asym":
        scale = (hi - lo).div_(float(2**bits - 1))
    else:
        raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _apply_scale(
    g: torch.Tensor, lo: torch.Tensor, scale: torch.Tensor, bits: int, scheme: str,
    out: torch.Tensor,
) -> None:
    """Round `g` to the grid of `scale` (and of `lo` for asym) into `out`; `lo` and `scale`
    broadcast against `g` (per group, or per value for a sample)."""
    import torch

    if scheme == "sym":
        qmax = float(2 ** (bits - 1) - 1)
        torch.div(g, scale, out=out)
        out.clamp_(-qmax, qmax).round_().mul_(scale)
    else:
        levels = float(2**bits - 1)
        torch.sub(g, lo, out=out)
        out.div_(scale).clamp_(0.0, levels).round_().mul_(scale).add_(lo)


def fake_quantize(w: torch.Tensor, bits: int, granularity: str, scheme: str) -> torch.Tensor:
    """Round-to-nearest quantize-dequantize of `w` (see the module docstring); float32 result
    of the same shape and device. Raises ValueError on an unknown setting."""
    import torch

    bits = int(bits)
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16, not {bits}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    shape = tuple(w.shape)
    m = _as_matrix(w).contiguous()
    out = torch.empty_like(m)
    groups = _groups(m, granularity)
    if m.numel():
        for g, o in zip(groups, _groups(out, granularity)):
            _quantize_groups(g, _group_range(g), bits, scheme, o)
    return out.reshape(shape)


# --------------------------------------------------------------------------- error metrics


def _error_row(
    w: torch.Tensor, q: torch.Tensor, s_ww: float, bits: int, granularity: str, scheme: str
) -> dict[str, Any]:
    """SQNR, cosine, relative MSE and max error of `q` against `w` (both flat float32;
    `s_ww` = Σw²). Overwrites `q` with the error. The cosine is formed from Σw², Σw·e and Σe²
    (e = q - w) in float64 so that values near 1 keep their precision. (The quant study
    calls this too.)"""
    import torch

    e = q.sub_(w)  # reuse q's buffer for the error
    s_ee = float(torch.dot(e, e))
    s_we = float(torch.dot(w, e))
    max_err = 0.0
    if e.numel():
        e_lo, e_hi = torch.aminmax(e)
        max_err = max(-float(e_lo), float(e_hi))
    return _row_from_sums(s_ww, s_ee, s_we, max_err, bits, granularity, scheme)


#: Dot products are float32 dots of pieces of this many values, summed in float64: a float32
#: dot over 2^20 values was off by 8e-6 relative (the SQNR by 3e-5 dB), pieces of 2^14 by 1e-7.
DOT_PIECE = 2**14


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """Σ a·b of two flat contiguous float32 tensors, accurate to about 1e-7 relative (see
    DOT_PIECE). One `vecdot` over the pieces, not a `torch.dot` per piece nor one over all:
    on 2 busy cores `torch.dot` of 2^20 values took 6.9 ns a value with 2 threads (BLAS
    threads waiting on each other), `vecdot` 0.11."""
    import torch

    n = a.numel()
    full = n // DOT_PIECE * DOT_PIECE
    total = 0.0
    if full:
        parts = torch.linalg.vecdot(a[:full].view(-1, DOT_PIECE), b[:full].view(-1, DOT_PIECE))
        total = float(parts.to(torch.float64).sum())
    if full < n:
        total += float(torch.linalg.vecdot(a[full:], b[full:]))
    return total


def _row_from_sums(
    s_ww: float, s_ee: float, s_we: float, max_err: float, bits: int, granularity: str,
    scheme: str,
) -> dict[str, Any]:
    if s_ee == 0.0:
        sqnr, cos, rel = math.inf, 1.0, 0.0
    elif s_ww == 0.0:
        sqnr, cos, rel = -math.inf, 0.0, math.inf
    else:
        sqnr = 10.0 * math.log10(s_ww / s_ee)
        rel = s_ee / s_ww
        s_qq = s_ww + 2.0 * s_we + s_ee
        cos = (s_ww + s_we) / math.sqrt(s_ww * s_qq) if s_qq > 0 else 0.0
        cos = max(-1.0, min(1.0, cos))
    return {"bits": bits, "granularity": granularity, "scheme": scheme, "sqnr_db": sqnr,
            "cosine": cos, "rel_mse": rel, "max_abs_err": max_err}


#: Row blocks of at most this many values are quantized at a time (4 MB of scratch: the
#: block and the buffer stay in cache for the five steps of a setting; 2^24-value blocks
#: cost 8.3 ns a value per setting on 4096x4096, 2^20 ones 2.3, 2^18 2.5; one core).
CHUNK = 2**20
#: Error sums are exact up to this many values and over an evenly strided sample of this
#: many beyond (DESIGN §5; read at call time, so a test can lower it) ...
SAMPLE_LIMIT = EXACT_QUANTILE_LIMIT
#: ... but only from SAMPLE_FROM times that size on: below it the exact pass is the cheaper
#: one (49152x576, 1.7 x 2^24 values, one thread, same run: exact 24-40 ns a value,
#: sampled 51-75, the per-value scale lookups dominating), and exact is within the contract.
SAMPLE_FROM = 4


class _Sweep:
    """Quantizes one tensor at many settings, block of rows by block of rows, into one
    scratch buffer, keeping the per-group ranges between bit widths. Not shared between
    threads: one per analyzer call."""

    def __init__(self, w: torch.Tensor) -> None:

        self.m = _as_matrix(w).contiguous()
        self.flat = self.m.reshape(-1)
        self.s_ww = _dot(self.flat, self.flat)
        self.rows: dict[tuple[int, str, str], dict[str, Any]] = {}
        n_rows, n_cols = self.m.shape
        step = max(1, CHUNK // max(n_cols, 1))
        self._blocks = [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]
        self._ranges: dict[tuple[str, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._global: tuple[torch.Tensor, torch.Tensor] | None = None
        self._buf: torch.Tensor | None = None

    def _range(self, granularity: str, i: int, parts: list) -> list:
        if granularity == "tensor":  # one scale for the whole tensor, not for the block
            if self._global is None:
                lo, hi = _group_range(self.flat.view(1, -1))
                self._global = (lo, hi)
            return [self._global]
        key = (granularity, i)
        if key not in self._ranges:
            self._ranges[key] = [_group_range(g) for g in parts]
        return self._ranges[key]

    def row(self, bits: int, granularity: str, scheme: str) -> dict[str, Any]:
        import torch

        key = (int(bits), granularity, scheme)
        if key in self.rows:
            return self.rows[key]
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
        s_ee = s_we = max_err = 0.0
        for i, (r0, r1) in enumerate(self._blocks):
            block = self.m[r0:r1]
            if self._buf is None:
                self._buf = torch.empty_like(block)
            out = self._buf[: r1 - r0]
            parts = _groups(block, granularity)
            for g, rng, o in zip(parts, self._range(granularity, i, parts),
                                 _groups(out, granularity)):
                _quantize_groups(g, rng, key[0], scheme, o)
            e = out.reshape(-1).sub_(block.reshape(-1))
            s_ee += _dot(e, e)
            s_we += _dot(block.reshape(-1), e)
            e_lo, e_hi = torch.aminmax(e)
            max_err = max(max_err, -float(e_lo), float(e_hi))
        self.rows[key] = _row_from_sums(self.s_ww, s_ee, s_we, max_err, *key)
        return self.rows[key]


class _SampledSweep:
    """`_Sweep` for a tensor of more than `limit` values: the scales come from every value
    (per-tensor, per-row and per-group ranges, one pass each), the quantization error sums
    from an evenly strided sample of `limit` values, each quantized with its own group's
    scale, so that every sampled value gets exactly the value `fake_quantize` gives it.
    A 136M-value vocabulary matrix then costs one range pass per granularity instead of
    six full quantizations.

    Σw² is exact (one pass); Σe² and Σw·e are the sample's sums scaled by n / limit. The
    error of round-to-nearest is bounded by half a step, so its sample mean is steady, while
    Σw² of a sample is not: on Student-t(4) values with a few rows 30 times larger, the
    sample's own Σw² put the per-tensor 8-bit SQNR 0.05 dB off, the exact one 0.001 dB."""

    def __init__(self, w: torch.Tensor, limit: int) -> None:
        import torch

        self.m = _as_matrix(w).contiguous()
        self.flat = self.m.reshape(-1)
        n = self.flat.numel()
        cols = self.m.shape[1]
        self._groups_per_row = -(-cols // GROUP_SIZE)
        self._scale = n / limit
        self.s_ww = _dot(self.flat, self.flat)
        # The sample and, per sampled value, the 32-bit index of its group in the flattened
        # (rows, groups) table, CHUNK at a time: full-size int64 temporaries would add
        # 0.5 GB to the scan's peak memory. The row is that index // groups per row.
        self.sample = torch.empty(limit, dtype=torch.float32)
        self._group = torch.empty(limit, dtype=torch.int32)
        step = n / limit
        for i in range(0, limit, CHUNK):
            j = min(limit, i + CHUNK)
            if n % limit == 0:
                idx = torch.arange(i * (n // limit), j * (n // limit), n // limit)
            else:
                idx = torch.arange(i, j, dtype=torch.float64).mul_(step).to(torch.int64)
            torch.index_select(self.flat, 0, idx, out=self.sample[i:j])
            row = torch.div(idx, cols, rounding_mode="floor")
            col = idx.sub_(row * cols).div_(GROUP_SIZE, rounding_mode="floor")
            self._group[i:j] = row.mul_(self._groups_per_row).add_(col)
            del idx, row, col
        self.rows: dict[tuple[int, str, str], dict[str, Any]] = {}
        self._ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _range(self, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The min and max of every group, exact (over every value): (1, 1) for the tensor,
        (rows, 1) per channel, (rows, groups) for group128."""
        import torch

        if granularity in self._ranges:
            return self._ranges[granularity]
        if granularity == "tensor":
            rng = _group_range(self.flat.view(1, -1))
        elif granularity == "channel":
            rng = _group_range(self.m)
        elif granularity == "group128":
            parts = [_group_range(g) for g in _groups(self.m, granularity)]
            rows = self.m.shape[0]
            rng = (torch.cat([p[0].reshape(rows, -1) for p in parts], dim=1),
                   torch.cat([p[1].reshape(rows, -1) for p in parts], dim=1))
        else:
            raise ValueError(
                f"unknown granularity {granularity!r} (one of {', '.join(GRANULARITIES)})")
        self._ranges[granularity] = rng
        return rng

    def _per_value(self, table: torch.Tensor, granularity: str, i: int, j: int) -> torch.Tensor:
        """A per-group table looked up for the sampled values i..j (a scalar for the tensor):
        a 1-D index_select with 32-bit indices made once (table[row, group] per setting took
        0.53 s of 1.5 s on 49152x576)."""
        import torch

        if granularity == "tensor":
            return table.reshape(1)
        index = self._group[i:j]
        if granularity == "channel":
            index = torch.div(index, self._groups_per_row, rounding_mode="floor")
        return table.reshape(-1).index_select(0, index)

    def row(self, bits: int, granularity: str, scheme: str) -> dict[str, Any]:
        """The scale is computed per group with `_scale` (the very float operations
        `fake_quantize` does) and then looked up per sampled value."""
        import torch

        key = (int(bits), granularity, scheme)
        if key in self.rows:
            return self.rows[key]
        if scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
        lo_g, hi_g = self._range(granularity)
        scale_g = _scale(lo_g, hi_g, key[0], scheme)
        buf = torch.empty(min(CHUNK, self.sample.numel()), dtype=torch.float32)
        s_ee = s_we = max_err = 0.0
        for i in range(0, self.sample.numel(), CHUNK):
            j = min(self.sample.numel(), i + CHUNK)
            g = self.sample[i:j]
            sl = self._per_value(scale_g, granularity, i, j)
            ll = self._per_value(lo_g, granularity, i, j) if scheme == "asym" else sl
            out = buf[: g.numel()]
            _apply_scale(g, ll, sl, key[0], scheme, out)
            e = out.sub_(g)
            s_ee += _dot(e, e)
            s_we += _dot(g, e)
            e_lo, e_hi = torch.aminmax(e)
            max_err = max(max_err, -float(e_lo), float(e_hi))
        self.rows[key] = _row_from_sums(self.s_ww, s_ee * self._scale, s_we * self._scale,
                                        max_err, *key)
        return self.rows[key]


# --------------------------------------------------------------------------- options


def _parse_settings(options: Mapping[str, Any]) -> list[tuple[int, str, str]]:
    if options.get("quant_full"):
        return [(b, g, s) for s in SCHEMES for g in GRANULARITIES for b in FULL_BITS]
    bits = options.get("quant_bits") or DEFAULT_BITS
    if isinstance(bits, str):
        bits = [b for b in bits.split(",") if b.strip()]
    elif isinstance(bits, int):
        bits = [bits]
    pairs = _parse_pairs(options.get("quant_schemes"))
    return [(int(b), g, s) for g, s in pairs for b in bits]


def _parse_pairs(spec: Any) -> list[tuple[str, str]]:
    if not spec:
        return [(g, "sym") for g in GRANULARITIES]
    if isinstance(spec, str):
        spec = [p for p in spec.split(",") if p.strip()]
    pairs: list[tuple[str, str]] = []
    for item in spec if isinstance(spec, Iterable) else [spec]:
        if isinstance(item, str):
            g, _, s = item.strip().partition(":")
            s = s or "sym"
        elif isinstance(item, Mapping):
            g, s = item["granularity"], item.get("scheme", "sym")
        else:
            g, s = item
        if g not in GRANULARITIES or s not in SCHEMES:
            raise ValueError(f"unknown quantization setting {g}:{s}")
        pairs.append((g, s))
    return pairs


# --------------------------------------------------------------------------- analyzer


def _curves(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["granularity"], r["scheme"]), []).append(r)
    curves = []
    for (g, s), rs in by.items():
        rs = sorted(rs, key=lambda r: r["bits"])
        curves.append({"granularity": g, "scheme": s, "bits": [r["bits"] for r in rs],
                       "sqnr_db": [r["sqnr_db"] for r in rs]})
    return curves


def _min_bits(sweep: _Sweep | _SampledSweep, target: float) -> int | None:
    """Fewest bits (2..8) at which per-channel sym reaches `target` dB. SQNR grows by about
    6 dB a bit, so the search starts where the 4 and 8-bit rows say the target lies and walks
    from there (two or three quantizations instead of up to seven)."""

    def sqnr(b: int) -> float:
        return sweep.row(b, "channel", "sym")["sqnr_db"]

    lo, hi = MIN_BITS_RANGE[0], MIN_BITS_RANGE[-1]
    s4, s8 = sqnr(4), sqnr(8)
    if math.isfinite(s4) and math.isfinite(s8) and s8 > s4:
        b = 4 + math.ceil((target - s4) / ((s8 - s4) / 4))
        b = min(hi, max(lo, b))
    else:
        b = 4
    if sqnr(b) >= target:
        while b > lo and sqnr(b - 1) >= target:
            b -= 1
        return b
    while b < hi:
        b += 1
        if sqnr(b) >= target:
            return b
    return None


#: The quartiles behind the outlier fences come from at most this many evenly spaced values
#: (the fractions themselves are counted over every value).
OUTLIER_SAMPLE = 2**20
OUTLIER_CHUNK = 2**18


def _outlier_fracs(flat: torch.Tensor) -> tuple[float, float]:
    """Fractions of values beyond 1.5 and 3 IQR outside the quartiles."""
    import numpy as np
    import torch

    q1, q3 = quantiles(flat, [0.25, 0.75], limit=OUTLIER_SAMPLE)
    iqr = q3 - q1
    n = flat.numel()
    out = []
    a = flat.detach().numpy() if flat.device.type == "cpu" else None
    big = float(np.finfo(np.float32).max)  # fences beyond float32 would warn on the cast
    for k in (1.5, 3.0):
        lo, hi = max(q1 - k * iqr, -big), min(q3 + k * iqr, big)
        if a is not None:  # in chunks that stay in cache, not two 4-byte-a-value temporaries
            cnt = sum(int(np.count_nonzero(c < lo)) + int(np.count_nonzero(c > hi))
                      for c in (a[i:i + OUTLIER_CHUNK] for i in range(0, n, OUTLIER_CHUNK)))
        else:
            cnt = int(torch.count_nonzero(flat < lo)) + int(torch.count_nonzero(flat > hi))
        out.append(cnt / n)
    return out[0], out[1]


def _analyze(ctx: Context, settings: list[tuple[int, str, str]]) -> tuple[dict, dict, list]:
    import torch

    limit = SAMPLE_LIMIT
    sampled = ctx.tensor.numel() > limit * SAMPLE_FROM
    sweep: _Sweep | _SampledSweep = (
        _SampledSweep(ctx.tensor, limit) if sampled else _Sweep(ctx.tensor))
    rows = [sweep.row(*s) for s in settings]
    flat = sweep.flat
    n = flat.numel()
    rms = math.sqrt(sweep.s_ww / n) if n else 0.0
    abs_max = max(-float(v) if i == 0 else float(v)
                  for i, v in enumerate(torch.aminmax(flat))) if n else 0.0
    crest = abs_max / rms if rms > 0 else math.nan
    o15, o3 = _outlier_fracs(flat)
    th = ctx.thresholds
    int8 = sweep.row(8, "tensor", "sym")["sqnr_db"]
    metrics = {
        "schemes": rows,
        "outlier_frac_1p5": o15,
        "outlier_frac_3": o3,
        "crest_factor": crest,
        "int8_ready": bool(int8 >= th["int8_lossy"]),
        "min_bits_30db": _min_bits(sweep, MIN_BITS_TARGET_DB),
        "sampled": sampled,
    }
    data = {"curves": _curves(rows)}
    findings = []
    if ctx.is_matrix:
        findings += _int8_findings(int8, th)
        findings += _outlier_findings(o15, th)
    return metrics, data, findings


def _int8_findings(sqnr: float, th: Mapping[str, float]) -> list:
    warn, crit = th["int8_lossy"], th["int8_lossy.critical"]
    if sqnr < crit:
        sev, t = Severity.CRITICAL, crit
    elif sqnr < warn:
        sev, t = Severity.WARN, warn
    else:
        return []
    return [finding("quantization", "int8_lossy", sev, sqnr, t,
                    f"per-tensor int8 SQNR {sqnr:.1f} dB < {t:g} dB")]


def _outlier_findings(frac: float, th: Mapping[str, float]) -> list:
    warn, crit = th["outliers"], th["outliers.critical"]
    if frac > crit:
        sev, t = Severity.CRITICAL, crit
    elif frac > warn:
        sev, t = Severity.WARN, warn
    else:
        return []
    return [finding("quantization", "outliers", sev, frac, t,
                    f"{100 * frac:.1f}% of values beyond 1.5 IQR (> {100 * t:g}%)")]


@register("quantization", version="2")
def quantization(ctx: Context) -> Output:
    """Default rows (8 and 4 bit sym at three granularities) unless options say otherwise."""
    if ctx.tensor.numel() == 0:
        raise SkipAnalyzer("empty tensor")
    metrics, data, findings = _analyze(ctx, _parse_settings(ctx.options))
    return Output(metrics=metrics, data=data, findings=findings)


@register("quantization_full", version="2", default=False)
def quantization_full(ctx: Context) -> Output:
    """The full sweep, written into the `quantization` section."""
    if ctx.tensor.numel() == 0:
        raise SkipAnalyzer("empty tensor")
    metrics, data, findings = _analyze(ctx, _parse_settings({"quant_full": True}))
    return Output(extra_metrics={"quantization": metrics}, extra_data={"quantization": data},
                  findings=findings)
