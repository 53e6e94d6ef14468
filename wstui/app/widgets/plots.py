"""A plot panel: a status line above a `PlotextPlot` that draws a prepared `PlotSpec`.

Drawing happens on the main thread only (plotext keeps module-global state); the data it
draws was decimated and log-transformed on a worker thread (`PlotSpec.prepare`).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from wstui.render import plain
from wstui.render.plots import PlotSpec, Series

#: Line markers per series index under NO_COLOR, where colour cannot tell the lines apart;
#: scatter series always use "dot", and reference lines "x", which no line uses (the ESD and
#: its fit stay apart, and so do a line and a threshold or band it crosses).
MARKERS = ("braille", "+", "*", "o", "sd", "fhd", "hd")


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

    def show(self, spec: PlotSpec | None, message: str = "", subject: str = "") -> None:
        """Draw `spec` (prepared), or clear the plot and show `message` instead; `subject`
        (the tensor's full name, block included) heads the caption: the tree shows names
        relative to their block, so the plot says which block it is of."""
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
        caption.update(plain(" · ".join(p for p in (subject, s.title, s.note) if p)))
        plot.display = True
        if not s.draw:
            s.prepare()
        i = 0
        for ser in s.draw:
            if ser.style in ("vline", "hline"):
                self._reference(ser, s)
                continue
            if not ser.x:
                continue
            marker = MARKERS[i % len(MARKERS)] if self.app.no_color else "braille"
            if ser.style == "bar":
                plt.bar(ser.x, ser.y, color=ser.color, label=ser.label, width=0.9)
            elif ser.style == "scatter":
                plt.scatter(ser.x, ser.y, color=ser.color, label=ser.label, marker="dot")
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

    def _reference(self, ser: Series, spec: PlotSpec) -> None:
        """A threshold or fit-range line (26 dB, xmin) drawn as a labelled line across the
        data, so that the legend names it (plotext's hline/vline take no label)."""
        plt = self.query_one(PlotextPlot).plt
        marker = "x" if self.app.no_color else "braille"
        first = True
        values = ser.x if ser.style == "vline" else ser.y
        for v in values:
            if v is None:
                continue
            label = ser.label if first else None
            first = False
            if ser.style == "vline" and spec.y_range is not None:
                lo, hi = spec.y_range
                plt.plot([v, v], [lo, hi], color=ser.color, label=label, marker=marker)
            elif ser.style == "hline" and spec.x_range is not None:
                lo, hi = spec.x_range
                plt.plot([lo, hi], [v, v], color=ser.color, label=label, marker=marker)
