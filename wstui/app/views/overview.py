"""Overview (1): a tensor's identity, findings and every metric with threshold marks; for a
block or the model, a summary of the tensors below (`wstui.app.widgets.metrics`)."""

from __future__ import annotations

from typing import Any

from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from wstui.app.tabs import Tab
from wstui.app.views.base import TensorView
from wstui.app.widgets.metrics import scope_overview, tensor_overview


class OverviewView(TensorView):
    tab = Tab.OVERVIEW
    title = label = "Overview"
    short = "Info"
    lazy = False  # the first tab: painted in the first frame

    def body(self) -> Widget:
        return VerticalScroll(Static(id="overview-body"), id="overview-scroll")

    def wants(self, node: Any, *, tensor: bool, scope: bool) -> bool:
        return tensor if node.tensor is not None else scope

    def show(self, node: Any) -> None:
        body = self.screen.query_one("#overview-body", Static)
        app, state = self.app, self.state
        if node.tensor is not None:
            ref = node.tensor
            compare = state.compare.get(ref.name) if app.pairing is not None else None
            body.update(tensor_overview(ref, state.results.get(ref.name), app.thresholds,
                                        compare=compare, swapped=app.swapped))
        else:
            names = state.scope_names(node.key)
            notes = app.notes if node is state.root else ()
            body.update(scope_overview(node, names, state, state.findings(names),
                                       notes=notes, done=app.scan_complete))
