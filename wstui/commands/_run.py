"""What the commands share, below all of them: the exit codes, the options every scan-like
command checks, building the scan and diff engines from them, driving an engine with its
progress on stderr (Ctrl-C keeps what is done), writing `--json`/`--csv`, the tail that
reports problems and picks the exit code, and opening the app (`wstui PATH`, `wstui demo`).

No command imports another command; each imports this module. Nothing heavy is imported at
module level (torch and the analyzers load inside the functions that need them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: some tensors could not be loaded or analyzed (the rest of the report is there)
EXIT_TENSORS_FAILED = 3

#: how long Ctrl-C waits for running analyzers before reporting what is done
CANCEL_GRACE_S = 0.6

#: a CSV table: its rows (dicts; missing keys and None are empty cells) and its columns
CsvTable = tuple[Iterable[Mapping[str, Any]], Sequence[str]]


def exit_code(*, interrupted: bool = False, bad: bool = False, failed: bool = False,
              findings: bool = False) -> int:
    """One exit code when several things went wrong: 130 interrupted, then 2 bad input or an
    output that could not be written, then 3 tensors failed, then 1 findings at --fail-on.
    The most serious one wins: each later one is less certain to be complete or right."""
    if interrupted:
        return EXIT_INTERRUPTED
    if bad:
        return EXIT_BAD_INPUT
    if failed:
        return EXIT_TENSORS_FAILED
    return EXIT_FINDINGS if findings else EXIT_OK


# ----------------------------------------------------------------------------- messages
def say(message: object, *, file: TextIO | None = None) -> None:
    """One `wstui: …` line on stderr; file names in it are shown as text (DESIGN §10)."""
    from wstui.render import visible

    print(f"wstui: {visible(message)}", file=file or sys.stderr, flush=True)


def fail(message: object) -> int:
    """Say why the input is bad; the exit code for it."""
    say(message)
    return EXIT_BAD_INPUT


def print_problems(lines: Iterable[str]) -> None:
    for line in lines:
        say(line)


def print_notes(ckpt: Any) -> None:
    """One `wstui: note: …` line on stderr per checkpoint note: readers collect them, and a
    user should hear that an index names tensors no shard holds before trusting a scan."""
    from wstui.render.ls import checkpoint_notes

    for note in checkpoint_notes(ckpt):
        print(f"wstui: note: {note}", file=sys.stderr)


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


# ------------------------------------------------------------------------------ options
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


def wants_spectral(methods: Sequence[str] | None) -> bool:
    """The spectral part of compare runs unless --methods is given without `spectral`."""
    return methods is None or "spectral" in methods


def diff_engine(args: argparse.Namespace, ckpt_a: Any, ckpt_b: Any,
                options: dict[str, Any]) -> Any:
    """The DiffEngine (not started) of A (`args.path`) and B (`args.diff`) with the scan
    options; ValueError (one line) when the two share nothing to compare."""
    from wstui.engine.diff import DiffEngine

    engine = DiffEngine(ckpt_a, ckpt_b, device=args.device, workers=args.workers,
                        use_cache=not args.no_cache, options=options,
                        spectral=wants_spectral(args.methods), tensors=args.tensors,
                        ranking_first=False)  # nothing shows before the end: one load
    if not engine.pairs and not engine.matching.shape_mismatch:
        if args.tensors and ckpt_a.tensors and ckpt_b.tensors:
            raise ValueError(f"no tensor of both checkpoints matches {args.tensors!r}")

        def what(c: Any) -> str:
            arch = (c.config or {}).get("model_type") or c.metadata.get("architecture") or c.format
            return f"{arch}, {len(c.tensors)} tensors"

        raise ValueError(f"{args.path} ({what(ckpt_a)}) and {args.diff} ({what(ckpt_b)}) "
                         "share no tensor name: nothing to compare")
    return engine


# ------------------------------------------------------------------------------ driving
def drive(engine: Any, *, quiet: bool = False) -> bool:
    """Run the engine to the end, with a progress bar on stderr when it is a terminal (and
    not `quiet`); True when Ctrl-C cut it short (what is done stays: in the engine's report
    and in the cache)."""
    progress = ProgressBar(engine) if not quiet and sys.stderr.isatty() else None
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


class ProgressBar:
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

    def __enter__(self) -> ProgressBar:
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


def exit_now(code: int) -> None:
    """Leave at once. An analyzer still inside LAPACK cannot be stopped, and a normal exit
    would wait for it in OpenMP's shutdown (seconds on a big matrix). Everything finished is
    already committed to the cache and the output files are written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ------------------------------------------------------------------------------ outputs
def write_outputs(args: argparse.Namespace, *,
                  document: Callable[[], Mapping[str, Any]] | None = None,
                  table: Callable[[], CsvTable] | None = None) -> list[str]:
    """Write `--json` (the document, through the strict JSON writer) and `--csv` (the table,
    through the one CSV writer), each when asked; one line per failed write. A failure never
    stops the other nor what the command prints after it."""
    from wstui import jsonio, outfile

    failed: list[str] = []
    target = getattr(args, "json", None)
    if target is not None and document is not None:
        try:
            jsonio.dump(document(), target)
        except outfile.OutputError as exc:
            failed.append(str(exc))
    target = getattr(args, "csv", None)
    if target is not None and table is not None:
        try:
            rows, columns = table()
            outfile.write_csv(target, rows, columns)
        except outfile.OutputError as exc:
            failed.append(str(exc))
    return failed


def rows_table(rows: Sequence[Mapping[str, Any]]) -> CsvTable:
    """A table whose columns are the keys of its first row (`name` alone when empty)."""
    return rows, list(rows[0]) if rows else ["name"]


def report_console(args: argparse.Namespace, *, width: int | None = 160) -> Any:
    """The console for the tables: stdout, or stderr when an output file is `-` (stdout then
    carries the file alone, so that `--json - | jq` works). When stdout is not a terminal
    and COLUMNS is not set, `width` columns (None: rich's default of 80)."""
    from rich.console import Console

    from wstui.outfile import is_stdout

    if is_stdout(getattr(args, "json", None)) or is_stdout(getattr(args, "csv", None)):
        return Console(stderr=True)
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(width=None if wide else width)


# --------------------------------------------------------------------------------- tail
def at_fail_on(args: argparse.Namespace, issues: Iterable[Any]) -> bool:
    """True when `--fail-on SEVERITY` is given and an issue is at or above it."""
    if not getattr(args, "fail_on", None):
        return False
    from analyzers.core import Severity

    floor = Severity(args.fail_on).rank
    return any(i.finding.severity.rank >= floor for i in issues)


def finish(engine: Any, *, interrupted: bool, write_failed: Sequence[str],
           failed_line: str | None, interrupted_line: str, findings: bool = False) -> int:
    """The end of every engine-driven command, after its outputs are written and its tables
    printed: the cache's notices and failed writes, the tensors that failed (`failed_line`,
    None when none did), the interruption; then the exit code (`exit_code`). Interrupted with
    analyzers still running, it leaves at once (`exit_now`) with 130."""
    print_problems([*cache_notices(engine), *write_failed])
    if failed_line and not interrupted:
        say(failed_line)
    if interrupted:
        say(interrupted_line)
        if not engine.wait(0):
            exit_now(EXIT_INTERRUPTED)
    return exit_code(interrupted=interrupted,
                     bad=bool(getattr(engine, "error", None) or write_failed),
                     failed=failed_line is not None, findings=findings)
