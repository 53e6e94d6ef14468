"""Histogram (3): the tensor's value histogram, linear or log counts (`L`); in diff mode the
histograms of A and B overlaid."""

from __future__ import annotations

from typing import Any

from textual.containers import Vertical
from textual.widget import Widget

from wstui.app.tabs import Tab
from wstui.app.views.base import TensorView
from wstui.app.widgets.plots import PlotPanel
from wstui.render.plots import PlotSpec, histogram_plot


class HistogramView(TensorView):
    tab = Tab.HISTOGRAM
    title = label = "Histogram"
    short = "Hist"

    def body(self) -> Widget:
        return Vertical(PlotPanel(id="plot-histogram"))

    def spec(self, node: Any) -> PlotSpec | None:
        if node.tensor is None:
            return None
        overlay = self.overlay(node)
        if "histogram" in overlay:
            return overlay["histogram"]
        result = self.state.results.get(node.tensor.name)
        if result is None:
            return None
        if not self.app.log_y:
            return self.tensor_plots(node).get("histogram")
        return histogram_plot(result, log_y=True).prepare()

    def tensor_specs(self, node: Any) -> list[PlotSpec]:
        spec = self.spec(node)
        return [spec] if spec else []

    def show(self, node: Any) -> None:
        subject = node.tensor.display_name if node.tensor is not None else ""
        self.screen.query_one("#plot-histogram", PlotPanel).show(
            self.spec(node), self.why_missing(node, "stats"), subject)
