"""The Sensitivity tab's widgets: one scrolling panel (status and progress bar, the depth plot
or a tensor's scores and heat map, the critical weights, the super weights, the perturbation
table) and the critical-weights table, where enter goes to the weight's tensor.

Everything shown comes from the `wstui.sensitivity/1` document and the per-matrix maps the
app's run keeps beside it (`wstui.engine.sensitivity.run_sensitivity_maps`); the tables are
the ones `wstui sensitivity` prints (`wstui.render.sensitivity`), so both faces read the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, ProgressBar, Static

from wstui.app.messages import JumpToTensor
from wstui.app.widgets.plots import PlotPanel
from wstui.app.widgets.table import VIM_KEYS, tail
from wstui.render import plain
from wstui.render.numbers import fmt_fixed

#: the critical-weights table: key -> heading
CRITICAL_COLUMNS = {"tensor": "tensor", "row": "row", "col": "col", "value": "value",
                    "score": "score"}


class CriticalTable(DataTable):
    """Critical weights (tensor, row, col, value, score), most sensitive first; enter goes to
    the row's tensor in the tree."""

    BINDINGS: ClassVar[list[BindingType]] = [*VIM_KEYS]
    DEFAULT_CSS = "CriticalTable { height: auto; max-height: 14; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.targets: list[str | None] = []  # per row: the tensor (stored name) to go to
        self.here: str | None = None  # the tensor the tab shows (enter on its rows stays)

    def on_mount(self) -> None:
        for key, label in CRITICAL_COLUMNS.items():
            self.add_column(label, key=key)

    def rebuild(self, rows: Sequence[Mapping[str, Any]], targets: Sequence[str | None],
                *, name_width: int = 28, here: str | None = None) -> None:
        """`rows` as in the document's top-k (tensor, row, col, value, score); `targets` the
        stored name of each row's tensor (None: not in the tree)."""
        cursor = self.cursor_row
        self.clear()
        self.targets = list(targets)
        self.here = here
        for i, r in enumerate(rows):
            self.add_row(plain(tail(str(r["tensor"]), name_width)), _right(str(r["row"])),
                         _right("" if r.get("col") is None else str(r["col"])),
                         _right(fmt_fixed(r.get("value"), ".3g")),
                         _right(fmt_fixed(r.get("score"), ".3g")), key=str(i))
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1), scroll=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        i = int(event.row_key.value or 0)
        target = self.targets[i] if i < len(self.targets) else None
        if target is None:
            self.app.notify("that tensor is not in the tree (left out by --tensors?)",
                            timeout=3)
        elif target != self.here:
            self.post_message(JumpToTensor(target))


def _right(text: str) -> Text:
    return Text(text, justify="right")


class SensitivityPanel(VerticalScroll):
    """The tab's content, top to bottom; parts with nothing to show are hidden."""

    DEFAULT_CSS = """
    SensitivityPanel { height: 1fr; scrollbar-size-vertical: 1; }
    SensitivityPanel > Static { height: auto; }
    SensitivityPanel > ProgressBar { height: 1; }
    SensitivityPanel > PlotPanel { height: 16; }
    SensitivityPanel > #sens-status { margin-bottom: 1; }
    SensitivityPanel > .sens-caption { margin-top: 1; text-style: bold; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="sens-status")
        yield ProgressBar(total=100, show_eta=False, id="sens-bar")
        yield Static(id="sens-scores")
        yield PlotPanel(id="plot-sens")
        yield Static(id="sens-heat")
        yield Static(id="sens-topk-caption", classes="sens-caption")
        yield CriticalTable(id="sens-topk")
        yield Static(id="sens-super")
        yield Static(id="sens-perturb")

    def parts(self) -> dict[str, Any]:
        return {w.id: w for w in self.children if w.id}
