"""`wstui scan A --diff B`: compare two checkpoints headless (DESIGN §3, §8 `wstui.diff/1`).

Progress on stderr when it is a terminal; on stdout the most-changed table, the per-block and
per-kind summaries, the findings and the unmatched/mismatched names. `--json`, `--csv`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from wstui.cli import exit_code
from wstui.commands.scan import _fail, cache_notices, print_problems, report_console, write_outputs

BAR_WIDTH = 12
LIST_LIMIT = 20
NARROW = 120  # below this many columns: short tensor names, no kind column, a shorter bar


def wants_spectral(methods: Sequence[str] | None) -> bool:
    """The spectral part of compare runs unless --methods is given without `spectral`."""
    return methods is None or "spectral" in methods


def nothing_matches(args: argparse.Namespace, a: Any, b: Any) -> str:
    def what(c: Any) -> str:
        arch = (c.config or {}).get("model_type") or c.metadata.get("architecture") or c.format
        return f"{arch}, {len(c.tensors)} tensors"

    return (f"{args.path} ({what(a)}) and {args.diff} ({what(b)}) share no tensor name: "
            "nothing to compare")


def run(args: argparse.Namespace) -> int:
    from wstui.commands.scan import _drive, checked_options

    try:
        options = checked_options(args)
    except ValueError as exc:
        return _fail(str(exc))

    from wstui.checkpoint import open_checkpoint
    from wstui.engine.diff import DiffEngine
    from wstui.listing import print_notes

    with open_checkpoint(args.path) as ckpt_a, open_checkpoint(args.diff) as ckpt_b:
        print_notes(ckpt_a)
        print_notes(ckpt_b)
        engine = DiffEngine(ckpt_a, ckpt_b, device=args.device, workers=args.workers,
                            use_cache=not args.no_cache, options=options,
                            spectral=wants_spectral(args.methods), tensors=args.tensors,
                            ranking_first=False)  # nothing shows before the end: one load
        if not engine.pairs and not engine.matching.shape_mismatch:
            if args.tensors and (ckpt_a.tensors and ckpt_b.tensors):
                return _fail(f"no tensor of both checkpoints matches {args.tensors!r}")
            return _fail(nothing_matches(args, ckpt_a, ckpt_b))
        interrupted = _drive(engine, show_progress=not args.quiet and sys.stderr.isatty())
        report = engine.report()

        def csv_writer(target: str) -> None:
            from wstui.documents.diff import write_csv

            write_csv(report, target)

        write_failed = write_outputs((args.json, report.to_json), (args.csv, csv_writer))
        if not args.quiet:
            console = report_console(args)
            console.print(render(report, top=args.top_issues, workers=engine.workers,
                                 width=console.width))
        print_problems(cache_notices(engine) + write_failed)
        n_failed = sum(1 for p in report.pairs if p.result.errors)
        if n_failed and not interrupted:
            print(f"wstui: {n_failed} of {len(report.pairs)} pairs failed to load or compare "
                  "(their errors are in the report)", file=sys.stderr)
        if interrupted:
            n_done = sum(1 for p in report.pairs if p.result.metrics)
            print(f"wstui: interrupted: {n_done} of {len(report.pairs)} pairs compared",
                  file=sys.stderr)
        findings = False
        if args.fail_on:
            from analyzers.core import Severity

            floor = Severity(args.fail_on).rank
            findings = any(i.finding.severity.rank >= floor for i in report.top_issues)
    return exit_code(interrupted=interrupted, bad=bool(write_failed), failed=n_failed > 0,
                     findings=findings)


# ------------------------------------------------------------------------------ rendering
def bar(value: float | None, top: float, width: int = BAR_WIDTH) -> str:
    """A bar of `value` against `top` in eighth blocks (no colour needed to read it)."""
    if value is None or top <= 0 or value != value:
        return " " * width
    eighths = round(min(1.0, max(0.0, value / top)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)


def _title(report: Any) -> Any:
    """`A path (format, n tensors)  vs  B …` as a Text: the paths are never read as markup."""
    from rich.text import Text

    from wstui.render import visible

    a, b = report.a, report.b
    title = Text()
    for label, c, sep in (("A", a, "  vs  "), ("B", b, "")):
        title.append(label, style="bold")
        title.append(visible(f" {c['path']} ({c['format']}, {c['n_tensors']} tensors)") + sep)
    if not report.complete:
        title.append("  ")
        title.append("(incomplete)", style="yellow")
    return title


def short_name(name: str) -> str:
    """`model.layers.3.self_attn.o_proj.weight` -> `3.attn.o_proj` (for narrow terminals)."""
    for prefix in ("model.", "layers."):
        name = name.removeprefix(prefix)
    return name.removesuffix(".weight").replace("self_attn.", "attn.")


def changed_table(report: Any, top: int, width: int | None = None) -> Any:
    from rich.table import Table

    from wstui.render import plain
    from wstui.render.numbers import fmt

    narrow = width is not None and width < NARROW
    bar_width = 6 if narrow else BAR_WIDTH

    pairs = [p for p in report.pairs if p.rel_change is not None][:top]
    top_rel = max((p.rel_change for p in pairs if p.rel_change == p.rel_change), default=0.0)
    t = Table(title=f"Most changed ({len(pairs)} of {len(report.pairs)} pairs, by rel_change)",
              title_justify="left")
    cols = [("#", "right"), ("tensor", "left"), ("kind", "left"), ("rel_change", "right"),
            ("", "left"), ("cosine", "right"), ("ΔE rank90", "right"), ("Δalpha", "right")]
    if narrow:
        cols = [c for c in cols if c[0] != "kind"]
    for col, just in cols:
        t.add_column(col, justify=just, no_wrap=col != "tensor")
    for i, p in enumerate(pairs, 1):
        c = p.compare
        key, other = p.key, p.b.display_name
        if narrow:
            key, other = short_name(key), short_name(other)
        name = key if p.a.name == p.b.name or key == other else f"{key} ↔ {other}"
        if p.note:
            name += " *"
        style = "yellow" if p.result.findings else None
        cells = [str(i), plain(name), plain(p.a.kind),
                 fmt(p.rel_change),
                 bar(p.rel_change, top_rel, bar_width), fmt(c.get("cosine")),
                 fmt(c.get("delta_energy_rank_90")), fmt(c.get("delta_alpha"))]
        if narrow:
            del cells[2]
        t.add_row(*cells, style=style)
    return t


def summary_table(rows: list[dict[str, Any]], by: str, width: int | None = None) -> Any:
    from rich.table import Table

    from wstui.render import plain
    from wstui.render.numbers import fmt

    t = Table(title=f"Per {by} (most moved first; ΔE rank90: median over changed tensors)",
              title_justify="left")
    for col in (by, "changed", "mean rel", "max rel", "ΔE rank90", "most changed"):
        t.add_column(col, justify="left" if col in (by, "most changed") else "right")
    for r in rows:
        label = r[by] if r[by] is not None else "–"
        t.add_row(plain(label), f"{r['n_changed']}/{r['n']}",
                  fmt(r["mean_rel_change"]), fmt(r["max_rel_change"]),
                  fmt(r["median_delta_energy_rank_90"]),
                  plain(_most_changed(r["most_changed"], width)))
    return t


def _most_changed(name: str | None, width: int | None) -> str:
    if name is None:
        return "–"
    return short_name(name) if width is not None and width < NARROW else name


def _listing(title: str, names: Sequence[str]) -> Any:
    from rich.text import Text

    from wstui.render import visible

    shown = ", ".join(visible(n) for n in names[:LIST_LIMIT])
    more = f" … and {len(names) - LIST_LIMIT} more" if len(names) > LIST_LIMIT else ""
    return Text.assemble((title, "bold"), f" ({len(names)}): {shown}{more}")


def render(report: Any, *, top: int = 20, workers: int | None = None,
           width: int | None = None) -> Any:
    """Everything `wstui scan A --diff B` prints, as one rich renderable."""
    from rich.console import Group
    from rich.text import Text

    from wstui.render import plain, visible

    summary = report.summary()
    parts: list[Any] = [_title(report)]
    n_err = sum(1 for p in report.pairs if p.result.errors)
    n_skip = sum(1 for p in report.pairs if p.result.skipped and not p.result.metrics)
    parts.append(Text(
        f"{len(report.pairs)} pairs matched, {len(report.only_in_a)} only in A, "
        f"{len(report.only_in_b)} only in B, {len(report.shape_mismatch)} shape mismatches; "
        f"{n_err} errors, {n_skip} skipped; {report.elapsed_s:.1f} s on {report.device}"
        + (f" ({workers} workers)" if workers else "")
        + ("" if report.spectral else "; spectral part not computed")))
    parts.append(changed_table(report, top, width))
    parts.append(summary_table(summary["by_block"], "block", width))
    parts.append(summary_table(summary["by_kind"], "kind", width))
    if report.top_issues:
        lines = [f"  {i.finding.severity.value:8} {i.finding.code:13} {visible(i.pair.key)}: "
                 f"{visible(i.finding.message)}"
                 for i in report.top_issues[:top]]
        parts.append(Text("Findings\n" + "\n".join(lines)))
    else:
        parts.append(Text("No findings."))
    notes = [p for p in report.pairs if p.note]
    for p in notes:
        parts.append(plain(f"* {p.key}: {p.note}"))
    if report.only_in_a:
        parts.append(_listing("Only in A", report.only_in_a))
    if report.only_in_b:
        parts.append(_listing("Only in B", report.only_in_b))
    if report.shape_mismatch:
        items = [f"{m['name']} {tuple(m['shape_a'])} vs {tuple(m['shape_b'])}"
                 for m in report.shape_mismatch]
        parts.append(_listing("Shape mismatch", items))
    for p in report.pairs:
        for analyzer, msg in p.result.errors.items():
            parts.append(plain(f"error {p.key} ({analyzer}): {msg}", style="red"))
    return Group(*parts)
