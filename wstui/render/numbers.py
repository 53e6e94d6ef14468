"""How every face writes a number: one set of formatters for the CLI's tables, the app, the
HTML/Markdown report and the figures, so that the same metric reads the same everywhere."""

from __future__ import annotations

import math
from typing import Any

from wstui.documents.numbers import median  # noqa: F401  (the one median, re-exported)

#: module kinds in reading order (embeddings, attention, MLP, norms, head), for tables/plots
KIND_ORDER = ("embedding", "position_embedding", "attn_q", "attn_k", "attn_v", "attn_qkv",
              "attn_o", "mlp_gate", "mlp_up", "mlp_down", "mlp_gate_up", "moe_router",
              "moe_expert", "norm", "lm_head", "bias", "other")


def kind_key(kind: str) -> tuple[int, str]:
    """Sort key of a module kind: KIND_ORDER first, unknown kinds after, by name."""
    return _KIND_RANK.get(kind, len(_KIND_RANK)), kind


_KIND_RANK = {k: i for i, k in enumerate(KIND_ORDER)}


def fmt(v: Any) -> str:
    """A number in at most ~8 characters; '–' for missing (JSON null), 'inf'/'nan' as such."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) < 10**7 else f"{v:.3g}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)  # 'nan', 'inf', '-inf'
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def fmt_fixed(x: Any, spec: str = ".3f") -> str:
    """`x` in a fixed format spec (a study's table column); '—' for missing, 'inf'/'-inf'/'nan'
    for non-finite floats."""
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def fmt_pct(x: float | None) -> str:
    """A signed change in percent with two decimals: '+1.25%'; '—' for missing."""
    return "—" if x is None else f"{x:+.2f}%"


def human_count(n: int) -> str:
    """22_713_216 -> '22.7M' (decimal units, as model cards count parameters)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units, as file managers and `ls -h` show them)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


