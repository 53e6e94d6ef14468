"""`wstui track`: a training run's checkpoints as one series; and `wstui scan --cluster`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from wstui.cli import EXIT_BAD_INPUT, _count, _csv_list, _path, exit_code

#: steps shown in the terminal table (evenly picked, first and last kept)
MAX_COLUMNS = 8


def _fail(msg: str) -> int:
    from wstui.render import visible

    print(f"wstui: {visible(msg)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cluster_address(args: argparse.Namespace) -> str | None:
    """`--cluster ADDRESS`, else `RAY_ADDRESS` from the environment, else None (local)."""
    return getattr(args, "cluster", None) or os.environ.get("RAY_ADDRESS") or None


def add_cluster_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run the tasks on this Ray cluster (default: $RAY_ADDRESS when set, "
                        "else here); needs pip install 'wstui[ray]'")


def configure(p: argparse.ArgumentParser) -> None:
    """The options of `wstui track` on its parser."""
    from wstui.track.series import ORDERS

    p.description = ("A training run's checkpoints as one series: per tensor and step alpha, "
                     "stable rank, spectral norm, the change against the previous and the "
                     "first step, and the findings; per module kind the medians. A tensor a "
                     "step left unchanged is analyzed once.")
    p.add_argument("paths", nargs="+", type=_path, metavar="CKPT",
                   help="checkpoints (folders or weight files), or one folder holding them")
    p.add_argument("--order", choices=ORDERS, default="step",
                   help="step: by the number in the names (checkpoint-1000, step_2000, "
                        "epoch-3); name, mtime, or given: as listed")
    p.add_argument("--methods", type=_csv_list, default=None,
                   help="scan analyzers, plus 'delta' for the spectrum of ΔW (its energy rank"
                        "; two more spectra per changed tensor) (default: stats,spectral)")
    p.add_argument("--json", metavar="FILE", default=None, help="wstui.track/1 (`-`: stdout)")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="long form: step,tensor,metric,value (`-`: stdout)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--workers", type=_count(1), default=None,
                   help="worker threads (default: cores)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--quiet", action="store_true", help="no progress, no table")
    add_cluster_option(p)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`wstui track` on an argparse subparsers object."""
    p = subparsers.add_parser("track", help="a training run's checkpoints as one series")
    configure(p)
    p.set_defaults(command="track")
    return p


def run(args: argparse.Namespace) -> int:
    if args.command == "scan":
        return run_scan(args)
    from wstui.commands.scan import checked_options, print_problems, write_outputs
    from wstui.track.document import write_csv, write_json
    from wstui.track.run import track

    args.threshold = getattr(args, "threshold", [])
    try:
        options = checked_options(args)
    except ValueError as exc:
        return _fail(str(exc))
    show = not args.quiet and sys.stderr.isatty()

    def progress(msg: str) -> None:
        if show:
            print(f"wstui track: {msg}", file=sys.stderr)

    try:
        doc = track(args.paths, order=args.order, methods=args.methods, device=args.device,
                    workers=args.workers, use_cache=not args.no_cache, options=options,
                    cluster=cluster_address(args), progress=progress)
    except ValueError as exc:  # an option, or the cluster (one line)
        return _fail(str(exc))
    failed = write_outputs((args.json, lambda t: write_json(doc, t)),
                           (args.csv, lambda t: write_csv(doc, t)))
    if not args.quiet:
        from wstui.commands.scan import report_console

        print_table(doc, report_console(args))
    print_problems(failed)
    n_err = sum(1 for t in doc["tensors"] if t.get("errors"))
    if n_err:
        print(f"wstui: {n_err} of {len(doc['tensors'])} tensors failed at some step "
              "(their errors are in the JSON)", file=sys.stderr)
    return exit_code(bad=bool(failed), failed=n_err > 0)


def _picks(n: int, limit: int = MAX_COLUMNS) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def print_table(doc: dict[str, Any], console: Any) -> None:
    """Per module kind the median alpha and change against the first step, at up to
    `MAX_COLUMNS` steps; then one line of counts."""
    from rich.table import Table

    from wstui.render import visible

    steps = doc["steps"]
    cols = _picks(len(steps))
    table = Table(title="median per module kind (x: step)", title_justify="left")
    table.add_column("kind", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for i in cols:
        table.add_column(str(steps[i]["step"]), justify="right")
    for kind, row in doc["by_kind"].items():
        for metric in ("alpha", "stable_rank", "rel_change_first"):
            values = row.get(metric) or []
            if not any(v is not None for v in values):
                continue
            table.add_row(visible(kind), metric,
                          *["-" if values[i] is None else f"{values[i]:.3g}" for i in cols])
    console.print(table)
    c, run = doc["counts"], doc.get("run", {})
    where = f" on {visible(run.get('address'))}" if run.get("executor") == "ray" else ""
    console.print(f"{c['tensors']} tensors x {c['steps']} steps: {c['analyzed']} analyzed, "
                  f"{c['unchanged']} unchanged (taken from the step before){where}, "
                  f"{run.get('elapsed_s', 0.0):.1f} s", markup=False, highlight=False)


# --------------------------------------------------------------------------- scan --cluster
def run_scan(args: argparse.Namespace) -> int:
    """`wstui scan PATH --cluster ADDRESS`: the scan's tasks on Ray, the report as usual."""
    from wstui.commands.scan import (
        cache_notices,
        checked_options,
        print_problems,
        report_console,
        write_outputs,
    )

    if args.diff:
        return _fail("--cluster does not run --diff (scan A and B on the cluster, then diff "
                     "here: the spectra come from the cache)")
    try:
        options = checked_options(args)
        from wstui.track import work

        methods, delta = work.split_methods(args.methods)
        if delta or not methods:
            raise ValueError("scan --methods takes scan analyzers only")
        from wstui.track.ray_exec import import_ray

        import_ray()
    except ValueError as exc:
        return _fail(str(exc))

    from wstui.checkpoint import open_checkpoint
    from wstui.listing import print_notes
    from wstui.scan import ReportEntry, ScanReport, select_tensors

    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        refs = select_tensors(ckpt.tensors, args.tensors)
        if not refs:
            return _fail(f"{args.path}: no tensor matches {args.tensors!r}")
        t0 = time.perf_counter()
        try:
            from wstui.track.ray_exec import RayExecutor, scan_cluster

            with RayExecutor.connect(cluster_address(args)) as ex:
                device = ex.resolve_device(args.device)
                todo = [r for r in refs if r.analyzable and not r.tied_to]
                results, cached = scan_cluster(ckpt, todo, methods=methods, options=options,
                                               device=device, use_cache=not args.no_cache,
                                               executor=ex)
        except ValueError as exc:
            return _fail(str(exc))
        entries = []
        from analyzers.core import TensorResult

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

        def csv_writer(target: str) -> None:
            from wstui.export import write_csv

            write_csv(report, target)

        failed = write_outputs((args.json, report.to_json), (args.csv, csv_writer))
        if not args.quiet:
            from wstui.report import print_report

            print_report(report, report_console(args), top=args.top_issues, workers=None,
                         cached=cached)
        print_problems(cache_notices(None) + failed)
        n_failed = sum(1 for e in report.entries if e.result.errors)
        findings = False
        if args.fail_on:
            from analyzers.core import Severity

            floor = Severity(args.fail_on).rank
            findings = any(i.finding.severity.rank >= floor for i in report.top_issues)
    return exit_code(bad=bool(failed), failed=n_failed > 0, findings=findings)
