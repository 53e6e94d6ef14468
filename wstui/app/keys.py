"""Every binding id of the app, its default keys and what it does: what the config file's
`[keys]` may remap (checked before the app starts) and what `wstui --print-config` lists."""

from __future__ import annotations

from textual.binding import Binding


def binding_table() -> dict[str, tuple[str, str]]:
    """id -> (default keys, what it does), for every binding with an id."""
    from wstui.app.app import WstuiApp
    from wstui.app.screens.help import HelpScreen
    from wstui.app.widgets.table import DiffTable, FindingsTable, TensorTable
    from wstui.app.widgets.tree import LayerTree

    table: dict[str, tuple[str, str]] = {}
    for cls in (WstuiApp, LayerTree, TensorTable, FindingsTable, DiffTable, HelpScreen):
        for b in cls.BINDINGS:
            if isinstance(b, Binding) and b.id and b.id not in table:
                table[b.id] = (b.key, b.tooltip or b.description)
    return table
