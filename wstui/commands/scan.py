"""`wstui scan PATH [--diff PATH_B]`: analyze a checkpoint (or compare two) headless.

Progress on stderr when it is a terminal; the tables on stdout (`wstui.render.scan`,
`wstui.render.diff`); `--json` writes `wstui.scan/1` (`wstui.diff/1` with --diff), `--csv`
one row per tensor (per pair).
"""

from __future__ import annotations

import argparse
from typing import Any

from wstui.commands import _args
from wstui.commands._run import (
    CsvTable,
    at_fail_on,
    checked_options,
    diff_engine,
    drive,
    exit_code,
    fail,
    finish,
    print_notes,
    print_problems,
    report_console,
    say,
    scan_engine,
    write_outputs,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Analyze a checkpoint headless: progress on stderr, top issues on stdout."
    p.add_argument("path", type=_args.path_arg)
    p.add_argument("--diff", metavar="PATH_B", type=_args.path_arg, default=None)
    p.add_argument("--json", metavar="FILE", default=None, help="`-`: stdout")
    p.add_argument("--csv", metavar="FILE", default=None, help="`-`: stdout")
    p.add_argument("--top-issues", type=_args.count(0), default=20, metavar="N")
    p.add_argument("--fail-on", choices=["info", "warn", "critical"], default=None)
    p.add_argument("--quiet", action="store_true", help="no progress, no tables")
    _args.add_scan_options(p)
    _args.add_hub_options(p)
    _args.add_cluster_option(p)


def run(args: argparse.Namespace) -> int:
    try:
        options = checked_options(args)
    except ValueError as exc:
        return fail(exc)
    if args.diff:
        if _args.cluster_address(args):
            return fail("--cluster does not run --diff (scan A and B on the cluster, then diff "
                        "here: the spectra come from the cache)")
        return run_diff(args, options)
    if _args.cluster_address(args):
        return run_cluster(args, options)
    return run_scan(args, options)


def scan_table(report: Any) -> CsvTable:
    """The scan's CSV: one row per tensor, flattened `<analyzer>.<key>` metric columns."""
    from wstui.documents.scan import csv_columns, records

    rows = records(report)
    return rows, csv_columns(rows, list(report.methods))


def diff_table(report: Any) -> CsvTable:
    """The diff's CSV: one row per pair, most changed first; non-finite numbers are empty
    cells, as they are null in the JSON."""
    from wstui import jsonio
    from wstui.documents.diff import CSV_COLUMNS, records

    return jsonio.strict(records(report)), list(CSV_COLUMNS)


def run_scan(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from wstui.checkpoint import open_checkpoint
    from wstui.render.scan import render

    # The checkpoint first: a bad path fails before the analyzers (and torch) are imported.
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        try:
            engine = scan_engine(args, ckpt, options)
        except ValueError as exc:
            return fail(exc)
        interrupted = drive(engine, quiet=args.quiet)
        report = engine.report()
        write_failed = write_outputs(args, document=report.to_dict,
                                     table=lambda: scan_table(report))
        if engine.error:
            say(f"scan failed: {engine.error}")
        if not args.quiet:
            console = report_console(args)
            console.print(render(report, top=args.top_issues, workers=engine.workers,
                                 cached=engine.progress().cached, width=console.width))
        n = len(report.entries)
        n_failed = sum(1 for e in report.entries if e.result.errors)
        n_done = sum(1 for e in report.entries if e.result.metrics)
        return finish(
            engine, interrupted=interrupted, write_failed=write_failed,
            failed_line=(f"{n_failed} of {n} tensors failed to load or analyze (their errors "
                         "are in the report)") if n_failed else None,
            interrupted_line=(f"interrupted: {n_done} of {len(engine.refs)} tensors have "
                              "results (kept in the cache)"),
            findings=at_fail_on(args, report.top_issues))


def run_diff(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from wstui.checkpoint import open_checkpoint
    from wstui.render.diff import render

    with open_checkpoint(args.path) as ckpt_a, open_checkpoint(args.diff) as ckpt_b:
        print_notes(ckpt_a)
        print_notes(ckpt_b)
        try:
            engine = diff_engine(args, ckpt_a, ckpt_b, options)
        except ValueError as exc:
            return fail(exc)
        interrupted = drive(engine, quiet=args.quiet)
        report = engine.report()
        write_failed = write_outputs(args, document=report.to_dict,
                                     table=lambda: diff_table(report))
        if not args.quiet:
            console = report_console(args)
            console.print(render(report, top=args.top_issues, workers=engine.workers,
                                 width=console.width))
        n = len(report.pairs)
        n_failed = sum(1 for p in report.pairs if p.result.errors)
        n_done = sum(1 for p in report.pairs if p.result.metrics)
        return finish(
            engine, interrupted=interrupted, write_failed=write_failed,
            failed_line=(f"{n_failed} of {n} pairs failed to load or compare (their errors "
                         "are in the report)") if n_failed else None,
            interrupted_line=f"interrupted: {n_done} of {n} pairs compared",
            findings=at_fail_on(args, report.top_issues))


def run_cluster(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """`wstui scan PATH --cluster ADDRESS`: the scan's tensor tasks on Ray (workers read the
    tensors from the shared path), the results into the local cache, the report as usual."""
    import time

    from analyzers.core import TensorResult
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.select import select_tensors
    from wstui.engine import track_work
    from wstui.engine.ray_exec import RayExecutor, import_ray, scan_cluster
    from wstui.engine.scan import ReportEntry, ScanReport
    from wstui.render.scan import render

    try:
        methods, delta = track_work.split_methods(args.methods)
        if delta or not methods:
            raise ValueError("scan --methods takes scan analyzers only")
        import_ray()
    except ValueError as exc:
        return fail(exc)
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        refs = select_tensors(ckpt.tensors, args.tensors)
        if not refs:
            return fail(f"{args.path}: no tensor matches {args.tensors!r}")
        t0 = time.perf_counter()
        try:
            with RayExecutor.connect(_args.cluster_address(args)) as ex:
                device = ex.resolve_device(args.device)
                todo = [r for r in refs if r.analyzable and not r.tied_to]
                results, cached = scan_cluster(ckpt, todo, methods=methods, options=options,
                                               device=device, use_cache=not args.no_cache,
                                               executor=ex)
        except ValueError as exc:
            return fail(exc)
        entries = []
        for r in refs:
            res = results.get(r.name)
            if res is None:  # not analyzable or tied: skipped as the local scan does
                res = TensorResult(name=r.name, kind=r.kind, shape=tuple(r.shape))
                why = r.note or f"{r.dtype} tensors are not analyzed"
                for m in methods:
                    res.skipped[m] = f"tied to {r.tied_to}" if r.tied_to else why
            entries.append(ReportEntry(r, res))
        report = ScanReport(checkpoint=ckpt.summary(), methods=list(methods), device=device,
                            elapsed_s=time.perf_counter() - t0, entries=entries, complete=True,
                            options=dict(options))
        write_failed = write_outputs(args, document=report.to_dict,
                                     table=lambda: scan_table(report))
        if not args.quiet:
            console = report_console(args)
            console.print(render(report, top=args.top_issues, workers=None, cached=cached,
                                 width=console.width))
        print_problems(write_failed)
        n_failed = sum(1 for e in report.entries if e.result.errors)
        if n_failed:
            say(f"{n_failed} of {len(report.entries)} tensors failed to load or analyze (their "
                "errors are in the report)")
    return exit_code(bad=bool(write_failed), failed=n_failed > 0,
                     findings=at_fail_on(args, report.top_issues))
