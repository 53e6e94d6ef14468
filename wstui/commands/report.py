"""`wstui report PATH`: one self-contained HTML report, Markdown, figure files.

The same engines as `wstui scan` (and `wstui quant`, `wstui scan A --diff B`): results come
from the cache where they are there, what is missing is computed with the usual progress bar
on stderr. Then the documents those commands write are turned into the report
(`wstui.htmlreport`). Every check that needs no checkpoint runs first.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from wstui.cli import EXIT_INTERRUPTED, EXIT_OK

DEFAULT_HTML = "report.html"


def _check_parent(path: str | None, option: str) -> None:
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: directory {parent} does not exist")


def _check_args(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Engine options and figure formats; ValueError with a one-line reason."""
    from wstui.commands.scan import checked_options
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
    from wstui.commands.scan import _drive, _fail, scan_engine

    try:
        options, formats = _check_args(args)
    except ValueError as exc:
        return _fail(str(exc))

    from wstui.checkpoint import open_checkpoint

    progress = not args.quiet and sys.stderr.isatty()
    if args.diff:  # a bad B fails now, not after A's scan (reading its headers is cheap)
        with open_checkpoint(args.diff):
            pass
    with open_checkpoint(args.path) as ckpt:
        try:
            engine = scan_engine(args, ckpt, options)
        except ValueError as exc:
            return _fail(str(exc))
        tensors = engine.refs
        if _drive(engine, show_progress=progress):
            return _interrupted()
        scan = engine.report()
        cached = engine.progress().cached
        if engine.error:
            return _fail(f"scan failed: {engine.error}")
        quant_doc = None
        if args.quant:
            from wstui.documents.quant import study_document
            from wstui.engine.study import study_engine

            q_engine, spec = study_engine(ckpt, tensors=tensors, device=args.device,
                                          workers=args.workers, use_cache=not args.no_cache)
            if _drive(q_engine, show_progress=progress):
                return _interrupted()
            from wstui import jsonio

            # strict, as `wstui quant --json` writes it: a lost fit is null, never NaN
            quant_doc = jsonio.strict(study_document(ckpt, q_engine.report(), spec))
        diff = diff_doc = None
        if args.diff:
            diff = _run_diff(args, ckpt, options, progress)
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
            from wstui.render import visible

            say = (lambda msg: print(f"wstui: {visible(msg)}", file=sys.stderr, flush=True)
                   ) if not args.quiet else (lambda msg: None)
            doc = run_sensitivity(ckpt, progress=say, use_cache=not args.no_cache)
            extra.append(sensitivity_section(jsonio.strict(doc)))
        return _write(args, formats, scan, quant_doc, diff, diff_doc, cached, extra)


def _run_diff(args: argparse.Namespace, ckpt: Any, options: dict[str, Any],
              progress: bool) -> Any:
    """The finished DiffReport, None when interrupted, or an exit code on bad input."""
    from wstui.checkpoint import open_checkpoint
    from wstui.commands.diff_report import nothing_matches, wants_spectral
    from wstui.commands.scan import _drive, _fail
    from wstui.engine.diff import DiffEngine

    with open_checkpoint(args.diff) as ckpt_b:
        engine = DiffEngine(ckpt, ckpt_b, device=args.device, workers=args.workers,
                            use_cache=not args.no_cache, options=options,
                            spectral=wants_spectral(args.methods), tensors=args.tensors,
                            ranking_first=False)
        if not engine.pairs and not engine.matching.shape_mismatch:
            return _fail(nothing_matches(args, ckpt, ckpt_b))
        if _drive(engine, show_progress=progress):
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
        print(f"wstui: wrote {'; '.join(wrote)} in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
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
    print("wstui: interrupted: no report written (results so far are in the cache)",
          file=sys.stderr)
    return EXIT_INTERRUPTED
