"""The Table tab (one row per tensor of a block or the model) and the Findings list.

Both rebuild with `clear()` + one batch of rows (DataTable relayouts on every removal), and
both turn enter on a row into `JumpToTensor`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from analyzers.core import Finding, TensorResult
from wstui.app.bindings import FOLD, MOVE, SELECT, SORT
from wstui.app.format import (
    COLUMN_BY_KEY,
    COLUMNS,
    STATE_RANK,
    Column,
    badge,
    column_value,
    num,
    oriented,
    result_state,
    shape_text,
    sort_key,
)
from wstui.app.messages import JumpToTensor, SortChanged
from wstui.render import plain

#: fixed columns before the metric columns: key -> label
FIXED = {"state": " ", "block": "blk", "name": "tensor", "kind": "kind", "shape": "shape"}


def _right(value: Any) -> Text:
    return Text(num(value), justify="right")


def tail(text: str, width: int) -> str:
    """`text` cut to `width` cells from the left, with an ellipsis: a tensor name's tail is
    what tells it from its siblings (`…LayerNorm.weight`, `…LayerNorm.bias`)."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def name_cells(table: DataTable, share: float, least: int = 16, most: int = 48) -> int:
    """How wide a name column may be: `share` of the table's width, so that at 80 columns a
    row shows what was measured, not only where."""
    width = table.size.width or table.app.size.width // 2
    return max(least, min(most, int(width * share)))


#: j/k (and h/l across cells) in every table, as in the tree: README and `?` promise them.
VIM_KEYS: list[BindingType] = [
    Binding("j", "cursor_down", "Down", show=False, id="table.down", group=MOVE),
    Binding("k", "cursor_up", "Up", show=False, id="table.up", group=MOVE),
    Binding("enter", "select_cursor", "Select", show=False, id="table.select", group=SELECT),
]
VIM_CELL_KEYS: list[BindingType] = [
    Binding("h", "cursor_left", "Left", show=False, id="table.left", group=FOLD),
    Binding("l", "cursor_right", "Right", show=False, id="table.right", group=FOLD),
]


class TensorTable(DataTable):
    """Tensors with their headline metrics; `s` sorts by the column under the cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *VIM_KEYS, *VIM_CELL_KEYS,
        Binding("s", "sort_here", "Sort", id="table.sort", tooltip="sort by this column",
                group=SORT),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="cell", zebra_stripes=True, **kwargs)
        self.fixed_columns = 3  # badge, block, name: they stay while the metrics scroll
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.names: list[str] = []

    def on_mount(self) -> None:
        for key, label in FIXED.items():
            self.add_column(label, key=key)
        for col in COLUMNS:
            self.add_column(col.label, key=col.key)

    def rebuild(
        self, names: Sequence[str], results: Mapping[str, TensorResult], refs: Mapping[str, Any],
        filter_fn: Any = None, labels: Mapping[str, str] | None = None,
        state_of: Any = None, value_of: Callable[[str, Column], Any] | None = None,
    ) -> None:
        """Show `names` (tree order), filtered and sorted as the table currently is;
        `value_of(name, column)` reads a cell where results alone lack it (Δrel: the diff)."""
        self._value_of = value_of or (lambda n, col: column_value(results.get(n), col))
        rows = [n for n in names if filter_fn is None or filter_fn(refs[n])]
        if self.sort_column is not None:
            rows.sort(key=lambda n: self._sort_value(n, results, refs), reverse=self.sort_reverse)
            if self.sort_reverse:  # keep missing values last
                rows.sort(key=lambda n: self._sort_value(n, results, refs)[0])
        row, column = self.cursor_coordinate
        self.names = rows
        self.clear()
        room = name_cells(self, 0.45)
        for n in rows:
            ref, res = refs[n], results.get(n)
            cells: list[Any] = [
                badge(state_of(n) if state_of else result_state(res)),
                "" if ref.block is None else str(ref.block),
                # a str cell is parsed as markup: names from the file go in as Text
                plain(tail((labels or {}).get(n, ref.display_name), room)), plain(ref.kind),
                shape_text(ref.shape),
            ]
            cells += [_right(self._value_of(n, col)) for col in COLUMNS]
            self.add_row(*cells, key=n)
        if rows:
            self.move_cursor(row=min(row, len(rows) - 1), column=column, scroll=False)

    def _sort_value(self, name: str, results: Mapping[str, TensorResult],
                    refs: Mapping[str, Any]) -> tuple[int, Any]:
        col = self.sort_column
        ref = refs[name]
        if col == "name":
            return (0, ref.display_name)
        if col == "kind":
            return (0, ref.kind)
        if col == "block":
            return sort_key(ref.block)
        if col == "shape":
            return (0, ref.numel)
        if col == "state":
            return (0, STATE_RANK[result_state(results.get(name))])
        return sort_key(self._value_of(name, COLUMN_BY_KEY[col]))

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        """Sort by `column`; same column again flips the order. Metric columns start descending."""
        if reverse is None:
            if column == self.sort_column:
                reverse = not self.sort_reverse
            else:
                reverse = column in COLUMN_BY_KEY or column == "state"
        self.sort_column, self.sort_reverse = column, reverse

    def action_sort_here(self) -> None:
        if not self.columns:
            return
        keys = list(self.columns)
        col = keys[min(self.cursor_column, len(keys) - 1)].value
        self.set_sort(col)
        self.post_message(SortChanged())

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        if event.cell_key.row_key.value:
            self.post_message(JumpToTensor(event.cell_key.row_key.value))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.set_sort(event.column_key.value or "name")
        self.post_message(SortChanged())


class FindingsTable(DataTable):
    """Every finding, worst first; enter jumps to its tensor."""

    BINDINGS: ClassVar[list[BindingType]] = [*VIM_KEYS]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.signature: tuple[Any, ...] = ()

    def on_mount(self) -> None:
        # code and value before the (long) tensor name: at 80 columns a row still says what
        # was found, not only where
        for key, label in (("sev", " "), ("code", "code"), ("value", "value"),
                           ("block", "blk"), ("tensor", "tensor"), ("threshold", "threshold"),
                           ("message", "message")):
            self.add_column(label, key=key)

    def rebuild(self, pairs: list[tuple[str, Finding]], refs: Mapping[str, Any],
                labels: Mapping[str, str] | None = None) -> None:
        """`labels`: the tree's names (relative to the block, which has its own column)."""
        width = self.scrollable_content_region.width or self.app.size.width // 2
        # what the badge, code, value and block columns leave (each cell has 2 of padding,
        # the name's own included)
        used = 3 + 5 + 3 + max((len(f.code) + 2 for _, f in pairs), default=6) + max(
            (len(num(f.value)) + 2 for _, f in pairs), default=7)
        room = max(10, width - used)
        signature = (room, *((n, f.code, f.severity) for n, f in pairs))
        if signature == self.signature:
            return
        self.signature = signature
        row = self.cursor_row
        self.clear()
        for i, (name, f) in enumerate(pairs):
            block = refs[name].block
            label = (labels or {}).get(name, refs[name].display_name)
            if len(label) > room and label.endswith(".weight"):
                label = label[:-len(".weight")]  # tight: the module says more than `.weight`
            self.add_row(badge(f.severity.value), plain(f.code), _right(f.value),
                         "" if block is None else str(block), plain(tail(label, room)),
                         _right(f.threshold), plain(f.message), key=f"{i}:{name}")
        if pairs:
            self.move_cursor(row=min(row, len(pairs) - 1))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value or ""
        self.post_message(JumpToTensor(key.split(":", 1)[1]))


