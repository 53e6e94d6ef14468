"""`wstui report PATH`: one self-contained HTML report, Markdown, figure files.

The same engines as `wstui scan` (and `wstui quant`, `wstui scan A --diff B`): results come
from the cache where they are there, what is missing is computed with the usual progress bar
on stderr. Then the documents those commands write are turned into the report
(`wstui.htmlreport`). Every check that needs no checkpoint runs first.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

from wstui.commands import _args
from wstui.commands._run import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    checked_options,
    diff_engine,
    drive,
    fail,
    say,
    scan_engine,
)

DEFAULT_HTML = "report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Write a self-contained HTML report (offline, light and dark), the same "
                     "as Markdown, and publication figures.")
    p.add_argument("path")
    p.add_argument("--diff", metavar="PATH_B", default=None, help="add the diff with B")
    p.add_argument("--quant", action="store_true", help="add the quantization study")
    p.add_argument("--sensitivity", action="store_true",
                   help="add the sensitivity study (a causal LM: forward and backward "
                        "passes on the shipped calibration text)")
    p.add_argument("-o", "--output", metavar="FILE.html", default=None,
                   help="the HTML file (default report.html unless --md/--figures)")
    p.add_argument("--md", metavar="FILE.md", default=None,
                   help="the report as Markdown, figures as PNG beside it")
    p.add_argument("--figures", metavar="DIR", default=None, help="every figure as a file")
    p.add_argument("--format", default="svg,png,pdf", metavar="svg,png,pdf",
                   help="formats of --figures (default all three)")
    p.add_argument("--worst", type=int, default=5, metavar="N",
                   help="plot the N worst tensors (default 5)")
    p.add_argument("--quiet", action="store_true", help="no progress, no summary line")
    _args.add_scan_options(p)
    _args.add_hub_options(p)


def _check_parent(path: str | None, option: str) -> None:
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: directory {parent} does not exist")


def _check_args(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Engine options and figure formats; ValueError with a one-line reason."""
    from wstui.figures.output import parse_formats

    options = checked_options(args)
    formats = parse_formats(args.format)
    if args.worst < 0:
        raise ValueError(f"--worst must be 0 or more, got {args.worst}")
    if args.output is None and args.md is None and args.figures is None:
        args.output = DEFAULT_HTML
    _check_parent(args.output, "-o")
    _check_parent(args.md, "--md")
    if args.figures is not None:
        fig = Path(args.figures).expanduser()
        if fig.exists() and not fig.is_dir():
            raise ValueError(f"--figures {args.figures}: not a directory")
        _check_parent(args.figures, "--figures")
    return options, formats


def run(args: argparse.Namespace) -> int:
    try:
        options, formats = _check_args(args)
    except ValueError as exc:
        return fail(exc)

    from wstui.checkpoint import open_checkpoint

    quiet = args.quiet
    if args.diff:  # a bad B fails now, not after A's scan (reading its headers is cheap)
        with open_checkpoint(args.diff):
            pass
    with open_checkpoint(args.path) as ckpt:
        try:
            engine = scan_engine(args, ckpt, options)
        except ValueError as exc:
            return fail(exc)
        tensors = engine.refs
        if drive(engine, quiet=quiet):
            return _interrupted()
        scan = engine.report()
        cached = engine.progress().cached
        if engine.error:
            return fail(f"scan failed: {engine.error}")
        quant_doc = None
        if args.quant:
            from wstui.documents.quant import study_document
            from wstui.engine.study import study_engine

            q_engine, spec = study_engine(ckpt, tensors=tensors, device=args.device,
                                          workers=args.workers, use_cache=not args.no_cache)
            if drive(q_engine, quiet=quiet):
                return _interrupted()
            from wstui import jsonio

            # strict, as `wstui quant --json` writes it: a lost fit is null, never NaN
            quant_doc = jsonio.strict(study_document(ckpt, q_engine.report(), spec))
        diff = diff_doc = None
        if args.diff:
            diff = _run_diff(args, ckpt, options, quiet)
            if diff is None:
                return _interrupted()
            if isinstance(diff, int):
                return diff
            diff_doc = diff.to_dict()
        extra = []
        if args.sensitivity:
            from wstui import jsonio
            from wstui.engine.sensitivity import run_sensitivity
            from wstui.htmlreport.sensitivity import sensitivity_section

            doc = run_sensitivity(ckpt, progress=(lambda msg: None) if quiet else say,
                                  use_cache=not args.no_cache)
            extra.append(sensitivity_section(jsonio.strict(doc)))
        return _write(args, formats, scan, quant_doc, diff, diff_doc, cached, extra)


def _run_diff(args: argparse.Namespace, ckpt: Any, options: dict[str, Any],
              quiet: bool) -> Any:
    """The finished DiffReport, None when interrupted, or an exit code on bad input."""
    from wstui.checkpoint import open_checkpoint

    with open_checkpoint(args.diff) as ckpt_b:
        try:
            engine = diff_engine(args, ckpt, ckpt_b, options)
        except ValueError as exc:
            return fail(exc)
        if drive(engine, quiet=quiet):
            return None
        return engine.report()


def _write(args: argparse.Namespace, formats: list[str], scan: Any, quant_doc: Any,
           diff: Any, diff_doc: Any, cached: int | None = None,
           extra: list[Any] | None = None) -> int:
    from wstui.documents.scan import scan_json
    from wstui.htmlreport.model import ReportInput, build_sections
    from wstui.htmlreport.write import write_figures, write_html, write_markdown

    t0 = time.perf_counter()
    inp = ReportInput(scan=scan, scan_doc=scan_json(scan), quant_doc=quant_doc, diff=diff,
                      diff_doc=diff_doc, worst=args.worst, command=_command_line(args),
                      cached=cached, extra_sections=list(extra or []))
    sections = build_sections(inp)
    wrote = []
    if args.output:
        p = write_html(inp, args.output, sections)
        wrote.append(f"{p} ({p.stat().st_size / 1e6:.2f} MB)")
    if args.md:
        wrote.append(str(write_markdown(inp, args.md, sections)))
    if args.figures is not None:
        files = write_figures(inp, args.figures, formats, sections)
        wrote.append(f"{len(files)} figure files in {args.figures}")
    if not args.quiet:
        say(f"wrote {'; '.join(wrote)} in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK


def _command_line(args: argparse.Namespace) -> str:
    """What produced the report, for its footer (the options that change what it shows)."""
    parts = ["wstui", "report", str(args.path)]
    if args.diff:
        parts += ["--diff", str(args.diff)]
    if args.quant:
        parts.append("--quant")
    if args.sensitivity:
        parts.append("--sensitivity")
    if args.tensors:
        parts += ["--tensors", args.tensors]
    if args.methods:
        parts += ["--methods", ",".join(args.methods)]
    return " ".join(shlex.quote(p) for p in parts)


def _interrupted() -> int:
    say("interrupted: no report written (results so far are in the cache)")
    return EXIT_INTERRUPTED
