"""`wstui quant PATH`: the quantization study as tables, JSON and CSV."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from wstui.checkpoint import open_checkpoint
from wstui.cli import EXIT_INTERRUPTED, exit_code
from wstui.render.quant import plan_table, summary_tables


def write_csv(doc: dict[str, Any], path: str) -> None:
    """The per-layer rows of the study, atomically (a kill mid-write keeps the old file)."""
    from wstui import outfile
    from wstui.documents.quant import csv_rows

    rows = csv_rows(doc)
    outfile.write_csv(path, rows, list(rows[0]) if rows else ["name"])


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from wstui import jsonio
    from wstui.checkpoint.select import select_tensors
    from wstui.commands.scan import (
        _drive,
        _exit_now,
        _fail,
        cache_notices,
        checked_options,
        print_problems,
        write_outputs,
    )
    from wstui.documents.quant import study_document
    from wstui.engine.study import study_engine
    from wstui.listing import print_notes
    from wstui.outfile import is_stdout
    from wstui.render import plain, visible

    try:
        checked_options(args)
    except ValueError as exc:
        return _fail(str(exc))
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        try:
            engine, spec = study_engine(
                ckpt, bits=args.bits, granularity=args.granularity, scheme=args.scheme,
                tensors=select_tensors(ckpt.tensors, args.tensors), device=args.device,
                workers=args.workers, use_cache=not args.no_cache,
            )
        except ValueError as exc:
            return _fail(f"bad quantization setting: {exc}")
        interrupted = _drive(engine, show_progress=not args.quiet and sys.stderr.isatty())
        report = engine.report()
        doc = study_document(ckpt, report, spec)
    write_failed = write_outputs((args.json, lambda target: jsonio.dump(doc, target)),
                                 (args.csv, lambda target: write_csv(doc, target)))
    if engine.error:
        print(f"wstui: quantization study failed: {engine.error}", file=sys.stderr)
    if not args.quiet:
        to_stdout = is_stdout(args.json) or is_stdout(args.csv)
        out = Console(stderr=to_stdout)  # stdout carries the `-` file alone
        note = " (GGUF: the study runs on the dequantized weights)" if doc["dequantized"] else ""
        path = visible(doc["checkpoint"]["path"])
        head = plain(f"{path}: {len(doc['layers'])} matrices, "
                     f"{doc['elapsed_s']:.1f} s on {doc['device']}{note}", highlight=True)
        head.stylize("bold", 0, len(path))
        out.print(head)
        for t in summary_tables(doc):
            out.print(t)
        out.print(plan_table(doc))
        if doc["skipped"]:
            out.print(plain(f"{len(doc['skipped'])} matrices skipped: " + "; ".join(
                f"{s['name']}: {s['reason']}" for s in doc["skipped"][:5]), highlight=True))
    print_problems(cache_notices(engine) + write_failed)
    n_failed = sum(1 for e in report.entries if e.result.errors)
    if n_failed and not interrupted:
        print(f"wstui: {n_failed} of {len(report.entries)} matrices failed to load or sweep "
              "(listed under skipped)", file=sys.stderr)
    if interrupted:
        print(f"wstui: interrupted: {len(doc['layers'])} matrices swept (kept in the cache)",
              file=sys.stderr)
        if not engine.wait(0):
            _exit_now(EXIT_INTERRUPTED)
    return exit_code(interrupted=interrupted, bad=bool(engine.error or write_failed),
                     failed=n_failed > 0)
