"""`wstui scan`: headless scan with a progress bar on stderr and rich tables on stdout."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from wstui.cli import EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_INTERRUPTED, EXIT_OK

#: how long Ctrl-C waits for running analyzers before reporting what is done
CANCEL_GRACE_S = 0.6


def _fail(msg: str) -> int:
    from wstui.render import visible

    print(f"wstui: {visible(msg)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def scan_options(args: argparse.Namespace) -> dict[str, Any]:
    """Engine options from --threshold (validated against the known codes)."""
    from analyzers.core import DEFAULT_THRESHOLDS

    thresholds: dict[str, float] = {}
    for code, value in getattr(args, "threshold", None) or []:
        if code not in DEFAULT_THRESHOLDS:
            known = ", ".join(k for k in DEFAULT_THRESHOLDS if "." not in k)
            raise ValueError(f"unknown threshold code {code!r} (known: {known})")
        thresholds[code] = value
    return {"thresholds": thresholds} if thresholds else {}


def _check_writable(path: str | None) -> None:
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise ValueError(f"{path}: directory {parent} does not exist")


def checked_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options of a scan-like command, after the checks that need no checkpoint
    (threshold codes, output folders, --workers). Raises ValueError with a one-line reason."""
    options = scan_options(args)
    _check_writable(getattr(args, "json", None))
    _check_writable(getattr(args, "csv", None))
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    return options


def run(args: argparse.Namespace) -> int:
    if args.diff:
        from wstui.commands.diff_report import run as run_diff

        return run_diff(args)
    try:
        options = checked_options(args)
    except ValueError as exc:
        return _fail(str(exc))

    from wstui.checkpoint import open_checkpoint
    from wstui.listing import print_notes
    from wstui.render import visible
    from wstui.scan import ScanEngine, select_tensors, validate_methods

    # The checkpoint first: a bad path fails before the analyzers (and torch) are imported.
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        tensors = select_tensors(ckpt.tensors, args.tensors)
        if not tensors:
            return _fail(f"{args.path}: no tensor matches {args.tensors!r}")
        try:
            methods = validate_methods(args.methods)
            engine = ScanEngine(ckpt, methods=methods, device=args.device,
                                workers=args.workers, use_cache=not args.no_cache,
                                options=options, tensors=tensors)
        except ValueError as exc:
            return _fail(str(exc))
        interrupted = _drive(engine, show_progress=not args.quiet and sys.stderr.isatty())
        report = engine.report()
        if args.json:
            report.to_json(args.json)
        if args.csv:
            from wstui.export import write_csv

            write_csv(report, args.csv)
        if engine.error:
            print(f"wstui: scan failed: {visible(engine.error)}", file=sys.stderr)
        if not args.quiet:
            from rich.console import Console

            from wstui.report import print_report

            wide = sys.stdout.isatty() or "COLUMNS" in os.environ
            console = Console(width=None if wide else 160)
            print_report(report, console, top=args.top_issues, workers=engine.workers,
                         cached=engine.progress().cached)
        if engine.cache_error and not args.quiet:
            print(f"wstui: result cache not used: {visible(engine.cache_error)}",
                  file=sys.stderr)
        if interrupted:
            n_done = sum(1 for e in report.entries if e.result.metrics)
            print(f"wstui: interrupted: {n_done} of {len(tensors)} tensors have results "
                  "(kept in the cache)", file=sys.stderr)
            if not engine.wait(0):
                _exit_now(EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        if engine.error:
            return EXIT_BAD_INPUT
        if args.fail_on:
            from analyzers.core import Severity

            floor = Severity(args.fail_on).rank
            if any(i.finding.severity.rank >= floor for i in report.top_issues):
                return EXIT_FINDINGS
    return EXIT_OK


def _exit_now(code: int) -> None:
    """Leave at once. An analyzer still inside LAPACK cannot be stopped, and a normal exit
    would wait for it in OpenMP's shutdown (seconds on a big matrix). Everything finished is
    already committed to the cache and the output files are written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _drive(engine: Any, *, show_progress: bool) -> bool:
    """Run the engine to the end; True when Ctrl-C cut it short."""
    progress = _ProgressBar(engine) if show_progress else None
    try:
        engine.start()
        if progress:
            progress.__enter__()
        while not engine.wait(0.1):
            if progress:
                progress.update()
        return False
    except KeyboardInterrupt:
        engine.cancel()
        with contextlib.suppress(KeyboardInterrupt):
            engine.wait(CANCEL_GRACE_S)
        return True
    finally:
        if progress:
            progress.__exit__(None, None, None)


class _ProgressBar:
    """rich Progress on stderr, fed by polling the engine (no cross-thread rendering)."""

    def __init__(self, engine: Any) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.engine = engine
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[current]}", style="dim", markup=False),
            console=Console(stderr=True), transient=True,
        )
        self.task = self.progress.add_task("scanning", total=None, eta="?", current="")

    def __enter__(self) -> _ProgressBar:
        self.progress.start()
        return self

    def update(self) -> None:
        from wstui.render import visible
        from wstui.scan import describe_eta

        p = self.engine.progress()
        self.progress.update(
            self.task, completed=p.done, total=p.total or None,
            description=f"{getattr(self.engine, 'verb', 'scanning')} ({p.phase})",
            eta=describe_eta(p.eta_s),
            current=visible(p.current or "")[-60:],
        )

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
