"""The model-level Quantization tab: the study's table, alpha against bits, the plan heat map.

Everything shown comes from the `wstui.quant/1` document (`wstui.quant.run_study`); this module
only picks values out of it and formats them. The summary and plan tables are the ones
`wstui quant` prints (`wstui.commands.quant`), so both faces read the same. The heat map has one
cell per (block, module kind) holding the planned bits as digits, so it still reads under
NO_COLOR; colour only repeats what the digits say.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from wstui.app.widgets.plots import PlotPanel
from wstui.render import visible
from wstui.render.plots import PALETTE, REFERENCE, PlotSpec, Series

ALPHA_LABELS = {"alpha": "α free refit (WeightWatcher-comparable)",
                "alpha_fixed_xmin": "α above the unquantized xmin"}
PLOT_TITLES = {"alpha": "α (free refit) by bits", "alpha_fixed_xmin": "α (fixed xmin) by bits"}
GRAN_COLORS = {"tensor": PALETTE[0], "channel": PALETTE[1], "group128": PALETTE[2]}
SPARE_COLORS = PALETTE[3:]
#: short column heads of the heat map, in layer order
KIND_HEADS = {
    "embedding": "emb", "position_embedding": "pos", "attn_q": "q", "attn_k": "k",
    "attn_v": "v", "attn_qkv": "qkv", "attn_o": "o", "mlp_gate": "gate", "mlp_up": "up",
    "mlp_down": "down", "mlp_gate_up": "g+up", "moe_router": "rtr", "moe_expert": "exp",
    "lm_head": "head", "other": "other",
}
#: cell style per planned bit width (16: the layer stays unquantized): a green-to-red ramp in
#: hex, which Textual maps to 256 colours where needed (named ANSI colours collapse there)
BITS_STYLES = {2: "#000000 on #1a9850", 3: "#000000 on #66bd63", 4: "#000000 on #a6d96a",
               5: "#000000 on #d9ef8b", 6: "#000000 on #fee08b", 7: "#000000 on #fdae61",
               8: "#000000 on #f46d43", 16: "#ffffff on #a50026"}


# --- picking values out of the document --------------------------------------------------


def plan_entry(doc: Mapping[str, Any] | None, index: int) -> Mapping[str, Any] | None:
    plans = (doc or {}).get("plan") or []
    return plans[index % len(plans)] if plans else None


def _settings_text(doc: Mapping[str, Any] | None) -> tuple[str, str, str]:
    if doc and doc.get("settings"):
        s = doc["settings"]
        bits = sorted({x["bits"] for x in s}, reverse=True)
        grans = list(dict.fromkeys(x["granularity"] for x in s))
        schemes = list(dict.fromkeys(x["scheme"] for x in s))
    else:  # what run_study does by default (wstui quant's defaults too, so the cache is shared)
        bits, grans, schemes = [8, 6, 5, 4, 3, 2], ["tensor", "channel", "group128"], ["sym"]
    return ", ".join(map(str, bits)), ", ".join(grans), ", ".join(schemes)


def status_text(*, doc: Mapping[str, Any] | None, running: bool, progress: Any,
                n_matrices: int, error: str = "") -> Text:
    """What the study will do, how far it is, or what it found (the view's first lines)."""
    bits, grans, schemes = _settings_text(doc)
    t = Text()
    if running:
        t.append("running the quantization study", style="bold yellow")
        if progress is not None and progress.total:
            pct = 100 * progress.done // max(progress.total, 1)
            t.append(f" · {progress.done}/{progress.total} matrices ({pct}%)", style="yellow")
            t.append(f" · {progress.elapsed_s:.0f} s")
            if progress.eta_s is not None:
                t.append(f" · eta {progress.eta_s:.0f} s")
            if progress.current:
                t.append(f"\n{visible(progress.current)}", style="dim")
        else:
            t.append(" · starting (loading torch)…", style="yellow")
        t.append("\nq quits and cancels it; finished matrices stay in the cache", style="dim")
        return t
    if error:
        t.append(f"the study failed: {visible(error)}\n", style="bold red")
    if doc is None:
        n_set = len(bits.split(", ")) * len(grans.split(", ")) * len(schemes.split(", "))
        t.append("Quantization study (not run yet)", style="bold")
        t.append(f": fake-quantize each of the {n_matrices} matrices at {bits} bits, "
                 f"granularity {grans} ({schemes}), and refit α each time: {n_set} "
                 "eigendecompositions per matrix. ")
        t.append("Press r to run it", style="bold cyan")
        t.append(" (matrices already in the cache load at once).")
        return t
    n = len(doc.get("layers", []))
    done = "done" if doc.get("complete", True) else "incomplete (cancelled)"
    t.append(f"Quantization study {done}", style="bold green" if doc.get("complete", True)
             else "bold yellow")
    t.append(f": {n} matrices at {bits} bits × {grans} ({schemes})")
    if doc.get("elapsed_s") is not None:
        t.append(f" · {doc['elapsed_s']:.1f} s on {doc.get('device', '?')}")
    if doc.get("dequantized"):
        t.append(" · GGUF: on the dequantized weights", style="yellow")
    if doc.get("skipped"):
        t.append(f" · {len(doc['skipped'])} skipped", style="yellow")
    t.append("\ng: next granularity · a: which α · r: rerun (cached)", style="dim")
    return t


def _spread(values: Sequence[float]) -> tuple[float, float]:
    """p10 and p90 of one setting's per-layer alphas (the spread markers of the plot)."""
    if len(values) == 1:
        return values[0], values[0]
    q = statistics.quantiles(values, n=10, method="inclusive")
    return q[0], q[-1]


def alpha_plot(doc: Mapping[str, Any], alpha_key: str = "alpha") -> PlotSpec:
    """α against bits: per (granularity, scheme) a line of the mean (the study's summary) and
    p10/p90 markers of the per-layer alphas; the unquantized mean as a horizontal line."""
    summary = doc.get("summary") or []
    pairs = [(p["granularity"], p["scheme"]) for p in doc.get("plan") or []]
    series: list[Series] = []
    for i, (gran, scheme) in enumerate(pairs):
        color = GRAN_COLORS.get(gran, SPARE_COLORS[i % len(SPARE_COLORS)])
        label = gran if len({s for _, s in pairs}) == 1 else f"{gran} {scheme}"
        rows = sorted((r for r in summary[1:] if (r["granularity"], r["scheme"]) == (gran, scheme)
                       and r[alpha_key]["mean"] is not None), key=lambda r: r["bits"])
        series.append(Series(f"{label} mean", [r["bits"] for r in rows],
                             [r[alpha_key]["mean"] for r in rows], "line", color))
        sx: list[float] = []
        sy: list[float] = []
        for r in rows:
            values = [res[alpha_key] for layer in doc.get("layers", [])
                      for res in layer.get("results", [])
                      if (res["bits"], res["granularity"], res["scheme"]) == (r["bits"], gran,
                                                                              scheme)
                      and res.get(alpha_key) is not None]
            if values:
                lo, hi = _spread(values)
                sx += [r["bits"], r["bits"]]
                sy += [lo, hi]
        if sx:
            series.append(Series(f"{label} p10/p90", sx, sy, "scatter", color))
    base = summary[0][alpha_key]["mean"] if summary else None
    if base is not None and series:
        series.append(Series("unquantized mean", [], [base], "hline", REFERENCE))
    note = "line: mean · dots: p10, p90 of the layers"
    if base is not None:
        note += f" · yellow: unquantized {base:.3g}"
    spec = PlotSpec("quant_alpha", PLOT_TITLES.get(alpha_key, alpha_key),
                    "bits", "α", series, note=note).prepare()
    for drawn in spec.draw:  # the legend names the mean lines only (the caption says the rest)
        if drawn.style == "scatter":
            drawn.label = ""
    return spec


#: heat-map cell of a matrix the study could not sweep (doc["skipped"]: non-finite, …)
SKIPPED = 0


def skipped_names(doc: Mapping[str, Any]) -> list[str]:
    return [x["name"] for x in doc.get("skipped") or []]


def heat_grid(doc: Mapping[str, Any], plan: Mapping[str, Any]
              ) -> tuple[list[int | None], list[str], dict[tuple[int | None, str], int]]:
    """(rows: block indices then None for layers outside blocks, kinds in layer order,
    cells: (block, kind) -> planned bits, the widest where several layers share a cell, or
    SKIPPED for a matrix the study could not sweep)."""
    where = {layer["name"]: (layer.get("block"), layer.get("kind") or "other")
             for layer in doc.get("layers", [])}
    cells: dict[tuple[int | None, str], int] = {}
    for x in doc.get("skipped") or []:  # in the grid, shown as ✗ (SKIPPED)
        if "kind" in x:
            cells[(x.get("block"), x["kind"] or "other")] = SKIPPED
    for entry in plan.get("layers", []):
        key = where.get(entry["name"])
        if key is None:
            continue
        cells[key] = max(cells.get(key, 0), int(entry["bits"]))
    order = list(KIND_HEADS)
    kinds = sorted({k for _, k in cells}, key=lambda k: (order.index(k) if k in order
                                                         else len(order), k))
    blocks = sorted({b for b, _ in cells if b is not None})
    rows: list[int | None] = [*blocks, *([None] if any(b is None for b, _ in cells) else [])]
    return rows, kinds, cells


def heatmap(doc: Mapping[str, Any], plan: Mapping[str, Any], block: int | None = None
            ) -> RenderableType:
    """Blocks down, module kinds across, each cell the planned bits (digits always shown)."""
    rows, kinds, cells = heat_grid(doc, plan)
    t = Table(box=None, padding=(0, 1, 0, 0), show_edge=False, pad_edge=False)
    t.add_column("block", justify="right", no_wrap=True)
    for k in kinds:
        t.add_column(KIND_HEADS.get(k, k), justify="center", no_wrap=True, min_width=4)
    for b in rows:
        label = "other" if b is None else str(b)
        mark = b is not None and b == block
        row: list[RenderableType] = [Text(("▸ " if mark else "") + label,
                                          style="bold" if mark else "")]
        for k in kinds:
            bits = cells.get((b, k))
            if bits is None:
                row.append(Text(" · ", style="dim"))
            elif bits == SKIPPED:
                row.append(Text(" ✗ ", style="bold red"))
            else:
                row.append(Text(f"{bits:^4}", style=BITS_STYLES.get(bits, "reverse")))
        t.add_row(*row)
    return t


def legend(plan: Mapping[str, Any]) -> Text:
    present = sorted({int(x["bits"]) for x in plan.get("layers", [])})
    t = Text("bits: ")
    for b in present:
        t.append(f" {b} ", style=BITS_STYLES.get(b, "reverse"))
        t.append(" ")
    t.append("(16: stays unquantized)", style="dim")
    return t


def skipped_line(doc: Mapping[str, Any]) -> Text | None:
    skipped = doc.get("skipped") or []
    if not skipped:
        return None
    t = Text("✗ not swept: ", style="bold red")
    t.append("; ".join(visible(f"{x['name']}: {x['reason']}") for x in skipped[:5]))
    if len(skipped) > 5:
        t.append(f"; and {len(skipped) - 5} more")
    return t


#: below this many columns the summary table drops its worst-SQNR and "< 2" columns
NARROW_TABLE = 52


class _FitWidth:
    """Builds the summary table for the width it is drawn at (so a resize re-picks)."""

    def __init__(self, doc: Mapping[str, Any], plan_index: int, alpha_key: str) -> None:
        self.args = (doc, plan_index, alpha_key)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        table = summary_table(*self.args, narrow=options.max_width < NARROW_TABLE)
        if table is not None:
            yield table


def summary_table(doc: Mapping[str, Any], plan_index: int, alpha_key: str,
                  narrow: bool = False) -> Table | None:
    """The study's summary rows of the chosen (granularity, scheme) for one alpha: the table
    `wstui quant` prints, with short heads so that it fits the tab beside the tree."""
    from rich import box

    from wstui.render.quant import fmt_fixed as _fmt
    from wstui.render.quant import fmt_pct as _pct
    from wstui.render.quant import setting_label as _setting_label

    plan = plan_entry(doc, plan_index)
    summary = doc.get("summary") or []
    if plan is None or not summary:
        return None
    pick = (plan["granularity"], plan["scheme"])
    rows = [summary[0], *(r for r in summary[1:] if (r["granularity"], r["scheme"]) == pick)]
    t = Table(title=f"{pick[0]} {pick[1]} · {ALPHA_LABELS.get(alpha_key, alpha_key)}",
              title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              show_edge=False, padding=0)
    heads = ("bits", "SQNR", "min", "α mean", "change", "corr", "[2,6]", "<2", "no fit")
    keep = [h for h in heads if not (narrow and h in ("min", "<2"))]
    for col in keep:
        t.add_column("nofit" if narrow and col == "no fit" else col, justify="right",
                     no_wrap=True)
    for row in rows:
        a = row[alpha_key]
        cells = dict(zip(heads, (
            _setting_label(row), _fmt(row["sqnr_mean"], ".1f"), _fmt(row["sqnr_min"], ".1f"),
            _fmt(a["mean"]), _pct(a["change_pct"]), _fmt(a["corr"]), str(a["in_2_6"]),
            str(a["below_2"]), str(a["no_fit"]))))
        t.add_row(*(cells[h] for h in keep))
    t.caption = ("SQNR: mean dB" if narrow else "SQNR: mean and worst dB") + \
        " · change and corr: against the unquantized α"
    t.caption_justify = "left"
    return t


def study_metrics(doc: Mapping[str, Any] | None, plan_index: int, alpha_key: str
                  ) -> dict[str, Any]:
    """What `e` exports for this view: the whole study plus the heat map as shown."""
    if doc is None:
        return {"study": None, "note": "the study has not been run (r runs it)"}
    plan = plan_entry(doc, plan_index)
    out: dict[str, Any] = {"alpha_shown": alpha_key, "study": dict(doc)}
    if plan is not None:
        rows, kinds, cells = heat_grid(doc, plan)
        out["heatmap"] = {
            "granularity": plan["granularity"], "scheme": plan["scheme"],
            "avg_bits_per_weight": plan.get("avg_bits_per_weight"),
            "blocks": rows, "kinds": kinds,
            "bits": [[None if cells.get((b, k)) == SKIPPED else cells.get((b, k))
                      for k in kinds] for b in rows],
            "skipped": skipped_names(doc),
        }
    return out


def tensor_note(doc: Mapping[str, Any] | None, name: str, plan_index: int,
                alpha_key: str = "alpha") -> Text | None:
    """Per-tensor tab: this matrix's α (the kind `a` picks) by bits, and its planned width."""
    if not doc:
        return None
    layer = next((x for x in doc.get("layers", []) if x["name"] == name), None)
    plan = plan_entry(doc, plan_index)
    if layer is None or plan is None:
        return None
    pick = (plan["granularity"], plan["scheme"])
    res = sorted((r for r in layer.get("results", [])
                  if (r["granularity"], r["scheme"]) == pick), key=lambda r: -r["bits"])
    from wstui.render.quant import fmt_fixed as _fmt

    t = Text(f"study {pick[0]} {pick[1]}: ", style="bold")
    label = "α fixed xmin" if alpha_key == "alpha_fixed_xmin" else "α"
    t.append(f"{label} " + " ".join(f"{r['bits']}b:{_fmt(r.get(alpha_key), '.2f')}"
                                    for r in res))
    planned = next((x["bits"] for x in plan.get("layers", []) if x["name"] == name), None)
    if planned is not None:
        t.append(f" · plan {planned} bits", style="bold")
    return t


class QuantStudyView(VerticalScroll):
    """Status, the summary table, α against bits, the plan heat map, the plan table."""

    DEFAULT_CSS = """
    QuantStudyView { height: 1fr; scrollbar-size-vertical: 1; }
    QuantStudyView > Static { height: auto; }
    QuantStudyView > PlotPanel { height: 16; }
    QuantStudyView > #qs-status { margin-bottom: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="qs-status")
        yield Static(id="qs-table")
        yield PlotPanel(id="plot-quant-alpha")
        yield Static(id="qs-heatmap")
        yield Static(id="qs-more")

    def set_status(self, status: Text) -> None:
        self.query_one("#qs-status", Static).update(status)

    def show(self, doc: Mapping[str, Any] | None, *, status: Text, plan_index: int = 0,
             alpha_key: str = "alpha", block: int | None = None, scope_label: str = "") -> None:
        """Draw the study (or only the status line when there is none yet)."""
        self.set_status(status)
        table = self.query_one("#qs-table", Static)
        panel = self.query_one("#plot-quant-alpha", PlotPanel)
        heat = self.query_one("#qs-heatmap", Static)
        more = self.query_one("#qs-more", Static)
        has = bool(doc and doc.get("layers"))
        for w in (table, panel, heat, more):
            w.display = has
        if not has:
            return
        assert doc is not None
        table.update(_FitWidth(doc, plan_index, alpha_key))
        panel.show(alpha_plot(doc, alpha_key), "no α to plot (no layer kept a fit)")
        plan = plan_entry(doc, plan_index)
        if plan is None:
            heat.update("")
        else:
            caption = Text(f"Plan ({plan['granularity']} {plan['scheme']}): per layer the "
                           "fewest bits keeping |Δα fixed-xmin| ≤ 2% and SQNR ≥ 30 dB",
                           style="bold")
            avg = plan.get("avg_bits_per_weight")
            if avg is not None:
                caption.append(f" · {avg:.2f} bits per weight", style="bold cyan")
            if block is not None:
                caption.append(f" · ▸ {visible(scope_label)}", style="dim")
            parts = [caption, heatmap(doc, plan, block), legend(plan)]
            if (skipped := skipped_line(doc)) is not None:
                parts.append(skipped)
            heat.update(Group(*parts))
        from wstui.render.quant import plan_table

        more.update(Group(Text(""), plan_table(doc)))
