"""Table (5): every tensor of the selection's block (or the model), one row each, sortable by
any metric (`s`, or the palette's "Sort table by …")."""

from __future__ import annotations

from typing import Any

from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from wstui.app.format import COLUMNS, plural
from wstui.app.tabs import Tab
from wstui.app.views.base import View
from wstui.app.widgets.table import TensorTable
from wstui.documents.view import view_document
from wstui.render import plain


class TableView(View):
    tab = Tab.TABLE
    title = label = short = "Table"
    scoped = True
    focus = TensorTable
    keep_on_jump = False

    def body(self) -> Widget:
        return Vertical(Static(id="table-caption", classes="caption"),
                        TensorTable(id="tensor-table"))

    def show(self, node: Any) -> None:
        app, state = self.app, self.state
        key = app.scope_key()
        scope = state.node_by_key[key]
        table = self.screen.query_one(TensorTable)
        table.rebuild(state.scope_names(key), state.results, state.refs, app.filter_fn(),
                      labels=state.labels, state_of=state.tensor_state, value_of=state.value)
        order = ""
        if table.sort_column:
            order = f" · sorted by {table.sort_column} {'↓' if table.sort_reverse else '↑'}"
        filt = app.filter_text
        self.screen.query_one("#table-caption", Static).update(plain(
            f"{scope.label}: {plural(len(table.names), 'tensor')}{order}"
            + (f" · filter '{filt}'" if filt else "")
            + " · s: sort by column · enter: open"))  # the filter as typed: never markup

    def sort_by(self, column: str) -> None:
        self.screen.query_one(TensorTable).set_sort(column)

    def sort_here(self) -> None:
        self.screen.query_one(TensorTable).action_sort_here()

    def document(self, node: Any) -> dict[str, Any]:
        key = self.app.scope_key()
        table = self.screen.query_one(TensorTable)
        refs = self.state.refs
        rows = [{"name": n, "kind": refs[n].kind, "block": refs[n].block,
                 **{c.key: self.state.value(n, c) for c in COLUMNS}}
                for n in table.names]
        return view_document(self.tab, selection=self.selection(key, self.state.scope_names(key)),
                             metrics={"columns": [c.key for c in COLUMNS], "rows": rows},
                             sort={"column": table.sort_column, "reverse": table.sort_reverse})
