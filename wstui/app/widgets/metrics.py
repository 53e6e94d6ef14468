"""The Overview tab: what a tensor is, its findings, and every metric with threshold marks.

For a block or the model it shows a summary of the tensors below instead. Everything is a
rich renderable built from the result: no analysis happens here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from analyzers.core import Finding, TensorResult
from wstui.app.format import (
    badge,
    marks_for,
    num,
    oriented,
    result_state,
    scalar_metrics,
    shape_text,
)
from wstui.render import plain, visible
from wstui.render.numbers import human_count

ANALYZER_ORDER = ("stats", "sparsity", "quantization", "embedding", "spectral", "compare")


def finding_table(pairs: list[tuple[str | None, Finding]], limit: int = 50) -> Table:
    """Findings as `badge code message`, with the tensor on a line of its own when given."""
    t = Table(box=None, pad_edge=False, show_header=False, expand=True)
    t.add_column(width=1)
    t.add_column("finding", ratio=1, overflow="fold")
    for name, f in pairs[:limit]:
        msg = Text.assemble((visible(f.code), "bold"), " ", visible(f.message))
        if name:
            msg = Text.assemble((visible(name), "cyan"), "\n", msg)
        t.add_row(badge(f.severity.value), msg)
    if len(pairs) > limit:
        t.add_row("", Text(f"… {len(pairs) - limit} more in the Findings tab", style="dim"))
    return t


def tensor_overview(
    ref: Any, result: TensorResult | None, thresholds: Mapping[str, float], note: str = "",
    compare: TensorResult | None = None, swapped: bool = False,
) -> RenderableType:
    """The Overview of one tensor."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    # every value from the file is a Text: a str cell would be parsed as markup
    head.add_row("tensor", plain(ref.name))
    if ref.hf_name and ref.hf_name != ref.name:
        head.add_row("hf name", plain(ref.hf_name))
    block = "" if ref.block is None else f"   block {ref.block}"
    head.add_row("kind", plain(f"{ref.kind}{block}"))
    head.add_row("shape", plain(f"{shape_text(ref.shape)}  {ref.dtype}  "
                                f"({human_count(ref.numel)} values, {human_count(ref.nbytes)}B)"))
    if ref.tied_to:
        head.add_row("tied", plain(f"shares storage with {ref.tied_to}: shown once"))
    if ref.note:
        head.add_row("note", plain(ref.note))
    parts: list[RenderableType] = [head]
    if note:
        parts.append(plain(note, style="italic"))
    if result is None:
        if compare is not None:
            parts.append(compare_block(compare, thresholds, swapped))
        parts.append(Text("\ncomputing… (moved to the front of the scan queue)", style="italic"))
        return Group(*parts)
    for analyzer, message in sorted(result.errors.items()):
        parts.append(plain(f"error in {analyzer}: {message}", style="bold magenta"))
    by_reason: dict[str, list[str]] = {}  # one line per reason, not one per analyzer
    for analyzer, reason in sorted(result.skipped.items()):
        if analyzer == "embedding" and ref.kind not in ("embedding", "lm_head"):
            continue  # never applies to other kinds: not worth a line
        by_reason.setdefault(reason, []).append(analyzer)
    for reason, analyzers in by_reason.items():
        parts.append(plain(f"{', '.join(analyzers)} skipped: {reason}", style="dim"))
    if result.findings:
        parts.append(Text("\nfindings", style="bold underline"))
        parts.append(finding_table([(None, f) for f in result.findings]))
    else:
        parts.append(Text.assemble("\n", badge(result_state(result)), " no findings"))
    if compare is not None:
        parts.append(compare_block(compare, thresholds, swapped))
    names = [a for a in ANALYZER_ORDER if a in result.metrics] + sorted(
        a for a in result.metrics if a not in ANALYZER_ORDER)
    # the metric names keep their whole width (three `near_zero_frac…` told nothing apart);
    # the threshold column gives way first
    longest = max((len(k) + 2 for a in names for k, _ in scalar_metrics(result, a)), default=8)
    table = Table(box=None, expand=True, pad_edge=False, header_style="bold underline")
    table.add_column("metric", no_wrap=True, min_width=longest)
    table.add_column("value", justify="right", no_wrap=True, min_width=8)
    table.add_column("", width=1)
    table.add_column("threshold", no_wrap=True, overflow="ellipsis", ratio=1, style="dim")
    for analyzer in names:
        rows = scalar_metrics(result, analyzer)
        if not rows:
            continue
        table.add_row(Text(analyzer, style="bold cyan"), "", "", "")
        for key, value in rows:
            state, rules = marks_for(analyzer, key, result.findings, thresholds)
            mark = badge(state) if state else Text(" ")
            table.add_row(f"  {key}", num(value), mark, "  ".join(rules))
    parts.append(table)
    return Group(*parts)


