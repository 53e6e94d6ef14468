"""A sensitivity study (`wstui.sensitivity/1`) as rich renderables (what `wstui sensitivity`
prints): the perplexity line, the most sensitive tensors, the super weights, the perturbation
table and the stability line."""

from __future__ import annotations

from typing import Any

from wstui.render.numbers import fmt_fixed
from wstui.render.text import plain  # names and paths from files shown as text (DESIGN §10)


def _g(x: Any, spec: str = ".3g") -> str:
    """These tables' numbers: three significant digits unless a column says otherwise."""
    return fmt_fixed(x, spec)


def summary(doc: dict[str, Any]) -> list[Any]:
    """Perplexity, the most sensitive tensors, the super weights, the perturbation table."""
    from rich import box
    from rich.table import Table

    parts: list[Any] = []
    t = doc["text"]
    parts.append(plain(f"{doc['checkpoint']['path']}: perplexity {_g(doc['perplexity'], '.3f')} "
                       f"on {t['tokens']} tokens of {t['source']} "
                       f"({doc['timings'].get('total_s', 0):.1f} s on {doc['device']})"))
    metric = doc["settings"]["metrics"][0]
    top = sorted((r for r in doc["tensors"] if r.get(metric) is not None),
                 key=lambda r: -r[metric])[:10]
    tab = Table(title=f"Most sensitive tensors by {metric}", title_justify="left",
                box=box.SIMPLE_HEAD)
    for col in ("tensor", "kind", *doc["settings"]["metrics"]):
        tab.add_column(col, justify="left" if col in ("tensor", "kind") else "right")
    for r in top:
        tab.add_row(plain(r["hf_name"]), plain(r["kind"]),
                    *[_g(r.get(m)) for m in doc["settings"]["metrics"]])
    parts.append(tab)
    sw = Table(title="Super weights (zeroed one at a time)", title_justify="left",
               box=box.SIMPLE_HEAD)
    for col in ("tensor", "row", "col", "value", "act_in", "act_out", "ppl zeroed", "ratio"):
        sw.add_column(col, justify="left" if col == "tensor" else "right")
    for s in doc["super_weights"]:
        sw.add_row(plain(s["tensor"]), str(s["row"]), str(s["col"]), _g(s["value"]),
                   _g(s["act_in"]), _g(s["act_out"]), _g(s["ppl_zeroed"], ".4g"),
                   _g(s["ppl_ratio"]))
    if doc["super_weights"]:
        parts.append(sw)
    else:
        parts.append("No super weight: no down-projection output spike above "
                     f"{doc['settings']['spike_ratio']:g}x the median over layers.")
    pt = Table(title=f"Perturbation (perplexity before: {_g(doc['perplexity'], '.4g')})",
               title_justify="left", box=box.SIMPLE_HEAD)
    cols = ["method", "target", "metric", "k", "seed", "ppl", "ratio"]
    has_acc = any("accuracy" in r for r in doc["perturbation"])
    if has_acc:
        cols.append("accuracy")
    for col in cols:
        pt.add_column(col, justify="left" if col in ("method", "target", "metric") else "right")
    for r in doc["perturbation"]:
        cells = [r["method"], r["target"], r["metric"] or "", str(r["k"]),
                 "" if r["seed"] is None else str(r["seed"]), _g(r["ppl"], ".4g"),
                 _g(r["ppl_ratio"])]
        if has_acc:
            cells.append(_g(r.get("accuracy"), ".3f"))
        pt.add_row(*cells)
    parts.append(pt)
    halves = doc["stability"].get("halves")
    if halves:
        parts.append("Stability across the two text halves (Jaccard@k of the top-k, Spearman "
                     "of per-tensor totals): " + "; ".join(
                         f"{m} {_g(v['jaccard'], '.2f')} / {_g(v['spearman'], '.2f')}"
                         for m, v in halves.items() if isinstance(v, dict)))
    return parts
