"""The `wstui.track/1` document and its long CSV (docs/schemas/track.md).

One list entry per step in every series (`null` where a value is absent); x is `steps[i].step`,
never the index. A tensor that a step left unchanged carries the previous step's values
(`analyzed[i]` is false there) and a change of 0 against the previous step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wstui._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from wstui.engine.track import Outcome, Plan, Settings

SCHEMA = "wstui.track/1"

#: series name -> (analyzer, metric key) of the scan results
SCAN_SERIES = {
    "alpha": ("spectral", "alpha"),
    "stable_rank": ("spectral", "stable_rank"),
    "spectral_norm": ("spectral", "sv_max"),
    "effective_rank": ("spectral", "effective_rank"),
    "log_norm": ("spectral", "log_norm"),
    "alpha_weighted": ("spectral", "alpha_weighted"),
    "l2_norm": ("stats", "l2_norm"),
    "kurtosis": ("stats", "kurtosis"),
}
#: series always present (null-filled when their analyzer did not run)
REQUIRED = ("alpha", "stable_rank", "spectral_norm", "rel_change_prev", "rel_change_first")
CSV_COLUMNS = ("step", "tensor", "metric", "value")


def build(plan: Plan, st: Settings, out: Outcome) -> dict[str, Any]:
    from wstui.documents.numbers import median

    n_steps = len(plan.steps)
    scan_series = [k for k, (a, _) in SCAN_SERIES.items() if a in st.scan_methods]
    change_series = ["rel_change_prev", "rel_change_first"] + (
        ["delta_energy_rank_prev", "delta_energy_rank_first"] if st.delta else [])
    metrics = list(dict.fromkeys([*REQUIRED[:3], *scan_series, *change_series]))
    tensors = []
    n_analyzed = n_reused = 0
    for name in plan.names:
        ref0 = plan.ref(0, name)
        chain = out.chains[name]
        series: dict[str, list[Any]] = {k: [None] * n_steps for k in metrics}
        analyzed, findings, errors = [], [], []
        result = None
        for i, change in enumerate(chain):
            step = plan.steps[i].step
            fresh = not change.get("same") and "error" not in change
            analyzed.append(fresh)
            n_analyzed += fresh
            n_reused += bool(change.get("same"))
            for key in change_series:
                series[key][i] = change.get(key)
            if "error" in change:
                errors.append({"step": step, "analyzer": "change", "message": change["error"]})
                result = None
                continue
            if fresh:
                result = out.scans.get((i, name))
                if result is not None:
                    errors += [{"step": step, "analyzer": a, "message": m}
                               for a, m in result.errors.items()]
            if result is None:
                continue
            for key in scan_series:
                analyzer, mkey = SCAN_SERIES[key]
                series[key][i] = result.metrics.get(analyzer, {}).get(mkey)
            findings += [{"step": step, **f.to_dict()} for f in result.findings]
        entry = {"name": name, "hf_name": ref0.hf_name, "kind": ref0.kind, "block": ref0.block,
                 "shape": [int(s) for s in ref0.shape], "analyzed": analyzed, "series": series,
                 "findings": findings}
        if errors:
            entry["errors"] = errors
        tensors.append(entry)
    return {
        "schema": SCHEMA,
        "wstui_version": __version__,
        "methods": [*st.scan_methods, *(["delta"] if st.delta else [])],
        "device": st.device,
        "steps": [{"step": s.step, "path": str(s.path)} for s in plan.steps],
        "checkpoint": plan.ckpts[0].summary(),
        "metrics": metrics,
        "tensors": tensors,
        "by_kind": by_kind(tensors, metrics, n_steps, lambda v: median(v, finite=True)),
        "counts": {"tensors": len(tensors), "steps": n_steps, "analyzed": n_analyzed,
                   "unchanged": n_reused},
    }


def by_kind(tensors: list[dict[str, Any]], metrics: list[str], n_steps: int,
            median: Any) -> dict[str, dict[str, Any]]:
    """Per module kind (attn_q, attn_k, ..., mlp_down, ...): the median of each series at
    each step over that kind's tensors, and how many tensors it has."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for t in tensors:
        kinds.setdefault(t["kind"], []).append(t)
    out = {}
    for kind, group in kinds.items():
        row: dict[str, Any] = {"n_tensors": len(group)}
        for m in metrics:
            row[m] = [median([t["series"][m][i] for t in group]) for i in range(n_steps)]
        out[kind] = row
    return out


def records(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The long form: one row per (step, tensor, metric) with a value."""
    steps = [s["step"] for s in doc["steps"]]
    rows = []
    for t in doc["tensors"]:
        for metric, values in t["series"].items():
            for step, v in zip(steps, values):
                if v is not None and not (isinstance(v, float) and not math.isfinite(v)):
                    rows.append({"step": step, "tensor": t["name"], "metric": metric,
                                 "value": v})
    return rows


def write_json(doc: Mapping[str, Any], target: str | Path) -> Path:
    from wstui import jsonio

    return jsonio.dump(dict(doc), target)


def write_csv(doc: Mapping[str, Any], target: str | Path) -> Path:
    from wstui import outfile

    return outfile.write_csv(target, records(doc), CSV_COLUMNS)
