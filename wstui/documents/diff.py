"""The diff document: a DiffReport as `wstui.diff/1` JSON (DESIGN §8), its summary per module
kind and block, flat records and CSV."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analyzers.core import to_plain
from wstui import jsonio
from wstui._version import __version__
from wstui.documents.numbers import median

#: a `wstui.engine.diff.DiffReport` and a `wstui.engine.matching.DiffPair` (documents read
#: them, they never import the engine)
DiffReport = Any
DiffPair = Any

DIFF_SCHEMA = "wstui.diff/1"
#: rel_change above this counts a pair as "changed" in the summaries
CHANGED_REL = 1e-6
COMPARE_KEYS = ("l2_distance", "rel_change", "cosine", "max_abs_diff", "frac_changed",
                "delta_stable_rank", "delta_energy_rank_90", "alpha_a", "alpha_b", "delta_alpha")
CSV_COLUMNS = ("rank", "name", "name_b", "hf_name", "kind", "block", "shape", "dtype_a",
               "dtype_b", *COMPARE_KEYS, "findings", "note", "error")


def _group_summary(pairs: Sequence[DiffPair]) -> dict[str, Any]:
    rel = [(p.rel_change, p) for p in pairs if p.rel_change is not None
           and math.isfinite(p.rel_change)]
    ranks = [float(p.compare["delta_energy_rank_90"]) for p in pairs
             if p.compare.get("delta_energy_rank_90") and (p.rel_change or 0) > CHANGED_REL]
    best = max(rel, key=lambda t: t[0]) if rel else None
    top = best[1].name if best is not None and best[0] > CHANGED_REL else None
    return {
        "n": len(pairs),
        "n_changed": sum(1 for r, _ in rel if r > CHANGED_REL),
        "mean_rel_change": sum(r for r, _ in rel) / len(rel) if rel else None,
        "max_rel_change": max((r for r, _ in rel), default=None),
        "median_delta_energy_rank_90": median(ranks),
        "most_changed": top,
    }


def summarize(pairs: Sequence[DiffPair]) -> dict[str, list[dict[str, Any]]]:
    """Per module kind and per block: how many changed, mean/max rel_change, median
    `delta_energy_rank_90` of the changed ones (low: a LoRA of that rank holds the change).
    Each list is sorted by max rel_change, most moved first."""
    by_kind: dict[str, list[DiffPair]] = {}
    by_block: dict[int | None, list[DiffPair]] = {}
    for p in pairs:
        by_kind.setdefault(p.a.kind, []).append(p)
        by_block.setdefault(p.a.block, []).append(p)

    def order(row: dict[str, Any]) -> float:
        return -(row["max_rel_change"] or 0.0)

    kinds = sorted(({"kind": k, **_group_summary(v)} for k, v in by_kind.items()), key=order)
    blocks = sorted(({"block": k, **_group_summary(v)} for k, v in by_block.items()), key=order)
    return {"by_kind": kinds, "by_block": blocks}


def pair_json(p: DiffPair) -> dict[str, Any]:
    r = p.result
    return {
        "name": p.a.name, "name_b": p.b.name, "hf_name": p.a.hf_name, "kind": p.a.kind,
        "block": p.a.block, "shape": list(p.shape), "dtype_a": p.a.dtype, "dtype_b": p.b.dtype,
        "note": p.note, "metrics": {"compare": to_plain(r.metrics.get("compare", {}))},
        "findings": [f.to_dict() for f in r.findings],
        "errors": [{"analyzer": a, "message": m} for a, m in r.errors.items()],
        "skipped": dict(r.skipped),
    }


def diff_json(report: DiffReport) -> dict[str, Any]:
    """The `wstui.diff/1` document (strict: non-finite numbers are None)."""
    return jsonio.strict({
        "schema": DIFF_SCHEMA, "wstui_version": __version__, "a": report.a, "b": report.b,
        "device": report.device, "elapsed_s": report.elapsed_s, "complete": report.complete,
        "spectral": report.spectral,
        "pairs": [pair_json(p) for p in report.pairs],
        "only_in_a": list(report.only_in_a), "only_in_b": list(report.only_in_b),
        "shape_mismatch": list(report.shape_mismatch),
        "summary": summarize(report.pairs),
        "top_issues": [i.to_dict() for i in report.top_issues],
    })


def write_json(report: DiffReport, path: str | Path) -> Path:
    """The document, written atomically (`-`: stdout)."""
    return jsonio.dump(diff_json(report), path)


def records(report: DiffReport) -> list[dict[str, Any]]:
    """One flat row per pair, most changed first (the CSV rows)."""
    out = []
    for i, p in enumerate(report.pairs, 1):
        c = p.compare
        err = "; ".join(f"{a}: {m}" for a, m in {**p.result.errors}.items())
        out.append({
            "rank": i, "name": p.a.name, "name_b": p.b.name, "hf_name": p.a.hf_name,
            "kind": p.a.kind, "block": p.a.block, "shape": "x".join(str(s) for s in p.shape),
            "dtype_a": p.a.dtype, "dtype_b": p.b.dtype,
            **{k: c.get(k) for k in COMPARE_KEYS},
            "findings": ";".join(f.code for f in p.result.findings),
            "note": p.note or p.result.skipped.get("compare"), "error": err or None,
        })
    return out


def write_csv(report: DiffReport, path: str | Path) -> Path:
    """One row per pair; non-finite numbers are empty cells (as null in the JSON)."""
    from wstui import outfile

    rows = ({k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in r.items()} for r in records(report))
    return outfile.write_csv(path, rows, list(CSV_COLUMNS))
