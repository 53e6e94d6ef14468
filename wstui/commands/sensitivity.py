"""`wstui sensitivity PATH`: gradient/Hessian sensitivity, super weights and perturbation with
controls (DESIGN §5 "sensitivity"). Progress on stderr, a summary on stdout, JSON/CSV files."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from wstui.cli import EXIT_BAD_INPUT, EXIT_OK


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def write_csv(doc: dict[str, Any], path: str) -> None:
    """One row per tensor, through the one CSV writer (atomic, formula cells guarded)."""
    from wstui.documents.sensitivity import csv_rows
    from wstui.outfile import write_csv as write_rows

    rows = csv_rows(doc)
    write_rows(path, rows, list(rows[0]) if rows else ["name"])


def print_summary(doc: dict[str, Any], *, stderr: bool = False) -> None:
    """Perplexity, the most sensitive tensors, the super weights, the perturbation table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from wstui.render import plain  # names and paths from files shown as text (DESIGN §10)

    out = Console(stderr=stderr)
    t = doc["text"]
    out.print(plain(f"{doc['checkpoint']['path']}: perplexity {_fmt(doc['perplexity'], '.3f')} "
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
                    *[_fmt(r.get(m)) for m in doc["settings"]["metrics"]])
    out.print(tab)
    sw = Table(title="Super weights (zeroed one at a time)", title_justify="left",
               box=box.SIMPLE_HEAD)
    for col in ("tensor", "row", "col", "value", "act_in", "act_out", "ppl zeroed", "ratio"):
        sw.add_column(col, justify="left" if col == "tensor" else "right")
    for s in doc["super_weights"]:
        sw.add_row(plain(s["tensor"]), str(s["row"]), str(s["col"]), _fmt(s["value"]),
                   _fmt(s["act_in"]), _fmt(s["act_out"]), _fmt(s["ppl_zeroed"], ".4g"),
                   _fmt(s["ppl_ratio"]))
    if doc["super_weights"]:
        out.print(sw)
    else:
        out.print("No super weight: no down-projection output spike above "
                  f"{doc['settings']['spike_ratio']:g}x the median over layers.")
    pt = Table(title=f"Perturbation (perplexity before: {_fmt(doc['perplexity'], '.4g')})",
               title_justify="left", box=box.SIMPLE_HEAD)
    cols = ["method", "target", "metric", "k", "seed", "ppl", "ratio"]
    has_acc = any("accuracy" in r for r in doc["perturbation"])
    if has_acc:
        cols.append("accuracy")
    for col in cols:
        pt.add_column(col, justify="left" if col in ("method", "target", "metric") else "right")
    for r in doc["perturbation"]:
        cells = [r["method"], r["target"], r["metric"] or "", str(r["k"]),
                 "" if r["seed"] is None else str(r["seed"]), _fmt(r["ppl"], ".4g"),
                 _fmt(r["ppl_ratio"])]
        if has_acc:
            cells.append(_fmt(r.get("accuracy"), ".3f"))
        pt.add_row(*cells)
    out.print(pt)
    halves = doc["stability"].get("halves")
    if halves:
        out.print("Stability across the two text halves (Jaccard@k of the top-k, Spearman of "
                  "per-tensor totals): " + "; ".join(
                      f"{m} {_fmt(v['jaccard'], '.2f')} / {_fmt(v['spearman'], '.2f')}"
                      for m, v in halves.items() if isinstance(v, dict)))


def run(args: argparse.Namespace) -> int:
    from wstui import jsonio
    from wstui.commands.scan import print_problems, write_outputs
    from wstui.engine.sensitivity import check_options, sensitivity_document
    from wstui.outfile import is_stdout
    from wstui.render import visible

    opts = dict(text=args.text, tokens=args.tokens, metrics=args.metrics, probes=args.probes,
                topk=args.topk, mode=args.mode, perturb=args.perturb, scale=args.scale,
                controls=args.controls, seeds=args.seeds, eval_file=args.eval,
                device=args.device, stability=not args.no_stability,
                static=not args.no_static, use_cache=not args.no_cache)
    try:
        check_options(metrics=args.metrics, mode=args.mode, perturb=args.perturb,
                      controls=args.controls, seeds=args.seeds, topk=args.topk,
                      probes=args.probes, tokens=args.tokens, scale=args.scale)
    except ValueError as exc:
        print(f"wstui: {visible(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"wstui: {visible(msg)}", file=sys.stderr, flush=True)

    doc = sensitivity_document(args.path, progress=progress, **opts)
    failed = write_outputs((args.json, lambda f: jsonio.dump(doc, f)),
                           (args.csv, lambda f: write_csv(doc, f)))
    if not args.quiet:
        print_summary(doc, stderr=is_stdout(args.json) or is_stdout(args.csv))
    print_problems(failed)
    return EXIT_BAD_INPUT if failed else EXIT_OK
