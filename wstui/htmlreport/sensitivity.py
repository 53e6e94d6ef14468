"""The report's sensitivity section, built from a `wstui.sensitivity/1` document: what the
model's loss depends on, the super weights, and the perturbation table with its controls."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from wstui.figures.plots import sensitivity_depth_figure
from wstui.htmlreport.model import KIND_ORDER, Block, Cell, Fig, Para, Section, Table, num

TOP_TENSORS = 15


def sensitivity_section(doc: Mapping[str, Any]) -> Section:
    text = doc["text"]
    metrics = list(doc["settings"]["metrics"])
    blocks: list[Block] = [Para(
        f"Perplexity {doc['perplexity']:.4g} on {text['tokens']} tokens of {text['source']} "
        f"(sha256 {text['sha256'][:12]}…), {doc.get('device', 'cpu')}. Scores: "
        + ", ".join(metrics) + ". Perturbation targets are always shown beside random and "
        "bottom-k controls of the same size.")]
    first = metrics[0]
    top = sorted((t for t in doc["tensors"] if t.get(first) is not None),
                 key=lambda t: -t[first])[:TOP_TENSORS]
    blocks.append(Table(
        "sens-top", f"The {len(top)} most sensitive tensors by {first} (sums over the tensor)",
        ["tensor", "kind", "block", *metrics],
        [[Cell(t["hf_name"]), Cell(t["kind"]), num(t["block"]), *[num(t.get(m)) for m in metrics]]
         for t in top], frozenset(range(2, 3 + len(metrics)))))
    blocks.append(Fig("sens-depth", "Per-weight sensitivity against block, the median of each "
                      "module kind (log scale)",
                      partial(sensitivity_depth_figure, tensors=doc["tensors"], metrics=metrics,
                              kind_order=KIND_ORDER)))
    sws = doc.get("super_weights") or []
    if sws:
        blocks.append(Table(
            "sens-super", "Super weights (Yu et al. 2024): found one at a time in the layer with "
            "the largest down-projection output spike; perplexity with each zeroed alone",
            ["tensor", "row", "col", "value", "act in", "act out", "ppl zeroed", "ratio"],
            [[Cell(s["tensor"]), num(s["row"]), num(s["col"]), num(s["value"]),
              num(s["act_in"]), num(s["act_out"]), num(s["ppl_zeroed"]),
              num(s.get("ppl_ratio"))] for s in sws], frozenset(range(1, 8))))
    else:
        blocks.append(Para("No super weight: no down-projection output spike stood out."))
    blocks.append(Table(
        "sens-perturb", f"Perturbation: perplexity after, and its ratio to "
        f"{doc['perplexity']:.4g} before",
        ["method", "target", "metric", "k", "seed", "ppl", "ratio"],
        [[Cell(r["method"]), Cell(r["target"]), Cell(r.get("metric") or "–"), num(r["k"]),
          num(r.get("seed")), num(r["ppl"]), num(r["ppl_ratio"])]
         for r in doc.get("perturbation") or []], frozenset({3, 4, 5, 6})))
    halves = (doc.get("stability") or {}).get("halves") or {}
    rows = [[Cell(m), num(v.get("jaccard")), num(v.get("spearman"))]
            for m, v in halves.items() if isinstance(v, Mapping)]
    if rows:
        blocks.append(Table(
            "sens-stability", "Stability across the two halves of the text: Jaccard@k of the "
            "top-k weights, Spearman of the per-tensor totals", ["metric", "Jaccard@k",
                                                                "Spearman"], rows,
            frozenset({1, 2})))
    return Section("sensitivity", "Sensitivity", blocks)
