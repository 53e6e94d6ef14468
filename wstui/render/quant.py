"""The quantization study's document (`wstui.quant/1`) as rich renderables (what `wstui quant`
prints), and the labels its tables and the app's Quantization-study view share, so that both
faces read the same. Numbers are written by `wstui.render.numbers`."""

from __future__ import annotations

from typing import Any

from wstui.render.numbers import fmt_fixed, fmt_pct
from wstui.render.text import plain, visible


def render(doc: dict[str, Any]) -> list[Any]:
    """The head line, the summary tables, the plan and the skipped matrices."""
    note = " (GGUF: the study runs on the dequantized weights)" if doc["dequantized"] else ""
    path = visible(doc["checkpoint"]["path"])
    head = plain(f"{path}: {len(doc['layers'])} matrices, "
                 f"{doc['elapsed_s']:.1f} s on {doc['device']}{note}", highlight=True)
    head.stylize("bold", 0, len(path))
    parts: list[Any] = [head, *summary_tables(doc), plan_table(doc)]
    if doc["skipped"]:
        parts.append(plain(f"{len(doc['skipped'])} matrices skipped: " + "; ".join(
            f"{s['name']}: {s['reason']}" for s in doc["skipped"][:5]), highlight=True))
    return parts


def setting_label(row: dict[str, Any]) -> str:
    return "none" if row["bits"] is None else str(row["bits"])


def summary_tables(doc: dict[str, Any]) -> list:
    """Per (granularity, scheme) two rich tables, one per alpha: the study's summary rows.

    Split in two so that each fits an 80-column terminal."""
    from rich import box
    from rich.table import Table

    base = doc["summary"][0]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in doc["summary"][1:]:
        groups.setdefault((row["granularity"], row["scheme"]), []).append(row)
    titles = {"alpha": "alpha, free refit (WeightWatcher-comparable)",
              "alpha_fixed_xmin": "alpha, tail above the unquantized xmin"}
    tables = []
    for (gran, scheme), rows in groups.items():
        for key, title in titles.items():
            t = Table(title=f"{gran} {scheme} · {title}", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)
            for col in ("bits", "SQNR mean", "SQNR min", "α mean", "change", "corr",
                        "in [2,6]", "< 2", "no fit"):
                t.add_column(col, justify="right")
            for row in [base, *rows]:
                a = row[key]
                t.add_row(
                    setting_label(row), fmt_fixed(row["sqnr_mean"], ".1f"),
                    fmt_fixed(row["sqnr_min"], ".1f"), fmt_fixed(a["mean"]),
                    fmt_pct(a["change_pct"]), fmt_fixed(a["corr"]), str(a["in_2_6"]),
                    str(a["below_2"]), str(a["no_fit"]),
                )
            tables.append(t)
    return tables


def plan_table(doc: dict[str, Any]):
    from collections import Counter

    from rich import box
    from rich.table import Table

    t = Table(title="Mixed-precision plan: per layer the fewest bits with |Δα| ≤ 2% "
              "(fixed xmin) and SQNR ≥ 30 dB", title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("granularity")
    t.add_column("scheme")
    t.add_column("bits per weight", justify="right")
    t.add_column("layers at each width")
    for p in doc["plan"]:
        counts = Counter(layer["bits"] for layer in p["layers"])
        spread = ", ".join(f"{b}-bit: {n}" for b, n in sorted(counts.items()))
        t.add_row(p["granularity"], p["scheme"], fmt_fixed(p["avg_bits_per_weight"], ".2f"), spread)
    return t
