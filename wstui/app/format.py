"""How values, severities and metric rows look on screen.

Only formatting and look-ups live here: every number shown comes from a `TensorResult` as the
analyzers computed it. Severity badges pair a colour with a letter or symbol, so that a
terminal without colour (`NO_COLOR`) still tells critical from warn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from analyzers.core import LOWER_IS_WORSE, Finding, Severity, TensorResult
from wstui.render import columns
from wstui.render.numbers import fmt

#: Badge states beyond the three severities.
PENDING, CLEAN, ERROR, SKIPPED = "pending", "clean", "error", "skipped"

#: state -> (symbol, style). Symbols differ from one another so colour is never needed.
#: Colours are RGB, not ANSI names: Textual's ANSI theme draws red and magenta alike, and
#: under TERM=xterm ANSI red came out magenta and yellow bright red. RGB downgrades to bright
#: red / bright yellow / cyan at 16 colours. Critical is white on red, a block that stays
#: brighter than its background under NO_COLOR (red text alone turned grey 237 on 235).
BADGES: dict[str, tuple[str, str]] = {
    Severity.CRITICAL.value: ("✖", "bold #ffffff on #d70000"),
    Severity.WARN.value: ("▲", "bold #ffd700"),
    Severity.INFO.value: ("i", "#00d7ff"),
    ERROR: ("E", "bold #d75fff"),
    CLEAN: ("✓", "#00d75f"),
    SKIPPED: ("–", "#8a8a8a"),  # listed, not analyzed: a ✓ would claim it was checked
    PENDING: ("·", "dim"),
}

STATE_RANK = {PENDING: -2, SKIPPED: -1.5, CLEAN: -1, "info": 0, "warn": 1, ERROR: 1.5,
              "critical": 2}


def badge(state: str) -> Text:
    symbol, style = BADGES[state]
    return Text(symbol, style=style)


def result_state(result: TensorResult | None) -> str:
    """The badge state of one tensor: its worst finding, an error, clean, or not yet scanned."""
    if result is None:
        return PENDING
    worst = result.worst_severity
    if result.errors and (worst is None or worst is not Severity.CRITICAL):
        return ERROR
    if worst is not None:
        return worst.value
    if not result.metrics and result.skipped and not result.errors:
        return SKIPPED
    return CLEAN


def worst_state(states: Iterator[str] | list[str]) -> str:
    """The state a group node shows: the worst of its descendants (pending only if all are)."""
    best = PENDING
    for s in states:
        if STATE_RANK[s] > STATE_RANK[best]:
            best = s
    return best


def num(value: Any) -> str:
    """A metric value as `wstui scan` prints it (one formatter for both faces)."""
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} values]"
    return fmt(value)


def plural(n: int, word: str) -> str:
    """`1 tensor`, `2 tensors` (a user reads "1 rows" as a bug)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "×".join(str(s) for s in shape) if shape else "scalar"


# --- metrics shown in tables, the Depth view and the Overview threshold marks ----------------


@dataclass(frozen=True)
class Column:
    """A scalar metric that has a column in the Table view and a line in the Depth view."""

    key: str  # unique, also the DataTable column key
    label: str
    analyzer: str
    metric: str
    log: bool = False  # plotted on a log axis in the Depth view


def int8_sqnr(result: TensorResult) -> float | None:
    """SQNR of per-tensor symmetric 8-bit quantization: the int8_lossy rule's input (the
    render layer's getter, which the CLI's tables read too)."""
    return columns.int8_sqnr(result.metrics)


COLUMNS: tuple[Column, ...] = (
    Column("std", "std", "stats", "std", log=True),
    Column("kurtosis", "kurt", "stats", "kurtosis"),
    Column("abs_max", "|max|", "stats", "abs_max", log=True),
    Column("crest", "crest", "quantization", "crest_factor"),
    Column("sqnr8", "SQNR8", "quantization", "sqnr8"),
    Column("outliers", "outl%", "quantization", "outlier_frac_1p5"),
    Column("cond", "cond", "spectral", "condition_number", log=True),
    Column("stable_rank", "srank", "spectral", "stable_rank"),
    Column("eff_rank", "erank", "spectral", "effective_rank"),
    Column("rank_util", "util", "spectral", "rank_utilization"),
    Column("alpha", "α", "spectral", "alpha"),
    Column("ks", "KS", "spectral", "ks_distance"),
    Column("dead", "dead", "sparsity", "dead_rows"),
    Column("rel_change", "Δrel", "compare", "rel_change"),
)
COLUMN_BY_KEY = {c.key: c for c in COLUMNS}


