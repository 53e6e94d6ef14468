"""How every face writes a number: one formatter for the CLI's tables, the app and the report,
so that the same metric reads the same everywhere."""

from __future__ import annotations

import math
from typing import Any

#: module kinds in reading order (embeddings, attention, MLP, norms, head), for tables/plots
KIND_ORDER = ("embedding", "position_embedding", "attn_q", "attn_k", "attn_v", "attn_qkv",
              "attn_o", "mlp_gate", "mlp_up", "mlp_down", "mlp_gate_up", "moe_router",
              "moe_expert", "norm", "lm_head", "bias", "other")


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


def human_count(n: int) -> str:
    """1234567 -> '1.2M' (parameter counts)."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)