#: Diff tab columns: key -> (label, metric in metrics["compare"])
DIFF_COLUMNS = {
    "rel_change": "Δrel", "cosine": "cos", "l2_distance": "‖B-A‖", "max_abs_diff": "max|Δ|",
    "frac_changed": "changed", "delta_alpha": "Δα", "delta_stable_rank": "ΔW srank",
    "delta_energy_rank_90": "ΔW rank90",
}


class DiffTable(DataTable):
    """Diff mode: compared pairs, most changed (rel_change) first; enter jumps to the tensor."""

    BINDINGS: ClassVar[list[BindingType]] = [*VIM_KEYS]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.names: list[str] = []
        self.swapped = False

    def on_mount(self) -> None:
        self.add_column(" ", key="state")
        self.add_column("tensor", key="name")
        self.add_column("blk", key="block")
        for key, label in DIFF_COLUMNS.items():
            self.add_column(label, key=key)

    def rebuild(self, compare: Mapping[str, TensorResult], refs: Mapping[str, Any],
                labels: Mapping[str, str], names: Sequence[str], swapped: bool = False) -> None:
        """Rows most changed first; `swapped` (after `d`): signed deltas as the new A reads
        them."""
        rows = [n for n in names if n in compare]
        rows.sort(key=lambda n: sort_key(compare[n].metrics.get("compare", {}).get(
            "rel_change")), reverse=True)
        rows.sort(key=lambda n: sort_key(compare[n].metrics.get("compare", {}).get(
            "rel_change"))[0])
        if rows == self.names and self.row_count and swapped == self.swapped:
            return
        self.swapped = swapped
        row = self.cursor_row
        self.names = rows
        self.clear()
        room = name_cells(self, 0.4)
        for n in rows:
            res = compare[n]
            m = oriented(res.metrics.get("compare", {}), swapped)
            block = refs[n].block
            cells: list[Any] = [badge(result_state(res)), plain(tail(labels.get(n, n), room)),
                                "" if block is None else str(block)]
            if res.errors.get("compare"):
                cells.append(plain(res.errors["compare"], style="magenta"))
                cells += [""] * (len(DIFF_COLUMNS) - 1)
            else:
                cells += [_right(m.get(k)) for k in DIFF_COLUMNS]
            self.add_row(*cells, key=n)
        if rows:
            self.move_cursor(row=min(row, len(rows) - 1), scroll=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(JumpToTensor(event.row_key.value))
