"""The sensitivity document: `wstui.sensitivity/1` from a study's parts, its summary (totals
by kind and depth, Spearman against the static metrics, blocks clustered by profile) and CSV
rows. The study itself runs as a model-scope task (`wstui.engine.sensitivity`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from analyzers import sensitivity as S
from wstui import jsonio
from wstui._version import __version__

SCHEMA = "wstui.sensitivity/1"
STATIC = ("alpha", "int8_sqnr_db", "stable_rank")


def build_document(parts: Mapping[str, Any], static: dict[str, dict[str, float | None]],
                   timings: dict[str, float]) -> dict[str, Any]:
    """The strict document from the study's `parts` (everything measured on the model) and
    the static metrics of its matrices (by HF name; empty when not asked for)."""
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "wstui_version": __version__,
        **{k: parts[k] for k in ("checkpoint", "device", "model", "settings", "text",
                                 "perplexity", "eval", "tensors", "topk", "super_weights",
                                 "massive_activations", "perturbation", "stability")},
        "summary": summarize(parts["tensors"], parts["settings"]["metrics"], static),
        "timings": timings,
    }
    return jsonio.strict(doc)


def massive(layers: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for r in layers:
        med = r["median"]
        rows.append({**r, "ratio": (r["top3"][0] / med) if med > 0 and r["top3"] else None})
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    return {"layers": rows, "max_ratio": max(ratios) if ratios else None}


def summarize(tensors: list[dict[str, Any]], metrics: Sequence[str],
             static: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Totals and per-weight means by kind and by depth, the Spearman matrix between the
    sensitivity metrics and the static ones over the matrices, and the blocks clustered by
    their sensitivity profile."""
    import numpy as np

    shown = [*metrics, "magnitude"] if "magnitude" not in metrics else list(metrics)

    def group(rows: list[dict[str, Any]]) -> dict[str, Any]:
        n = sum(r["numel"] for r in rows)
        g: dict[str, Any] = {"tensors": len(rows), "numel": n}
        for m in shown:
            vals = [r[m] for r in rows if r.get(m) is not None]
            tot = float(sum(vals)) if vals else None
            g[m] = {"total": tot, "mean": (tot / n) if tot is not None and n else None}
        return g

    by_kind: dict[str, list[dict[str, Any]]] = {}
    by_block: dict[int, list[dict[str, Any]]] = {}
    for r in tensors:
        by_kind.setdefault(r["kind"], []).append(r)
        if r["block"] is not None:
            by_block.setdefault(r["block"], []).append(r)
    out: dict[str, Any] = {
        "by_kind": {kind: group(rows) for kind, rows in sorted(by_kind.items())},
        "by_block": [{"block": b, **group(rows)} for b, rows in sorted(by_block.items())],
    }
    mats = [r for r in tensors if len(r["shape"]) == 2 and r["hf_name"] in static]
    spear: dict[str, dict[str, float | None]] = {}
    for m in shown:
        spear[m] = {}
        for s in STATIC:
            xs = [r[m] for r in mats]
            ys = [static[r["hf_name"]][s] for r in mats]
            pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
            spear[m][s] = S.spearman(*zip(*pairs)) if len(pairs) >= 3 else None
    out["static"] = {"static_metrics": list(STATIC), "n_matrices": len(mats), "spearman": spear,
                     "per_tensor": {r["hf_name"]: static[r["hf_name"]] for r in mats}}
    # blocks by their profile: log10 of the per-weight mean of each metric for each kind
    blocks = sorted(by_block)
    kinds = sorted({r["kind"] for b in blocks for r in by_block[b]
                    if len(r["shape"]) == 2})
    feats, names = [], []
    for m in shown:
        for kind in kinds:
            col = []
            for b in blocks:
                rows = [r for r in by_block[b] if r["kind"] == kind and r.get(m) is not None]
                n = sum(r["numel"] for r in rows)
                v = sum(r[m] for r in rows) / n if n else math.nan
                col.append(math.log10(v) if v > 0 else math.nan)
            if all(math.isfinite(c) for c in col):
                feats.append(col)
                names.append(f"{m}:{kind}")
    if feats and len(blocks) >= 3:
        cl = S.cluster_rows(np.asarray(feats, dtype=np.float64).T)
        out["clusters"] = {"k": cl["k"], "ch": cl["ch"], "features": names,
                           "blocks": [{"block": b, "cluster": lab}
                                      for b, lab in zip(blocks, cl["labels"])]}
    else:
        out["clusters"] = {"k": None, "ch": None, "features": names, "blocks": []}
    return out


def csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per tensor: identity, the per-tensor scores, and the static metrics if any."""
    static = doc["summary"].get("static", {}).get("per_tensor", {})
    rows = []
    for t in doc["tensors"]:
        row = {k: t.get(k) for k in ("name", "hf_name", "kind", "block")}
        row["shape"] = "x".join(str(s) for s in t["shape"])
        row["numel"] = t["numel"]
        for m in (*S.METRICS, "hutchinson_stderr"):
            row[m] = t.get(m)
        for s in STATIC:
            row[s] = static.get(t["hf_name"], {}).get(s)
        rows.append(row)
    return rows
