"""`wstui scan`: headless scan with a progress bar on stderr and rich tables on stdout."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from wstui.cli import EXIT_BAD_INPUT, EXIT_INTERRUPTED, exit_code

#: how long Ctrl-C waits for running analyzers before reporting what is done
CANCEL_GRACE_S = 0.6


def _fail(msg: str) -> int:
    from wstui.render import visible

    print(f"wstui: {visible(msg)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def scan_options(args: argparse.Namespace) -> dict[str, Any]:
    """Engine options: the config file's [thresholds], then --threshold over them (both
    checked against the known codes; a bad config file raises ConfigError, a ValueError)."""
    from analyzers.core import DEFAULT_THRESHOLDS
    from wstui.config import load_config, merged_thresholds

    thresholds: dict[str, float] = {}
    for code, value in getattr(args, "threshold", None) or []:
        if code not in DEFAULT_THRESHOLDS:
            known = ", ".join(k for k in DEFAULT_THRESHOLDS if "." not in k)
            raise ValueError(f"unknown threshold code {code!r} (known: {known})")
        thresholds[code] = value
    thresholds = merged_thresholds(load_config(), thresholds)
    return {"thresholds": thresholds} if thresholds else {}


def checked_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options of a scan-like command, after the checks that need no checkpoint
    (threshold codes, output targets, --workers). Raises ValueError with a one-line reason."""
    from wstui import outfile

    options = scan_options(args)
    try:
        outfile.check_targets(json=getattr(args, "json", None), csv=getattr(args, "csv", None))
    except outfile.OutputError as exc:
        raise ValueError(str(exc)) from None
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    return options


def write_outputs(*writers: tuple[str | None, Any]) -> list[str]:
    """Run each (target, write) whose target is given; one line per failed write. A failure
    never stops the others nor the report printed after them."""
    from wstui import outfile

    failed: list[str] = []
    for target, write in writers:
        if target is None:
            continue
        try:
            write(target)
        except outfile.OutputError as exc:
            failed.append(str(exc))
    return failed


def report_console(args: argparse.Namespace) -> Any:
    """The console for the tables: stdout, or stderr when an output file is `-` (stdout then
    carries the file alone, so that `--json - | jq` works)."""
    from rich.console import Console

    from wstui.outfile import is_stdout

    if is_stdout(getattr(args, "json", None)) or is_stdout(getattr(args, "csv", None)):
        return Console(stderr=True)
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(width=None if wide else 160)


def cache_notices(engine: Any) -> list[str]:
    """What went wrong with the result cache, one line each (pending writes flushed first)."""
    lines = []
    if getattr(engine, "cache_error", None):
        lines.append(f"result cache not used: {engine.cache_error}")
    cache = getattr(engine, "cache", None)
    if cache is not None and hasattr(cache, "new_notices"):
        cache.flush()
        lines.extend(cache.new_notices())
    return lines


def print_problems(lines: list[str]) -> None:
    from wstui.render import visible

    for line in lines:
        print(f"wstui: {visible(line)}", file=sys.stderr)


def scan_engine(args: argparse.Namespace, ckpt: Any, options: dict[str, Any]) -> Any:
    """The ScanEngine (not started) that `--tensors`, `--methods`, `--device`, `--workers` and
    `--no-cache` ask for; a glob that matches nothing or an unknown method raises ValueError
    (one line)."""
    from wstui.checkpoint.select import select_tensors
    from wstui.engine.scan import ScanEngine, validate_methods

    tensors = select_tensors(ckpt.tensors, args.tensors)
    if not tensors:
        raise ValueError(f"{args.path}: no tensor matches {args.tensors!r}")
    return ScanEngine(ckpt, methods=validate_methods(args.methods), device=args.device,
                      workers=args.workers, use_cache=not args.no_cache, options=options,
                      tensors=tensors)


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

    # The checkpoint first: a bad path fails before the analyzers (and torch) are imported.
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        try:
            engine = scan_engine(args, ckpt, options)
        except ValueError as exc:
            return _fail(str(exc))
        interrupted = _drive(engine, show_progress=not args.quiet and sys.stderr.isatty())
        report = engine.report()

        def csv_writer(target: str) -> None:
            from wstui.documents.scan import write_csv

            write_csv(report, target)

        write_failed = write_outputs((args.json, report.to_json), (args.csv, csv_writer))
        if engine.error:
            print(f"wstui: scan failed: {visible(engine.error)}", file=sys.stderr)
        if not args.quiet:
            from wstui.report import print_report

            print_report(report, report_console(args), top=args.top_issues,
                         workers=engine.workers, cached=engine.progress().cached)
        print_problems(cache_notices(engine) + write_failed)
        n_failed = sum(1 for e in report.entries if e.result.errors)
        if n_failed and not interrupted:
            print(f"wstui: {n_failed} of {len(report.entries)} tensors failed to load or "
                  "analyze (their errors are in the report)", file=sys.stderr)
        if interrupted:
            n_done = sum(1 for e in report.entries if e.result.metrics)
            print(f"wstui: interrupted: {n_done} of {len(engine.refs)} tensors have results "
                  "(kept in the cache)", file=sys.stderr)
            if not engine.wait(0):
                _exit_now(EXIT_INTERRUPTED)
        findings = False
        if args.fail_on:
            from analyzers.core import Severity

            floor = Severity(args.fail_on).rank
            findings = any(i.finding.severity.rank >= floor for i in report.top_issues)
    return exit_code(interrupted=interrupted, bad=bool(engine.error or write_failed),
                     failed=n_failed > 0, findings=findings)


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
        from wstui.engine.progress import describe_eta
        from wstui.render import visible

        p = self.engine.progress()
        self.progress.update(
            self.task, completed=p.done, total=p.total or None,
            description=f"{getattr(self.engine, 'verb', 'scanning')} ({p.phase})",
            eta=describe_eta(p.eta_s),
            current=visible(p.current or "")[-60:],
        )

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
