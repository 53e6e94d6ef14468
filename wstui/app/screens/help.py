"""The `?` screen: every key, what it does, and what the badges mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from wstui.app.format import BADGES, badge
from wstui.render import plain

#: (keys, what they do), in the order of DESIGN §9
KEYS: tuple[tuple[str, str], ...] = (
    ("j / k, ↓ / ↑", "move in the tree or a table"),
    ("h / l, ← / →", "collapse / expand a tree node; in the Table, across columns"),
    ("enter", "select: open a tree node, jump to a table or findings row's tensor"),
    ("tab / shift+tab", "next / previous pane"),
    ("1 … 8", "tabs: overview, spectrum, histogram, quantization, table, depth, findings,"
              " diff (diff mode)"),
    ("/", "filter tensors by name (substring or glob); escape clears"),
    ("n / N", "next / previous tensor with a finding"),
    ("s", "sort the table by the column under the cursor (again: reverse)"),
    ("L", "toggle log scale (histogram counts; depth metric)"),
    ("m", "depth view: next metric"),
    ("r / g / a", "quantization tab of the model or a block: run the study; next granularity;"
                  " free-refit or fixed-xmin α"),
    ("d", "diff mode: swap which checkpoint is A (header, plots, Overview, Diff tab)"),
    ("e", "export the current view to JSON (wstui.view/1)"),
    ("E", "export the whole scan to JSON (wstui.scan/1; diff mode: and wstui.diff/1)"),
    ("ctrl+p", "command palette: go to tensor, sort table by, export"),
    ("?", "this help"),
    ("q / ctrl+c", "quit (cancels the scan)"),
)

#: the Table's short column labels (docs/metrics.md has the full guide and this glossary)
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("std / kurt", "standard deviation; excess kurtosis (0 for a Gaussian, large: heavy tails)"),
    ("|max| / crest", "largest |value|; crest factor |max| / rms"),
    ("SQNR8", "signal-to-quantization-noise ratio in dB at 8 bits, per tensor, symmetric"),
    ("outl%", "share of values beyond 1.5·IQR outside the quartiles"),
    ("cond", "condition number σ_max / σ_min"),
    ("srank", "stable rank Σσ² / σ_max²: how many directions carry the energy"),
    ("erank", "effective rank exp(entropy of σ / Σσ): a smooth count of used dimensions"),
    ("util", "rank utilization: energy rank 90% / design rank"),
    ("α / KS", "power-law exponent of the eigenvalue tail; KS distance of that fit"),
    ("dead", "rows whose every |w| ≤ 1e-6"),
    ("Δrel", "diff mode: ‖B-A‖ / ‖A‖ (A: the base)"),
)
METRICS_GUIDE = "docs/metrics.md (every metric, how it is computed, its glossary)"

BADGE_MEANING = {
    "critical": "critical finding below", "warn": "warning below", "info": "info below",
    "error": "an analyzer failed", "clean": "scanned, no findings",
    "skipped": "listed, not analyzed (e.g. integer tensors)", "pending": "not scanned yet",
}


def help_renderable(keymap: Mapping[str, str] | None = None) -> Table:
    """The keys (and `keymap`, what the config file's [keys] remapped), badges, glossary."""
    t = Table(title="wstui keys", box=None, title_style="bold", expand=True)
    t.add_column("key", style="bold cyan", no_wrap=True)
    t.add_column("does")
    for keys, what in KEYS:
        t.add_row(keys, what)
    if keymap:
        t.add_row("", "")
        t.add_row(Text("remapped", style="bold"), "by the config file ([keys]; "
                  "wstui --print-config shows all)")
        for binding, keys in keymap.items():
            t.add_row(plain(keys), plain(binding))
    t.add_row("", "")
    t.add_row(Text("badges", style="bold"), "")
    for state in BADGES:
        t.add_row(badge(state), BADGE_MEANING[state])
    t.add_row("", "")
    t.add_row(Text("glossary", style="bold"), Text(f"more: {METRICS_GUIDE}", style="dim"))
    for label, meaning in GLOSSARY:
        t.add_row(label, meaning)
    return t


class HelpScreen(ModalScreen[None]):
    """Modal help; any of escape, ? or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close", id="help.close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(help_renderable(getattr(self.app, "keymap", None)))
            yield Static("escape, ? or q closes this screen", classes="dim")
