"""`wstui quant PATH`: the quantization study (`wstui.quant/1`) as tables (`wstui.render.quant`),
JSON and CSV (one row per layer and setting)."""

from __future__ import annotations

import argparse
from typing import Any

from wstui.commands import _args
from wstui.commands._run import (
    CsvTable,
    checked_options,
    drive,
    fail,
    finish,
    print_notes,
    report_console,
    rows_table,
    say,
    write_outputs,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Quantization study: per-layer alpha and SQNR under fake quantization."
    p.add_argument("path", type=_args.path_arg)
    p.add_argument("--bits", type=_args.int_list, default=[8, 6, 5, 4, 3, 2])
    p.add_argument("--granularity", type=_args.csv_list, default=["tensor", "channel", "group128"])
    p.add_argument("--scheme", type=_args.csv_list, default=["sym"])
    p.add_argument("--json", metavar="FILE", default=None, help="`-`: stdout")
    p.add_argument("--csv", metavar="FILE", default=None, help="`-`: stdout")
    p.add_argument("--quiet", action="store_true")
    _args.add_scan_options(p)
    _args.add_hub_options(p)


def study_table(doc: dict[str, Any]) -> CsvTable:
    """The study's CSV: one row per layer and setting."""
    from wstui.documents.quant import csv_rows

    return rows_table(csv_rows(doc))


def run(args: argparse.Namespace) -> int:
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.select import select_tensors
    from wstui.documents.quant import study_document
    from wstui.engine.study import study_engine
    from wstui.render.quant import render

    try:
        checked_options(args)
    except ValueError as exc:
        return fail(exc)
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        try:
            engine, spec = study_engine(
                ckpt, bits=args.bits, granularity=args.granularity, scheme=args.scheme,
                tensors=select_tensors(ckpt.tensors, args.tensors), device=args.device,
                workers=args.workers, use_cache=not args.no_cache,
            )
        except ValueError as exc:
            return fail(f"bad quantization setting: {exc}")
        interrupted = drive(engine, quiet=args.quiet)
        report = engine.report()
        doc = study_document(ckpt, report, spec)
    write_failed = write_outputs(args, document=lambda: doc, table=lambda: study_table(doc))
    if engine.error:
        say(f"quantization study failed: {engine.error}")
    if not args.quiet:
        console = report_console(args, width=None)
        for part in render(doc):
            console.print(part)
    n = len(report.entries)
    n_failed = sum(1 for e in report.entries if e.result.errors)
    return finish(
        engine, interrupted=interrupted, write_failed=write_failed,
        failed_line=(f"{n_failed} of {n} matrices failed to load or sweep (listed under "
                     "skipped)") if n_failed else None,
        interrupted_line=f"interrupted: {len(doc['layers'])} matrices swept (kept in the cache)")