def compare_block(compare: TensorResult, thresholds: Mapping[str, float],
                  swapped: bool = False) -> RenderableType:
    """Diff mode: how B differs from A for this tensor (`swapped`: after `d`, A is the
    second checkpoint: its values trade places, signed deltas flip)."""
    t = Table(box=None, expand=True, pad_edge=False, show_header=False)
    t.add_column(ratio=3, no_wrap=True)
    t.add_column(justify="right", ratio=2, no_wrap=True)
    t.add_column(width=1)
    t.add_column(ratio=3, style="dim", no_wrap=True)
    head = Text("compare (B against A)", style="bold magenta")
    if swapped:  # outside the table: its first column is too narrow to carry it
        head.append("\n  d: A is the second checkpoint; rel_change is of the base's norm",
                    style="italic")
    for analyzer, message in compare.errors.items():
        t.add_row(plain(f"  error in {analyzer}: {message}", style="magenta"), "", "", "")
    if swapped:
        compare = replace(compare, metrics={**compare.metrics, "compare": oriented(
            compare.metrics.get("compare", {}), True)})
    for key, value in scalar_metrics(compare, "compare"):
        state, rules = marks_for("compare", key, compare.findings, thresholds)
        t.add_row(f"  {key}", num(value), badge(state) if state else Text(" "),
                  "  ".join(rules))
    return Group(head, t)


def scope_overview(
    node: Any, names: list[str], state: Any, findings: list[tuple[str, Finding]],
    notes: Sequence[str] = (), done: bool = False,
) -> RenderableType:
    """The Overview of a block or the whole model (`state`: the app's ScanState); `notes`:
    what the checkpoint readers noted, shown on the model's Overview."""
    results, refs = state.results, state.refs
    counts: dict[str, int] = {}
    for n in names:
        s = state.tensor_state(n)
        counts[s] = counts.get(s, 0) + 1
    params = sum(refs[n].numel for n in names if not refs[n].tied_to)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    path = node.key.replace(":", " ").replace("/", " › ") if ":" in node.key else node.label
    head.add_row("selection", plain(path))
    head.add_row("tensors", f"{len(names)}  ({human_count(params)} parameters)")
    done = sum(1 for n in names if n in results)
    head.add_row("scanned", f"{done} of {len(names)}")
    states = Text()
    for s in ("critical", "warn", "info", "error", "clean", "skipped", "pending"):
        if counts.get(s):
            states.append_text(badge(s))
            states.append(f" {s} {counts[s]}   ")
    head.add_row("tensors by worst", states)
    if notes:
        head.add_row("notes", Text("\n").join(plain(n, style="yellow") for n in notes))
    parts: list[RenderableType] = [head]
    if findings:
        parts.append(Text(f"\n{len(findings)} findings, worst first", style="bold underline"))
        # the names the tree shows (a GGUF's HF names, not its own beside them)
        parts.append(finding_table([(refs[n].display_name if n in refs else n, f)
                                    for n, f in findings], limit=30))
    else:
        parts.append(Text("\nno findings" if done else "\nno findings so far", style="dim"))
    parts.append(Text("\n5: table of these tensors · 6: metrics by depth", style="dim"))
    return Group(*parts)
