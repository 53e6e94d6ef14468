"""Depth (6): one metric against block index, one line per module kind (`m` picks the next
metric, `L` its log scale; the palette picks any)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from wstui.app.format import COLUMNS
from wstui.app.tabs import Tab
from wstui.app.views.base import View
from wstui.app.widgets.plots import PlotPanel
from wstui.documents.view import view_document
from wstui.render.plots import PlotSpec, depth_plot


class DepthView(View):
    tab = Tab.DEPTH
    title = label = short = "Depth"
    scoped = True
    keep_on_jump = False

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.index = next(i for i, c in enumerate(COLUMNS) if c.key == "alpha")
        self.log: bool | None = None  # None: the column's own default

    def body(self) -> Widget:
        return Vertical(Static(id="depth-caption", classes="caption"),
                        PlotPanel(id="plot-depth"))

    def pick(self, index: int) -> None:
        """The metric `COLUMNS[index]`, on its own default scale."""
        self.index = index
        self.log = None

    def toggle_log(self) -> None:
        col = COLUMNS[self.index]
        current = col.log if self.log is None else self.log
        self.log = not current

    def spec(self) -> PlotSpec:
        col = COLUMNS[self.index]
        log = col.log if self.log is None else self.log
        state = self.state
        refs = {n: ref for n, ref in state.refs.items() if ref.block is not None}
        # one line per kind, unless a kind has several tensors per block (biases, norms):
        # then one per tensor role, so a line never zigzags between two tensors of a block
        per_block = Counter((ref.kind, ref.block) for ref in refs.values())
        shared = {kind for (kind, _), count in per_block.items() if count > 1}
        rows = [(f"{ref.kind} {state.labels.get(n, n)}" if ref.kind in shared else ref.kind,
                 ref.block, state.value(n, col)) for n, ref in refs.items()]
        label = f"{col.label} ({col.analyzer}.{col.metric})"
        return depth_plot(rows, label, log).prepare()

    def show(self, node: Any) -> None:
        app = self.app
        col = COLUMNS[self.index]
        self.screen.query_one("#depth-caption", Static).update(
            f"{col.analyzer}.{col.metric} against block index · m: next metric · L: log scale")
        if col.analyzer == "compare" and app.pairing is None:
            why = f"{col.label} compares two checkpoints: wstui PATH --diff PATH_B"
        elif app.scan_complete and (col.analyzer != "compare" or app.diff_complete):
            why = f"no tensor has {col.analyzer}.{col.metric} in this scan"
        else:
            why = "no values yet for this metric (computing…)"
        self.screen.query_one("#plot-depth", PlotPanel).show(self.spec(), why)

    def document(self, node: Any) -> dict[str, Any]:
        key = self.app.scope_key()
        col = COLUMNS[self.index]
        return view_document(self.tab, selection=self.selection(key, self.state.scope_names(key)),
                             metrics={"metric": f"{col.analyzer}.{col.metric}"},
                             plots=[self.spec()])
