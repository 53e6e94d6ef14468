"""`wstui sensitivity PATH`: gradient/Hessian sensitivity, super weights and perturbation with
controls (DESIGN §5 "sensitivity"). Progress on stderr, a summary on stdout, JSON/CSV files."""

from __future__ import annotations

import argparse
from typing import Any

from wstui.commands import _args
from wstui.commands._run import (
    CsvTable,
    exit_code,
    fail,
    print_problems,
    report_console,
    rows_table,
    say,
    write_outputs,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Which weights the model depends on: gradient and Hessian scores on a "
                     "calibration text, super weights, perturbation against random and "
                     "bottom-k controls (needs a causal LM with config and tokenizer).")
    p.add_argument("path")
    p.add_argument("--text", metavar="FILE", default=None,
                   help="calibration text (default: the one shipped with wstui)")
    p.add_argument("--tokens", type=int, default=512, metavar="N")
    p.add_argument("--metrics", type=_args.csv_list, default=["grad_x_weight", "fisher", "wanda"],
                   help="grad_x_weight,fisher,wanda,hutchinson,magnitude")
    p.add_argument("--probes", type=int, default=8, metavar="N",
                   help="Rademacher probes per seed for hutchinson")
    p.add_argument("--topk", type=int, default=100, metavar="K")
    p.add_argument("--mode", default="global", help="global, layerwise or head")
    p.add_argument("--perturb", type=_args.csv_list, default=["zero"],
                   help="zero,sign_flip,gauss,bit_flip")
    p.add_argument("--scale", type=float, default=1.0,
                   help="gauss: noise std in units of the tensor's std")
    p.add_argument("--controls", type=_args.csv_list, default=["random_k", "bottom_k"])
    p.add_argument("--seeds", type=_args.int_list, default=[0, 1, 2])
    p.add_argument("--eval", metavar="FILE", default=None,
                   help="JSONL: ctx/endings/label (multiple choice) or text (last word)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--json", metavar="FILE", default=None)
    p.add_argument("--csv", metavar="FILE", default=None)
    p.add_argument("--no-stability", action="store_true",
                   help="skip the two text halves (two more backward passes)")
    p.add_argument("--no-static", action="store_true",
                   help="skip alpha / int8 SQNR / stable rank for the summary")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress, no tables")
    _args.add_hub_options(p)


def study_table(doc: dict[str, Any]) -> CsvTable:
    """The study's CSV: one row per tensor (identity, scores, static metrics)."""
    from wstui.documents.sensitivity import csv_rows

    return rows_table(csv_rows(doc))


def run(args: argparse.Namespace) -> int:
    from wstui.engine.sensitivity import check_options, sensitivity_document
    from wstui.render.sensitivity import summary

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
        return fail(exc)

    def progress(msg: str) -> None:
        if not args.quiet:
            say(msg)

    doc = sensitivity_document(args.path, progress=progress, **opts)
    failed = write_outputs(args, document=lambda: doc, table=lambda: study_table(doc))
    if not args.quiet:
        console = report_console(args, width=None)
        for part in summary(doc):
            console.print(part)
    print_problems(failed)
    return exit_code(bad=bool(failed))
