"""`wstui track CKPT... | DIR`: a training run's checkpoints as one series (`wstui.track/1`)."""

from __future__ import annotations

import argparse
import sys

from wstui.commands import _args
from wstui.commands._run import checked_options, exit_code, fail, print_problems, say, write_outputs


def add_arguments(p: argparse.ArgumentParser) -> None:
    from wstui.checkpoint.series import ORDERS

    p.description = ("A training run's checkpoints as one series: per tensor and step alpha, "
                     "stable rank, spectral norm, the change against the previous and the "
                     "first step, and the findings; per module kind the medians. A tensor a "
                     "step left unchanged is analyzed once.")
    p.add_argument("paths", nargs="+", type=_args.path_arg, metavar="CKPT",
                   help="checkpoints (folders or weight files), or one folder holding them")
    p.add_argument("--order", choices=ORDERS, default="step",
                   help="step: by the number in the names (checkpoint-1000, step_2000, "
                        "epoch-3); name, mtime, or given: as listed")
    p.add_argument("--methods", type=_args.csv_list, default=None,
                   help="scan analyzers, plus 'delta' for the spectrum of ΔW (its energy rank"
                        "; two more spectra per changed tensor) (default: stats,spectral)")
    p.add_argument("--json", metavar="FILE", default=None, help="wstui.track/1 (`-`: stdout)")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="long form: step,tensor,metric,value (`-`: stdout)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--workers", type=_args.count(1), default=None,
                   help="worker threads (default: cores)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--quiet", action="store_true", help="no progress, no table")
    p.add_argument("--app", action="store_true",
                   help="open the run in the app instead (series mode: the latest checkpoint, "
                   "a Series tab, [ and ] move between the steps)")
    _args.add_cluster_option(p)


def run(args: argparse.Namespace) -> int:
    from wstui.documents.track import CSV_COLUMNS, records
    from wstui.engine.track import track

    args.threshold = getattr(args, "threshold", [])
    try:
        options = checked_options(args)
    except ValueError as exc:
        return fail(exc)
    if args.app:
        return open_in_app(args, options)
    show = not args.quiet and sys.stderr.isatty()

    def progress(msg: str) -> None:
        if show:
            say(msg)

    try:
        doc = track(args.paths, order=args.order, methods=args.methods, device=args.device,
                    workers=args.workers, use_cache=not args.no_cache, options=options,
                    cluster=_args.cluster_address(args), progress=progress)
    except ValueError as exc:  # an option, or the cluster (one line)
        return fail(exc)
    failed = write_outputs(args, document=lambda: doc,
                           table=lambda: (records(doc), list(CSV_COLUMNS)))
    if not args.quiet:
        from wstui.commands._run import report_console
        from wstui.render.track import print_table

        print_table(doc, report_console(args))
    print_problems(failed)
    n_err = sum(1 for t in doc["tensors"] if t.get("errors"))
    if n_err:
        say(f"{n_err} of {len(doc['tensors'])} tensors failed at some step (their errors are "
            "in the JSON)")
    return exit_code(bad=bool(failed), failed=n_err > 0)


def open_in_app(args: argparse.Namespace, options: dict[str, object]) -> int:
    """`--app`: the app in series mode, launched as `wstui CKPT...` launches it (the one
    command besides `wstui demo` that starts the app, through its launcher)."""
    from wstui.commands.app import app_keymap, open_series

    if args.json or args.csv:
        return fail("--app opens the app; --json and --csv write the headless run's files "
                    "(use one or the other)")
    try:
        keymap = app_keymap()
        cluster = _args.cluster_address(args)
    except ValueError as exc:
        return fail(exc)
    return open_series(args.paths, order=args.order, track_methods=args.methods,
                       device=args.device, workers=args.workers, use_cache=not args.no_cache,
                       thresholds=options.get("thresholds"),  # type: ignore[arg-type]
                       keymap=keymap, cluster=cluster)
