"""Command-palette provider (ctrl+p): go to a tensor, open a tab, sort the table, export."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.fuzzy import Matcher
from textual.markup import escape

from wstui.app.format import COLUMNS
from wstui.app.tabs import Tab, digit
from wstui.app.widgets.table import FIXED
from wstui.render import visible

if TYPE_CHECKING:  # pragma: no cover
    from wstui.app.app import WstuiApp

MAX_TENSOR_HITS = 40


def highlight(matcher: Matcher, candidate: str) -> Content:
    """`matcher.highlight` without its markup parse: a hit may quote a tensor name, which
    is text (`[/x].weight` would raise, `[link=…]` would become a link)."""
    content = Content(candidate)
    _, offsets = matcher.fuzzy_search.match(matcher.query, candidate)
    for offset in offsets:
        if not candidate[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content


class WstuiCommands(Provider):
    """`Go to tensor…`, `Sort table by…`, `Export view`, `Export scan`."""

    @property
    def wapp(self) -> WstuiApp:
        return cast("WstuiApp", self.app)

    def _static(self) -> list[tuple[str, Callable[[], Any], str]]:
        app = self.wapp
        return [
            ("Go to tensor…", app.action_filter, "type a name in the filter box (/)"),
            ("Sort table by…", partial(app.action_show_tab, Tab.TABLE),
             "open the table; type 'sort table by <metric>' here to pick one"),
            ("Export view", app.action_export_view, "write this view as wstui.view/1 JSON"),
            ("Export scan", app.action_export_scan, "write the whole scan as wstui.scan/1 JSON"),
        ]

    def _searched(self) -> list[tuple[str, Callable[[], Any], str]]:
        """Commands found by typing (not listed on an empty palette): the study, and a tab
        from the app's registry of views."""
        app = self.wapp
        tabs = [(f"Open tab {view.label}", partial(app.action_show_tab, view.tab),
                 f"key {digit(i)}") for i, view in enumerate(app.views.values())
                if app.pairing is not None or not view.needs_pair]
        return [("Run quantization study", app.action_quant_study,
                 "fake-quantize every matrix, refit alpha, plan bits per layer (r)"),
                ("Run sensitivity study", app.action_sens_study,
                 "gradients on a calibration text, super weights, perturbation (r on its tab)"),
                *tabs]

    async def discover(self) -> Hits:
        for name, callback, help_text in self._static():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        app = self.wapp
        for name, callback, help_text in [*self._static(), *self._searched()]:
            if (score := matcher.match(name)) > 0:
                yield Hit(score, highlight(matcher, name), callback, help=help_text)
        labels = {**FIXED, **{c.key: f"{c.label} ({c.analyzer}.{c.metric})" for c in COLUMNS}}
        for key, label in labels.items():
            text = f"Sort table by {label.strip() or 'severity'}"
            if (score := matcher.match(text)) > 0:
                yield Hit(score, highlight(matcher, text), partial(app.sort_table_by, key))
        for i, col in enumerate(COLUMNS):
            text = f"Depth view of {col.label} ({col.analyzer}.{col.metric})"
            if (score := matcher.match(text)) > 0:
                yield Hit(score, highlight(matcher, text), partial(app.show_depth, i))
        hits = 0
        for name in app.state.order:
            ref = app.state.refs[name]
            text = f"Go to tensor {visible(ref.display_name)}"
            if (score := matcher.match(text)) > 0:
                yield Hit(score, highlight(matcher, text), partial(app.jump_to, name),
                          text=text, help=escape(f"{visible(ref.kind)} "
                                                 f"{'×'.join(map(str, ref.shape))}"))
                hits += 1
                if hits >= MAX_TENSOR_HITS:
                    break
