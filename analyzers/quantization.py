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
`crest_factor`, `int8_ready`, `min_bits_30db`. Plot data: `data["quantization"]["curves"]`.
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
    import torch

    lo, hi = rng
    if scheme == "sym":
        qmax = float(2 ** (bits - 1) - 1)
        scale = torch.maximum(hi, lo.neg()).div_(qmax)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        torch.div(g, scale, out=out)
        out.clamp_(-qmax, qmax).round_().mul_(scale)
    elif scheme == "asym":
        levels = float(2**bits - 1)
        scale = (hi - lo).div_(levels)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        torch.sub(g, lo, out=out)
        out.div_(scale).clamp_(0.0, levels).round_().mul_(scale).add_(lo)
    else:
        raise ValueError(f"unknown scheme {scheme!r} (one of {', '.join(SCHEMES)})")


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


#: Row blocks of at most this many values are quantized at a time (64 MB of scratch).
CHUNK = 2**24


class _Sweep:
    """Quantizes one tensor at many settings, block of rows by block of rows, into one
    scratch buffer, keeping the per-group ranges between bit widths. Not shared between
    threads: one per analyzer call."""

    def __init__(self, w: torch.Tensor) -> None:
        import torch

        self.m = _as_matrix(w).contiguous()
        self.flat = self.m.reshape(-1)
        self.s_ww = float(torch.dot(self.flat, self.flat))
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
            s_ee += float(torch.dot(e, e))
            s_we += float(torch.dot(block.reshape(-1), e))
            e_lo, e_hi = torch.aminmax(e)
            max_err = max(max_err, -float(e_lo), float(e_hi))
        self.rows[key] = _row_from_sums(self.s_ww, s_ee, s_we, max_err, *key)
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


def _min_bits(sweep: _Sweep, target: float) -> int | None:
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
        if a is not None:
            cnt = int(np.count_nonzero(a < lo)) + int(np.count_nonzero(a > hi))
        else:
            cnt = int(torch.count_nonzero(flat < lo)) + int(torch.count_nonzero(flat > hi))
        out.append(cnt / n)
    return out[0], out[1]


def _analyze(ctx: Context, settings: list[tuple[int, str, str]]) -> tuple[dict, dict, list]:
    sweep = _Sweep(ctx.tensor)
    rows = [sweep.row(*s) for s in settings]
    flat = sweep.flat
    n = flat.numel()
    rms = math.sqrt(sweep.s_ww / n) if n else 0.0
    abs_max = max(-float(flat.min()), float(flat.max())) if n else 0.0
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


@register("quantization", version="1")
def quantization(ctx: Context) -> Output:
    """Default rows (8 and 4 bit sym at three granularities) unless options say otherwise."""
    if ctx.tensor.numel() == 0:
        raise SkipAnalyzer("empty tensor")
    metrics, data, findings = _analyze(ctx, _parse_settings(ctx.options))
    return Output(metrics=metrics, data=data, findings=findings)


@register("quantization_full", version="1", default=False)
def quantization_full(ctx: Context) -> Output:
    """The full sweep, written into the `quantization` section."""
    if ctx.tensor.numel() == 0:
        raise SkipAnalyzer("empty tensor")
    metrics, data, findings = _analyze(ctx, _parse_settings({"quant_full": True}))
    return Output(extra_metrics={"quantization": metrics}, extra_data={"quantization": data},
                  findings=findings)
