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
from typing import Any

from analyzers.core import (
    EXACT_QUANTILE_LIMIT,
    Context,
    Output,
    Severity,
    SkipAnalyzer,
    finding,
    is_torch,
    numel,
    quantiles,
    register,
    to_numpy,
    xp,
)

GRANULARITIES = ("tensor", "channel", "group128")
SCHEMES = ("sym", "asym")
FULL_BITS = (8, 6, 5, 4, 3, 2)
DEFAULT_BITS = (8, 4)
GROUP_SIZE = 128
MIN_BITS_TARGET_DB = 30.0
MIN_BITS_RANGE = (2, 3, 4, 5, 6, 7, 8)


def _as_matrix(w: Any) -> Any:
    """`w` as a contiguous float32 matrix (numpy stays numpy, torch stays torch)."""
    if is_torch(w):
        import torch

        w = w.detach()
        if w.dtype != torch.float32:
            w = w.to(torch.float32)
        w = w.contiguous()
    else:
        import numpy as np

        w = np.ascontiguousarray(w, dtype=np.float32)
    if w.ndim == 0:
        return w.reshape(1, 1)
    if w.ndim == 1:
        return w.reshape(1, -1)
    return w.reshape(w.shape[0], math.prod(w.shape[1:]))


def _groups(m: Any, granularity: str) -> list[Any]:
    """Views (never copies) of the contiguous matrix `m` whose last dim is one group."""
    if granularity == "tensor":
        return [m.reshape(1, -1)]
    if granularity == "channel":
        return [m]
    if granularity == "group128":
        rows, cols = m.shape
        full = cols // GROUP_SIZE * GROUP_SIZE
        parts = []
        if full:
            parts.append(m[:, :full].reshape(rows, full // GROUP_SIZE, GROUP_SIZE))
        if full < cols:
            parts.append(m[:, full:])
        return parts
    raise ValueError(f"unknown granularity {granularity!r} (one of {', '.join(GRANULARITIES)})")


def _group_range(g: Any) -> tuple[Any, Any]:
    """Per-group min and max (a group = the last dim)."""
    b = xp(g)
    return b.min(g, axis=-1, keepdims=True), b.max(g, axis=-1, keepdims=True)


def _group_absmax(g: Any) -> Any:
    """Per-group max |w|, what a sym scale needs: one reduction where min and max take two
    (numpy's reductions along a short last axis cost 0.8 ns a value each)."""
    b = xp(g)
    return b.max(b.abs(g), axis=-1, keepdims=True)


def _quantize_groups(g: Any, rng: tuple[Any, Any], bits: int, scheme: str, out: Any) -> None:
    """Fake-quantize `g` group by group (a group = its last dim) into the view `out`;
    `rng` = `_group_range(g)`."""
    lo, hi = rng
    scale = _scale(lo, hi, bits, scheme)
    _apply_scale(g, lo, scale, bits, scheme, out, clip=_clip_needed(scale))


def _scale(lo: Any, hi: Any, bits: int, scheme: str) -> Any:
    """The step of each group from its min and max (1 where the group is one value).
    For sym, `lo` may be None and `hi` the group's max |w| (the same number)."""
    b = xp(hi)
    if scheme == "sym":
        amax = hi if lo is None else b.maximum(hi, b.negative(lo))
        scale = b.divide(amax, float(2 ** (bits - 1) - 1))
    elif scheme == "asym":
        scale = b.divide(b.subtract(hi, lo), float(2**bits - 1))
    else:
        raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    scale[~(scale > 0)] = 1.0
    return scale


#: Scales at least this large are normal numbers whose quotients are correctly rounded.
_SAFE_SCALE = 2.0**-100


def _clip_needed(scale: Any) -> bool:
    """Whether clamping to the grid can change anything. With every scale a finite normal
    number, |w| / (absmax / qmax) rounds to at most qmax·(1 + 2⁻²³), which rounds to qmax
    (and 0 <= (w - min) / step likewise rounds into 0..levels): the clamp is then a no-op,
    and skipping it saves a pass per setting. A subnormal scale (absmax below 1e-36) or an
    infinite one keeps it."""
    import math

    b = xp(scale)
    return not (float(b.min(scale)) >= _SAFE_SCALE and math.isfinite(float(b.max(scale))))


def _apply_scale(g: Any, lo: Any, scale: Any, bits: int, scheme: str, out: Any,
                 clip: bool = True) -> None:
    """Round `g` to the grid of `scale` (and of `lo` for asym) into `out`; `lo` and `scale`
    broadcast against `g` (per group, or per value for a sample). `clip=False` only where
    `_clip_needed` said the clamp is a no-op."""
    b = xp(g)
    if scheme == "sym":
        qmax = float(2 ** (bits - 1) - 1)
        b.divide(g, scale, out=out)
        if clip:
            b.clip(out, -qmax, qmax, out=out)
        b.rint(out, out=out)
        b.multiply(out, scale, out=out)
    else:
        levels = float(2**bits - 1)
        b.subtract(g, lo, out=out)
        b.divide(out, scale, out=out)
        if clip:
            b.clip(out, 0.0, levels, out=out)
        b.rint(out, out=out)
        b.multiply(out, scale, out=out)
        b.add(out, lo, out=out)


def fake_quantize(w: Any, bits: int, granularity: str, scheme: str) -> Any:
    """Round-to-nearest quantize-dequantize of `w` (see the module docstring); float32 result
    of the same shape, as a numpy array for a numpy input and a torch tensor (on its device)
    for a torch input. Raises ValueError on an unknown setting."""
    bits = int(bits)
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16, not {bits}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    shape = tuple(w.shape)
    m = _as_matrix(w)
    out = xp(m).empty_like(m)
    groups = _groups(m, granularity)
    if numel(m):
        for g, o in zip(groups, _groups(out, granularity)):
            _quantize_groups(g, _group_range(g), bits, scheme, o)
    return out.reshape(shape)


# --------------------------------------------------------------------------- error metrics


def _error_row(
    w: Any, q: Any, s_ww: float, bits: int, granularity: str, scheme: str
) -> dict[str, Any]:
    """SQNR, cosine, relative MSE and max error of `q` against `w` (both flat float32;
    `s_ww` = Σw²). Overwrites `q` with the error. The cosine is formed from Σw², Σw·e and Σe²
    (e = q - w) in float64 so that values near 1 keep their precision. (The quant study
    calls this too.)"""
    b = xp(q)
    e = b.subtract(q, w, out=q)  # reuse q's buffer for the error
    s_ee = _dot(e, e)
    s_we = _dot(w, e)
    max_err = 0.0
    if numel(e):
        max_err = max(-float(b.min(e)), float(b.max(e)))
    return _row_from_sums(s_ww, s_ee, s_we, max_err, bits, granularity, scheme)


#: Dot products are float32 dots of pieces of this many values, summed in float64: a float32
#: dot over 2^20 values was off by 8e-6 relative (the SQNR by 3e-5 dB), pieces of 2^14 by 1e-7
#: (torch's vecdot sums a piece pairwise). numpy's (OpenBLAS sdot, a few running sums) was
#: off by -8e-7 on pieces of 2^14 of a quantization error (Σe² of the demo's GGUF matrices:
#: many equal terms, every rounding the same way), by 1e-8 on pieces of 2^10, at one speed.
DOT_PIECE = 2**14
DOT_PIECE_NUMPY = 2**10


def _dot(a: Any, b: Any) -> float:
    """Σ a·b of two flat contiguous float32 arrays, accurate to about 1e-7 relative (see
    DOT_PIECE). One `vecdot` over the pieces, not a dot per piece nor one over all: on 2 busy
    cores `torch.dot` of 2^20 values took 6.9 ns a value with 2 threads (BLAS threads waiting
    on each other), `vecdot` 0.11; numpy's `vecdot` (a BLAS sdot per piece) 0.08 in cache."""
    if not is_torch(a):
        import numpy as np

        with np.errstate(over="ignore", invalid="ignore"):  # inf, as torch gives, unannounced
            return _dot_pieces(a, b, DOT_PIECE_NUMPY)
    return _dot_pieces(a, b, DOT_PIECE)


def _dot_pieces(a: Any, b: Any, piece: int) -> float:
    n = numel(a)
    x = xp(a)
    full = n // piece * piece
    total = 0.0
    if full:
        parts = x.vecdot(a[:full].reshape(-1, piece), b[:full].reshape(-1, piece))
        total = float(x.astype(parts, x.float64).sum())
    if full < n:
        total += float(x.vecdot(a[full:], b[full:]))
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


#: Row blocks of at most this many values are quantized at a time: the block and the buffer
#: stay in cache (L2) for the steps of a setting (torch: 2^24-value blocks cost 8.3 ns a value
#: per setting on 4096x4096, 2^20 ones 2.3, 2^18 2.5; numpy's passes want 2^16; one core).
CHUNK = 2**20
NUMPY_CHUNK = 2**16
#: Error sums are exact up to this many values and over an evenly strided sample of this
#: many beyond (DESIGN §5; read at call time, so a test can lower it) ...
SAMPLE_LIMIT = EXACT_QUANTILE_LIMIT
#: ... but only from SAMPLE_FROM times that size on: below it the exact pass is the cheaper
#: one (49152x576, 1.7 x 2^24 values, one thread, same run: exact 24-40 ns a value,
#: sampled 51-75, the per-value scale lookups dominating), and exact is within the contract.
SAMPLE_FROM = 4


def _tables(m: Any, granularity: str, scheme: str) -> tuple[Any, Any]:
    """(lo, hi) of every group of the whole matrix, exact: shapes (1, 1) for the tensor,
    (rows, 1) per channel, (rows, groups) for group128. For sym, lo is None and hi the group's
    max |w|; the per-channel and per-tensor ones come from the group128 table (a max of
    maxima is exact), so numpy reduces along short rows once per tensor, not per setting."""
    b = xp(m)
    rows = m.shape[0]
    if scheme == "sym":
        if granularity == "group128":
            step = max(1, NUMPY_CHUNK * 4 // max(1, m.shape[1]))  # bounded scratch for |w|
            blocks = []
            for r0 in range(0, rows, step):
                block = m[r0:r0 + step]
                parts = [_group_absmax(g).reshape(block.shape[0], -1)
                         for g in _groups(block, granularity)]
                blocks.append(b.concatenate(parts, axis=1) if len(parts) > 1 else parts[0])
            return None, b.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0]
        _, g128 = _tables(m, "group128", "sym")
        if granularity == "channel":
            return None, b.max(g128, axis=1, keepdims=True)
        if granularity == "tensor":
            return None, b.max(g128).reshape(1, 1)
    else:
        if granularity == "tensor":
            lo, hi = _group_range(m.reshape(1, -1))
            return lo.reshape(1, 1), hi.reshape(1, 1)
        if granularity == "channel":
            return _group_range(m)
        if granularity == "group128":
            parts = [_group_range(g) for g in _groups(m, granularity)]
            los = [p[0].reshape(rows, -1) for p in parts]
            his = [p[1].reshape(rows, -1) for p in parts]
            if len(parts) == 1:
                return los[0], his[0]
            return b.concatenate(los, axis=1), b.concatenate(his, axis=1)
    raise ValueError(f"unknown granularity {granularity!r} (one of {', '.join(GRANULARITIES)})")


def _row_scales(sweep: _Sweep | _SampledSweep, bits: int, granularity: str,
                scheme: str) -> tuple[Any, Any, bool]:
    """(lo, scale, clip) of one setting from the sweep's per-group ranges, after checking the
    setting: what both sweeps need before quantizing."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"unknown granularity {granularity!r} (one of {', '.join(GRANULARITIES)})")
    lo, hi = sweep.table(granularity, scheme)
    scale = _scale(lo, hi, bits, scheme)
    return lo, scale, _clip_needed(scale)


class _Sweep:
    """Quantizes one tensor at many settings, block of rows by block of rows, into one
    scratch buffer. The per-group scales of a (granularity, scheme) come from one table of
    ranges over the whole matrix, kept between bit widths. Not shared between threads: one
    per analyzer call."""

    def __init__(self, w: Any) -> None:
        self.m = _as_matrix(w)
        self.flat = self.m.reshape(-1)
        self.s_ww = _dot(self.flat, self.flat)
        self.rows: dict[tuple[int, str, str], dict[str, Any]] = {}
        n_rows, n_cols = self.m.shape
        chunk = CHUNK if is_torch(self.m) else NUMPY_CHUNK
        step = max(1, chunk // max(n_cols, 1))
        self._blocks = [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]
        self._tables: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._buf: Any = None

    def table(self, granularity: str, scheme: str) -> tuple[Any, Any]:
        key = (granularity, "sym" if scheme == "sym" else "asym")
        if key not in self._tables:
            if scheme == "sym" and granularity != "group128":
                self.table("group128", "sym")  # derived from it
            self._tables[key] = _tables(self.m, *key)
        return self._tables[key]

    def row(self, bits: int, granularity: str, scheme: str) -> dict[str, Any]:
        key = (int(bits), granularity, scheme)
        if key in self.rows:
            return self.rows[key]
        b = xp(self.m)
        lo_t, scale_t, clip = _row_scales(self, *key)
        s_ee = s_we = max_err = 0.0
        cols = self.m.shape[1]
        full = cols // GROUP_SIZE * GROUP_SIZE
        for r0, r1 in self._blocks:
            block = self.m[r0:r1]
            if self._buf is None:
                self._buf = b.empty_like(block)
            out = self._buf[: r1 - r0]
            if granularity == "tensor":
                parts = [(block, out, lo_t, scale_t)]
            elif granularity == "channel":
                lo = lo_t[r0:r1] if lo_t is not None else None
                parts = [(block, out, lo, scale_t[r0:r1])]
            else:
                parts = []
                n_full = full // GROUP_SIZE
                slices = ([slice(0, n_full)] if full else []) + (
                    [slice(n_full, n_full + 1)] if full < cols else [])
                for g, o, sl in zip(_groups(block, granularity), _groups(out, granularity),
                                    slices):
                    sc = scale_t[r0:r1, sl]
                    lo = lo_t[r0:r1, sl] if lo_t is not None else None
                    if g.ndim == 3:  # (rows, groups, 128): one scale per group
                        sc = sc[..., None]
                        lo = lo[..., None] if lo is not None else None
                    parts.append((g, o, lo, sc))
            for g, o, lo, sc in parts:
                _apply_scale(g, lo, sc, key[0], scheme, o, clip=clip)
            e = b.subtract(out, block, out=out).reshape(-1)
            s_ee += _dot(e, e)
            s_we += _dot(block.reshape(-1), e)
            max_err = max(max_err, -float(b.min(e)), float(b.max(e)))
        self.rows[key] = _row_from_sums(self.s_ww, s_ee, s_we, max_err, *key)
        return self.rows[key]

    def abs_max(self) -> float:
        """max |w| over the tensor (from the sym tables, computed once)."""
        return float(self.table("tensor", "sym")[1].reshape(-1)[0])


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

    def __init__(self, w: Any, limit: int) -> None:
        self.m = _as_matrix(w)
        self.flat = self.m.reshape(-1)
        b = xp(self.m)
        n = numel(self.flat)
        cols = self.m.shape[1]
        self._groups_per_row = -(-cols // GROUP_SIZE)
        self._scale = n / limit
        self.s_ww = _dot(self.flat, self.flat)
        # The sample and, per sampled value, the 32-bit index of its group in the flattened
        # (rows, groups) table, CHUNK at a time: full-size int64 temporaries would add
        # 0.5 GB to the scan's peak memory. The row is that index // groups per row.
        self.sample = b.empty(limit, dtype=b.float32, like=self.m)
        self._group = b.empty(limit, dtype=b.int32, like=self.m)
        step = n / limit
        for i in range(0, limit, CHUNK):
            j = min(limit, i + CHUNK)
            if n % limit == 0:
                idx = b.arange(j - i, dtype=b.int64, like=self.m)
                idx *= n // limit
                idx += i * (n // limit)
            else:
                idx = b.arange(j - i, dtype=b.float64, like=self.m)
                idx += i
                idx *= step
                idx = b.astype(idx, b.int64)
            self.sample[i:j] = b.take(self.flat, idx)
            row = idx // cols
            col = idx
            col -= row * cols
            col //= GROUP_SIZE
            row *= self._groups_per_row
            row += col
            self._group[i:j] = row
            del idx, row, col
        self.rows: dict[tuple[int, str, str], dict[str, Any]] = {}
        self._tables: dict[tuple[str, str], tuple[Any, Any]] = {}

    def table(self, granularity: str, scheme: str) -> tuple[Any, Any]:
        """The range of every group, exact (over every value): see `_tables`."""
        key = (granularity, "sym" if scheme == "sym" else "asym")
        if key not in self._tables:
            self._tables[key] = _tables(self.m, *key)
        return self._tables[key]

    def _per_value(self, table: Any, granularity: str, i: int, j: int) -> Any:
        """A per-group table looked up for the sampled values i..j (a scalar for the tensor):
        a 1-D take with 32-bit indices made once (table[row, group] per setting took
        0.53 s of 1.5 s on 49152x576)."""
        if granularity == "tensor":
            return table.reshape(1)
        index = self._group[i:j]
        if granularity == "channel":
            index = index // self._groups_per_row
        return xp(table).take(table.reshape(-1), index)

    def row(self, bits: int, granularity: str, scheme: str) -> dict[str, Any]:
        """The scale is computed per group with `_scale` (the very float operations
        `fake_quantize` does) and then looked up per sampled value."""
        key = (int(bits), granularity, scheme)
        if key in self.rows:
            return self.rows[key]
        b = xp(self.m)
        lo_g, scale_g, clip = _row_scales(self, *key)
        n_s = numel(self.sample)
        buf = b.empty(min(CHUNK, n_s), dtype=b.float32, like=self.m)
        s_ee = s_we = max_err = 0.0
        for i in range(0, n_s, CHUNK):
            j = min(n_s, i + CHUNK)
            g = self.sample[i:j]
            sl = self._per_value(scale_g, granularity, i, j)
            ll = self._per_value(lo_g, granularity, i, j) if scheme == "asym" else sl
            out = buf[: numel(g)]
            _apply_scale(g, ll, sl, key[0], scheme, out, clip=clip)
            e = b.subtract(out, g, out=out)
            s_ee += _dot(e, e)
            s_we += _dot(g, e)
            max_err = max(max_err, -float(b.min(e)), float(b.max(e)))
        self.rows[key] = _row_from_sums(self.s_ww, s_ee * self._scale, s_we * self._scale,
                                        max_err, *key)
        return self.rows[key]

    def abs_max(self) -> float:
        return float(self.table("tensor", "sym")[1].reshape(-1)[0])


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


def _outlier_fracs(flat: Any) -> tuple[float, float]:
    """Fractions of values beyond 1.5 and 3 IQR outside the quartiles."""
    import numpy as np

    q1, q3 = quantiles(flat, [0.25, 0.75], limit=OUTLIER_SAMPLE)
    iqr = q3 - q1
    n = numel(flat)
    out = []
    a = to_numpy(flat) if not is_torch(flat) or flat.device.type == "cpu" else None
    big = float(np.finfo(np.float32).max)  # fences beyond float32 would warn on the cast
    for k in (1.5, 3.0):
        lo, hi = max(q1 - k * iqr, -big), min(q3 + k * iqr, big)
        if a is not None:  # in chunks that stay in cache, not two 4-byte-a-value temporaries
            cnt = sum(int(np.count_nonzero(c < lo)) + int(np.count_nonzero(c > hi))
                      for c in (a[i:i + OUTLIER_CHUNK] for i in range(0, n, OUTLIER_CHUNK)))
        else:
            cnt = int((flat < lo).sum()) + int((flat > hi).sum())
        out.append(cnt / n)
    return out[0], out[1]


def _analyze(ctx: Context, settings: list[tuple[int, str, str]]) -> tuple[dict, dict, list]:
    limit = SAMPLE_LIMIT
    sampled = numel(ctx.tensor) > limit * SAMPLE_FROM
    sweep: _Sweep | _SampledSweep = (
        _SampledSweep(ctx.tensor, limit) if sampled else _Sweep(ctx.tensor))
    rows = [sweep.row(*s) for s in settings]
    flat = sweep.flat
    n = numel(flat)
    rms = math.sqrt(sweep.s_ww / n) if n else 0.0
    abs_max = sweep.abs_max() if n else 0.0
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
    if numel(ctx.tensor) == 0:
        raise SkipAnalyzer("empty tensor")
    metrics, data, findings = _analyze(ctx, _parse_settings(ctx.options))
    return Output(metrics=metrics, data=data, findings=findings)


@register("quantization_full", version="2", default=False)
def quantization_full(ctx: Context) -> Output:
    """The full sweep, written into the `quantization` section."""
    if numel(ctx.tensor) == 0:
        raise SkipAnalyzer("empty tensor")
    metrics, data, findings = _analyze(ctx, _parse_settings({"quant_full": True}))
    return Output(extra_metrics={"quantization": metrics}, extra_data={"quantization": data},
                  findings=findings)
