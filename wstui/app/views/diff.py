"""Diff (8, diff mode only): the pairs of A and B, most changed first, with what is only in A
or only in B (`d` swaps which checkpoint the app calls A)."""

from __future__ import annotations

from typing import Any

from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from wstui.app.tabs import Tab
from wstui.app.views.base import View
from wstui.app.widgets.table import DiffTable
from wstui.documents.view import view_document
from wstui.render import plain


class DiffView(View):
    tab = Tab.DIFF
    title = label = short = "Diff"
    scoped = True
    needs_pair = "the Diff tab needs a second checkpoint: wstui PATH --diff PATH_B"
    focus = DiffTable

    def body(self) -> Widget:
        return Vertical(Static(id="diff-caption", classes="caption"), DiffTable(id="diff-table"))

    def show(self, node: Any) -> None:
        app, state, p = self.app, self.state, self.app.pairing
        if p is None:
            return
        table = self.screen.query_one(DiffTable)
        table.rebuild(state.compare, state.refs, state.labels, app.filtered_names(),
                      swapped=app.swapped)
        only_a, only_b = (p.only_in_b, p.only_in_a) if app.swapped else (p.only_in_a,
                                                                         p.only_in_b)
        extra = [f"{len(only_a)} only in A", f"{len(only_b)} only in B",
                 f"{len(p.shape_mismatch)} shape mismatches"]
        for side, names in (("A", only_a), ("B", only_b)):
            if 0 < len(names) <= 2:  # a rename shows as one of each: name them
                extra.append(f"only in {side}: {', '.join(names)}")
        if app.swapped:
            extra.append("d: A is the second checkpoint, Δrel of the base's norm")
        self.screen.query_one("#diff-caption", Static).update(plain(
            f"{len(state.compare)}/{len(p.pairs)} pairs compared, most changed first · "
            + ", ".join(extra)))  # names from the files: never markup

    def document(self, node: Any) -> dict[str, Any]:
        app, state, p = self.app, self.state, self.app.pairing
        if p is None:
            return self.selection_document(node)
        table = self.screen.query_one(DiffTable)
        rows = [{"name": n, "name_b": p.pairs[n].name, "shape": list(state.refs[n].shape),
                 "metrics": {"compare": state.compare[n].metrics.get("compare", {})},
                 "errors": dict(state.compare[n].errors)} for n in table.names]
        return view_document(self.tab, selection=self.selection(node.key,
                                                                state.scope_names(node.key)),
                             metrics={"pairs": rows},
                             b=str(getattr(app.checkpoint_b, "path", "")),
                             swapped=app.swapped, **p.to_dict())
