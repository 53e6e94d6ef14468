"""Spectrum (2): σ by rank on log-log axes beside the ESD with its power-law fit and xmin; in
diff mode the σ of A and B overlaid."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from textual.containers import Horizontal
from textual.widget import Widget

from wstui.app.tabs import Tab
from wstui.app.views.base import TensorView
from wstui.app.widgets.plots import PlotPanel
from wstui.render.plots import PlotSpec

#: below this screen width the two plots stack (each needs a useful width)
SIDE_BY_SIDE = 150


class SpectrumView(TensorView):
    tab = Tab.SPECTRUM
    title = label = "Spectrum"
    short = "Spec"

    def body(self) -> Widget:
        return Horizontal(PlotPanel(id="plot-spectrum"), PlotPanel(id="plot-esd"),
                          id="spectrum-plots")

    def resize(self, width: int) -> None:
        """The two plots side by side only when both get a useful width."""
        for plots in self.screen.query("#spectrum-plots"):  # absent until lazily mounted
            plots.set_class(width < SIDE_BY_SIDE, "stacked")

    def plots(self, node: Any) -> dict[str, PlotSpec]:
        plots = {**self.tensor_plots(node)}
        overlay = self.overlay(node)
        if "spectrum" in overlay:
            plots["spectrum"] = overlay["spectrum"]
        return plots

    def tensor_specs(self, node: Any) -> list[PlotSpec]:
        plots = self.plots(node)
        return [plots[k] for k in ("spectrum", "esd") if k in plots]

    def show(self, node: Any) -> None:
        plots = self.plots(node)
        subject = node.tensor.display_name if node.tensor is not None else ""
        self.resize(self.app.size.width)
        self.screen.query_one("#plot-spectrum", PlotPanel).show(
            plots.get("spectrum"), self.why_missing(node, "spectral"), subject)
        esd = plots.get("esd")
        if esd is not None and self.app.pairing is not None:  # only the base is scanned
            which = "B: the base, after d" if self.app.swapped else "A: the base"
            esd = replace(esd, note=" · ".join(
                p for p in (esd.note, f"of {which} (B's σ is in the plot beside)") if p))
        if node.tensor is None:
            why_esd = ""  # said once, in the panel beside
        elif "spectrum" not in plots or plots["spectrum"].empty:
            why_esd = self.why_missing(node, "spectral")
        else:
            why_esd = "no power-law fit (fewer than 10 eigenvalues above 1e-5)"
        self.screen.query_one("#plot-esd", PlotPanel).show(esd, why_esd, subject)
