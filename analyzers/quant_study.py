"""Model-level view of a quantization sweep: the summary table and the mixed-precision plan.

Input: one `layer` dict per matrix, `{"name", "numel", "alpha", "results": [...]}` as the
`quant_sweep` analyzer writes them. Pure numpy; layers whose fit is lost are counted as such
(`no_fit`), never averaged in as NaN nor dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

ALPHA_KEYS = ("alpha", "alpha_fixed_xmin")
#: a layer keeps a bit width when |Δ alpha_fixed_xmin| <= 2% and SQNR >= 30 dB (issue #8)
PLAN_MAX_ALPHA_CHANGE = 0.02
PLAN_MIN_SQNR_DB = 30.0
#: bits per weight a layer keeps when no setting passes (it stays in 16-bit floats)
UNQUANTIZED_BITS = 16
#: storage of one fp16 scale (and one zero point for asym) per group, in bits per weight
_SCALE_BITS = 16


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _rows_for(layer: Mapping[str, Any], setting: tuple[int, str, str]) -> Mapping[str, Any] | None:
    for r in layer.get("results", ()):
        if (r["bits"], r["granularity"], r["scheme"]) == setting:
            return r
    return None


def settings_of(layers: Iterable[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
    """Every setting present, grouped by (granularity, scheme), bits descending."""
    seen: dict[tuple[int, str, str], None] = {}
    for layer in layers:
        for r in layer.get("results", ()):
            seen.setdefault((int(r["bits"]), r["granularity"], r["scheme"]), None)
    order = {"tensor": 0, "channel": 1, "group128": 2}
    return sorted(seen, key=lambda s: (s[2], order.get(s[1], 9), -s[0]))


def _alpha_stats(base: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """Mean, change against the base mean, Pearson r and range counts of one alpha column.

    `base` and `values` are aligned per layer, NaN where there is no fit. The change and the
    correlation use the layers fitted on both sides."""
    fitted = np.isfinite(values)
    both = fitted & np.isfinite(base)
    mean = float(values[fitted].mean()) if fitted.any() else None
    base_mean = float(base[both].mean()) if both.any() else None
    change = None
    if both.any() and base_mean:
        change = 100.0 * (float(values[both].mean()) - base_mean) / abs(base_mean)
    corr = None
    if both.sum() >= 3 and np.std(values[both]) > 0 and np.std(base[both]) > 0:
        corr = float(np.corrcoef(base[both], values[both])[0, 1])
    v = values[fitted]
    return {
        "mean": mean,
        "change_pct": change,
        "corr": corr,
        "in_2_6": int(((v >= 2) & (v <= 6)).sum()),
        "below_2": int((v < 2).sum()),
        "no_fit": int((~fitted).sum()),
    }


def summarize(layers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting plus a first `bits: None` row for the unquantized weights: for both
    alphas the mean, % change, correlation with the unquantized alphas, layers in [2, 6],
    below 2 and without fit; and the mean and worst SQNR."""
    base = np.array([_num(layer.get("alpha")) for layer in layers], dtype=float)
    base_stats = _alpha_stats(base, base)
    rows: list[dict[str, Any]] = [{
        "bits": None, "granularity": None, "scheme": None,
        "alpha": base_stats, "alpha_fixed_xmin": base_stats,
        "sqnr_mean": None, "sqnr_min": None, "n_layers": len(layers),
    }]
    for setting in settings_of(layers):
        found = [_rows_for(layer, setting) for layer in layers]
        row: dict[str, Any] = {
            "bits": setting[0], "granularity": setting[1], "scheme": setting[2],
            "n_layers": sum(r is not None for r in found),
        }
        for key in ALPHA_KEYS:
            values = np.array([_num(r.get(key)) if r else math.nan for r in found], dtype=float)
            row[key] = _alpha_stats(base, values)
        sq = np.array([_num(r["sqnr_db"]) for r in found if r], dtype=float)
        # +inf (a matrix already on the grid) counts for the mean as a perfect layer: keep the
        # mean over finite ones and report the worst over all.
        fin = sq[np.isfinite(sq)]
        row["sqnr_mean"] = float(fin.mean()) if fin.size else (math.inf if sq.size else None)
        row["sqnr_min"] = float(sq.min()) if sq.size else None
        rows.append(row)
    return rows


def _num(x: Any) -> float:
    return float(x) if _finite(x) else math.nan


def overhead_bits(bits: int, granularity: str, scheme: str, cols: int | None = None) -> float:
    """Bits per weight a setting costs, scales (and zero points) included."""
    per_scale = _SCALE_BITS * (2 if scheme == "asym" else 1)
    if granularity == "group128":
        return bits + per_scale / 128
    if granularity == "channel" and cols:
        return bits + per_scale / cols
    return float(bits)


def plan(
    layers: Sequence[Mapping[str, Any]],
    *,
    granularity: str,
    scheme: str,
    max_alpha_change: float = PLAN_MAX_ALPHA_CHANGE,
    min_sqnr_db: float = PLAN_MIN_SQNR_DB,
) -> dict[str, Any]:
    """Per layer the fewest bits of (granularity, scheme) that keep |Δ alpha_fixed_xmin| <=
    2% of the unquantized alpha and SQNR >= 30 dB; layers with no passing width, or no fit
    to judge by, stay at 16 bits. Returns the plan and its average bits per weight."""
    out_layers = []
    total_bits = total_weights = 0.0
    for layer in layers:
        alpha0 = _num(layer.get("alpha"))
        candidates = sorted(
            (r for r in layer.get("results", ())
             if r["granularity"] == granularity and r["scheme"] == scheme),
            key=lambda r: r["bits"],
        )
        chosen = None
        for r in candidates:
            a = _num(r.get("alpha_fixed_xmin"))
            if not (math.isfinite(alpha0) and math.isfinite(a)):
                continue
            sq = r.get("sqnr_db")
            sq_ok = sq is not None and (sq == math.inf or _num(sq) >= min_sqnr_db)
            if sq_ok and abs(a - alpha0) <= max_alpha_change * abs(alpha0):
                chosen = int(r["bits"])
                break
        bits = chosen if chosen is not None else UNQUANTIZED_BITS
        cols = layer.get("cols")
        cost = overhead_bits(bits, granularity, scheme, cols) if chosen else float(bits)
        n = float(layer.get("numel") or 0)
        total_bits += cost * n
        total_weights += n
        out_layers.append({"name": layer["name"], "bits": bits, "bits_per_weight": cost})
    return {
        "granularity": granularity,
        "scheme": scheme,
        "max_alpha_change": max_alpha_change,
        "min_sqnr_db": min_sqnr_db,
        "layers": out_layers,
        "avg_bits_per_weight": total_bits / total_weights if total_weights else None,
    }
