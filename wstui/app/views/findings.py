"""Findings (7): every finding of the checkpoint (the filter applies), worst first; enter jumps
to the tensor."""

from __future__ import annotations

from typing import Any

from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from wstui.app.tabs import Tab
from wstui.app.views.base import View
from wstui.app.widgets.table import FindingsTable
from wstui.documents.view import view_document
from wstui.render import plain


class FindingsView(View):
    tab = Tab.FINDINGS
    title = label = "Findings"
    short = "Find"
    scoped = True
    focus = FindingsTable
    keep_on_jump = False

    def body(self) -> Widget:
        return Vertical(Static(id="findings-caption", classes="caption"),
                        FindingsTable(id="findings-table"))

    def show(self, node: Any) -> None:
        state = self.state
        pairs = state.findings(self.app.filtered_names())
        text = self.app.filter_text
        self.screen.query_one("#findings-caption", Static).update(plain(
            f"{len(pairs)} finding{'' if len(pairs) == 1 else 's'}, worst first"
            + (f" · filter '{text}'" if text else "") + " · enter: go to tensor"))
        self.screen.query_one(FindingsTable).rebuild(pairs, state.refs, state.labels)

    def document(self, node: Any) -> dict[str, Any]:
        names = self.state.order
        pairs = self.state.findings(names)
        return view_document(self.tab, selection=self.selection(node.key, names), metrics={},
                             findings=[{"tensor": n, **f.to_dict()} for n, f in pairs])
