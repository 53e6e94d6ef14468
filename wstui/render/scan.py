"""A scan as rich tables (what `wstui scan` prints): the summary, the per-kind medians and the
top issues. Reads a finished `ScanReport`; prints nothing itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from analyzers.core import LOWER_IS_WORSE, Severity, TensorResult
from wstui.render import columns, plain, visible
from wstui.render.numbers import fmt, human_count, kind_key, median

if TYPE_CHECKING:  # pragma: no cover
    from wstui.engine.scan import ScanReport

SEVERITY_STYLE = {Severity.CRITICAL: "bold red", Severity.WARN: "yellow", Severity.INFO: "cyan"}


def summary_table(report: ScanReport, *, workers: int | None = None,
                  cached: int | None = None) -> Table:
    ck = report.checkpoint
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    # every cell a Text: paths and dtypes come from files and are never read as markup
    t.add_row("checkpoint", plain(f"{ck.get('path')} ({ck.get('format')}, "
                                  f"{len(ck.get('files', []))} "
                                  f"file{'s' if len(ck.get('files', [])) != 1 else ''})"))
    dtypes = ", ".join(f"{k} {v}" for k, v in sorted((ck.get("dtypes") or {}).items()))
    t.add_row("parameters", plain(f"{human_count(int(ck.get('n_params') or 0))} in "
                                  f"{ck.get('n_tensors')} tensors ({dtypes})"))
    t.add_row("scanned", plain(f"{len(report.entries)} tensors, methods "
                               f"{', '.join(report.methods)}"
                               + (f", {cached} from cache" if cached else "")))
    run = f"{report.elapsed_s:.2f} s on {report.device}"
    if workers:
        run += f", {workers} worker{'s' if workers != 1 else ''}"
    if not report.complete:
        run += " (interrupted: partial results)"
    t.add_row("time", plain(run))
    counts = {s: 0 for s in Severity}
    for i in report.top_issues:
        counts[i.finding.severity] += 1
    parts = [Text(f"{counts[s]} {s.value}", style=SEVERITY_STYLE[s] if counts[s] else "dim")
             for s in (Severity.CRITICAL, Severity.WARN, Severity.INFO)]
    t.add_row("findings", Text(", ").join(parts))
    n_err = sum(1 for e in report.entries if e.result.errors)
    if n_err:
        t.add_row("errors", Text(f"{n_err} tensors with analyzer errors (see --json)",
                                 style="red"))
    return t


def kind_table(report: ScanReport) -> Table | None:
    """Medians of the key metrics per module kind."""
    by_kind: dict[str, list[TensorResult]] = {}
    for e in report.entries:
        by_kind.setdefault(e.ref.kind or "other", []).append(e.result)
    if not by_kind:
        return None
    cols = [(title, get) for title, get in columns.KIND_COLUMNS
            if any(get(r.metrics) is not None for rs in by_kind.values() for r in rs)]
    t = Table(title="Per module kind (medians)", title_justify="left", header_style="bold",
              box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("kind")
    t.add_column("tensors", justify="right")
    for title, _ in cols:
        t.add_column(title, justify="right")
    t.add_column("findings", justify="right")
    for kind in sorted(by_kind, key=kind_key):
        rs = by_kind[kind]
        n_find = sum(len(r.findings) for r in rs)
        t.add_row(plain(kind), str(len(rs)),
                  *[fmt(median([get(r.metrics) for r in rs])) for _, get in cols],
                  str(n_find) if n_find else "–")
    return t


def issues_table(report: ScanReport, limit: int = 20, width: int = 160) -> Table:
    """Severity, tensor, code, value against threshold, and (when there is room) the message."""
    issues = report.top_issues[: max(0, limit)]
    title = f"Top issues ({len(issues)} of {len(report.top_issues)})"
    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
              pad_edge=False)
    longest = max((len(visible(i.ref.display_name)) for i in issues), default=10)
    t.add_column("severity", no_wrap=True)
    # the end of a tensor name is the informative part: keep names whole, wrap the message
    t.add_column("tensor", no_wrap=True, min_width=min(longest, 48), overflow="ellipsis")
    t.add_column("code", no_wrap=True)
    t.add_column("value vs limit", justify="right", no_wrap=True)
    with_message = width >= min(longest, 48) + 80
    if with_message:
        t.add_column("message", overflow="fold", ratio=1)
    for i in issues:
        f = i.finding
        op = "<" if f.code in LOWER_IS_WORSE else ">"
        vs = fmt(f.value) if f.threshold is None else f"{fmt(f.value)} {op} {fmt(f.threshold)}"
        cells = [Text(f.severity.value, style=SEVERITY_STYLE[f.severity]),
                 plain(i.ref.display_name), plain(f.code), plain(vs)]
        t.add_row(*cells, *([plain(f.message)] if with_message else []))
    return t


def render(report: ScanReport, *, top: int = 20, workers: int | None = None,
           cached: int | None = None, width: int = 160) -> Group:
    """Everything `wstui scan` prints, as one rich renderable for a console `width` wide."""
    parts: list[Any] = [summary_table(report, workers=workers, cached=cached), Text("")]
    kt = kind_table(report)
    if kt is not None:
        parts += [kt, Text("")]
    if report.top_issues:
        parts.append(issues_table(report, top, width))
    else:
        parts.append(Text("No findings.", style="green"))
    return Group(*parts)