def column_value(result: TensorResult | None, col: Column) -> Any:
    """The value of one table column for one tensor, or None."""
    if result is None:
        return None
    if col.key == "sqnr8":
        return int8_sqnr(result)
    value = result.metrics.get(col.analyzer, {}).get(col.metric)
    if isinstance(value, list):  # e.g. dead_rows stored as indices
        return len(value)
    return value


def sort_key(value: Any) -> tuple[int, float]:
    """Missing values sort last whichever way the table is sorted."""
    if value is None or isinstance(value, str):
        return (1, 0.0)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return (1, 0.0)
    if math.isnan(v):
        return (1, 0.0)
    return (0, v)


#: finding code -> (analyzer, metric) its rule reads; used to put a mark beside that metric.
RULES: dict[str, tuple[str, str]] = {
    "nonfinite": ("stats", "nan_count"),
    "ill_conditioned": ("spectral", "condition_number"),
    "alpha_low": ("spectral", "alpha"),
    "alpha_high": ("spectral", "alpha"),
    "int8_lossy": ("quantization", "sqnr8"),
    "outliers": ("quantization", "outlier_frac_1p5"),
    "dead_units": ("sparsity", "dead_rows"),
    "low_rank": ("spectral", "rank_utilization"),
    "low_norm_tokens": ("embedding", "low_norm_rows"),
    "large_change": ("compare", "rel_change"),
}


#: codes whose critical threshold is a share of the rows while the value shown is a count
SHARE_OF_ROWS = ("dead_units",)


def rule_text(code: str, thresholds: Mapping[str, float]) -> str:
    """The rule of a finding code as a user reads it, e.g. `> 1e+05 ▲ > 1e+08 ✖`."""
    if code not in thresholds:
        return ""
    op = "<" if code in LOWER_IS_WORSE else ">"
    sev = {"alpha_high": "i", "low_rank": "i", "low_norm_tokens": "i"}.get(code, "▲")
    text = f"{op} {num(thresholds[code])} {sev}"
    crit = thresholds.get(f"{code}.critical")
    if crit is not None:
        # dead_rows is a count; its critical threshold a share of the rows: say so
        of_rows = f"{crit:.0%} of rows" if code in SHARE_OF_ROWS else num(crit)
        text += f"  {op} {of_rows} ✖"
    return text


def marks_for(
    analyzer: str, metric: str, findings: list[Finding], thresholds: Mapping[str, float]
) -> tuple[str, list[str]]:
    """(worst state among this metric's findings or '', rule texts) for one metric row."""
    codes = [c for c, (a, m) in RULES.items() if (a, m) == (analyzer, metric)]
    rules = [r for r in (rule_text(c, thresholds) for c in codes) if r]
    hit = [f.severity.value for f in findings if f.code in codes]
    return (worst_state(hit) if hit else ""), rules


def scalar_metrics(result: TensorResult, analyzer: str) -> list[tuple[str, Any]]:
    """The scalar metrics of one analyzer in display order (lists and dicts summarised)."""
    values = result.metrics.get(analyzer, {})
    rows: list[tuple[str, Any]] = []
    if analyzer == "quantization":
        rows.append(("sqnr8", int8_sqnr(result)))
    for key, value in values.items():
        if key in ("histogram", "schemes", "spectrum"):
            continue
        if isinstance(value, Mapping):
            rows.extend((f"{key}.{k}", v) for k, v in value.items() if not isinstance(v, list))
            continue
        rows.append((key, value))
    return rows


# --- diff mode ------------------------------------------------------------------------------


#: compare metrics whose sign says which way B moved from A: `d` flips them
SIGNED = ("delta_alpha",)


def oriented(metrics: Mapping[str, Any], swapped: bool) -> dict[str, Any]:
    """`metrics["compare"]` as the user's A and B read them after `d`: `x_a`/`x_b` trade
    places and signed deltas flip. Symmetric ones (‖B-A‖, cosine, ΔW ranks) stay; `rel_change`
    stays relative to the base's norm (the other norm is never computed), as its label says."""
    out = dict(metrics)
    if not swapped:
        return out
    for key in metrics:
        if key.endswith("_a") and f"{key[:-2]}_b" in metrics:
            out[key], out[f"{key[:-2]}_b"] = metrics[f"{key[:-2]}_b"], metrics[key]
    for key in SIGNED:
        if isinstance(out.get(key), (int, float)):
            out[key] = 0.0 - out[key]  # not -x: -0.0 would show as "-0"
    return out
