"""A plot panel: a status line above a `PlotextPlot` that draws a prepared `PlotSpec`.

Drawing happens on the main thread only (plotext keeps module-global state); the data it
draws was decimated and log-transformed on a worker thread (`PlotSpec.prepare`).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from wstui.app.plotdata import PlotSpec
from wstui.render import plain

#: Markers per series index under NO_COLOR, where colour cannot tell the lines apart.
MARKERS = ("braille", "dot", "x", "+", "*", "o", "sd", "fhd")


class PlotPanel(Vertical):
    """One plot with a one-line caption ("computing…", the fit's α, why nothing is shown)."""

    DEFAULT_CSS = """
    PlotPanel { height: 1fr; }
    PlotPanel > .plot-caption { height: 1; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.spec: PlotSpec | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="plot-caption")
        yield PlotextPlot()

    def show(self, spec: PlotSpec | None, message: str = "") -> None:
        """Draw `spec` (prepared), or clear the plot and show `message` instead."""
        self.spec = spec if spec is not None and not spec.empty else None
        caption = self.query_one(".plot-caption", Static)
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        if self.spec is None:
            caption.update(plain(message))  # may quote an error or a note: never markup
            plot.display = False
            return
        s = self.spec
        caption.update(plain(" · ".join(p for p in (s.title, s.note) if p)))
        plot.display = True
        if not s.draw:
            s.prepare()
        i = 0
        for ser in s.draw:
            if ser.style == "vline":
                for x in ser.x:
                    if x is not None:
                        plt.vline(x, ser.color or "yellow")
                continue
            if ser.style == "hline":
                for y in ser.y:
                    if y is not None:
                        plt.hline(y, ser.color or "red")
                continue
            if not ser.x:
                continue
            marker = MARKERS[i % len(MARKERS)] if self.app.no_color else "braille"
            if ser.style == "bar":
                plt.bar(ser.x, ser.y, color=ser.color, label=ser.label, width=0.9)
            elif ser.style == "scatter":
                plt.scatter(ser.x, ser.y, color=ser.color, label=ser.label,
                            marker="dot" if i == 0 or marker == "braille" else marker)
            else:
                plt.plot(ser.x, ser.y, color=ser.color, label=ser.label, marker=marker)
            i += 1
        plt.xlabel(s.x_label + (" (log)" if s.x_log else ""))
        plt.ylabel(s.y_label + (" (log)" if s.y_log else ""))
        if s.x_ticks:
            plt.xticks(*s.x_ticks)
        if s.y_ticks:
            plt.yticks(*s.y_ticks)
        plot.refresh()
