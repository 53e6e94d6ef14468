"""The `?` screen: every key, what it does, and what the badges mean.

The keys are read from the bindings when the screen opens (`wstui.app.keys.key_rows`), with
the config file's remaps: what `?` says is what the keys do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from wstui.app.bindings import HELP_BINDINGS
from wstui.app.format import BADGES, badge
from wstui.app.keys import key_rows
from wstui.render import plain

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
    for row in key_rows(keymap):
        t.add_row(plain(row.key_text), row.does)
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

    BINDINGS: ClassVar[list[BindingType]] = HELP_BINDINGS

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(help_renderable(getattr(self.app, "keymap", None)))
            yield Static("escape, ? or q closes this screen", classes="dim")
