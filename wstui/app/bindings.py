"""The app's key bindings: the one copy of what each key does.

The footer shows the ones with `show=True`; `?` and the README's key table are generated from
these (`wstui.app.keys`), so each `Binding` carries its id (the config file's `[keys]` remaps
by id, Textual's `set_keymap` as Posting does) and a tooltip, and bindings that read as one
line share a `Binding.Group` (whose description is that line). This module imports only
textual and the tab ids: the widgets take their groups from here.
"""

from __future__ import annotations

from textual.binding import Binding, BindingType

from wstui.app.tabs import Tab, digit

G = Binding.Group

MOVE = G("move in the tree or a table")
FOLD = G("collapse / expand a tree node; in the Table, move across columns")
SELECT = G("open a tree node; on a table or findings row, jump to its tensor")
QUIT = G("quit at once (cancels the scan)")
PANE = G("next / previous pane")
TABS = G("tabs: " + ", ".join(tab.value for tab in Tab))
FILTER = G("filter tensors by name (substring or glob); esc clears")
FINDING = G("next / previous tensor with a finding")
SORT = G("sort the table by the column under the cursor (again: reverse)")
STUDY = G("model's or a block's Quantization tab: run the quantization study; next "
          "granularity; free-refit or fixed-xmin α")
STEP = G("series mode: move the step cursor to the previous / next checkpoint of the run "
         "(every view shows that checkpoint)")
SENS = G("Sensitivity tab: run the sensitivity study (again: cancel); cancel it; next metric")
EXPORT = G("export the current view (wstui.view/1) / the whole scan (wstui.scan/1; "
           "diff mode: and wstui.diff/1) as JSON")

#: the digit keys: one per tab, in tab order
TAB_BINDINGS: list[BindingType] = [
    Binding(digit(i), f"show_tab('{tab}')", tab.value.capitalize(), show=False,
            id=f"app.tab.{tab}", group=TABS)
    for i, tab in enumerate(Tab)
]

#: `WstuiApp.BINDINGS`. The footer shows the `show=True` ones in this order.
APP_BINDINGS: list[BindingType] = [
    Binding("q", "quit_now", "Quit", id="app.quit", tooltip="quit, cancelling the scan",
            group=QUIT),
    Binding("ctrl+q", "quit_now", "Quit", show=False, priority=True, id="app.quit_ctrl",
            group=QUIT),
    Binding("ctrl+c", "quit_now", "Quit", show=False, priority=True,
            id="app.quit_interrupt", tooltip="quit, as in htop (ctrl+c did nothing)",
            group=QUIT),
    Binding("question_mark", "help", "Help", id="app.help",
            tooltip="this help: every key, the badges, a glossary"),
    Binding("tab", "focus_next", "Next pane", show=False, id="app.next_pane", group=PANE),
    Binding("shift+tab", "focus_previous", "Previous pane", show=False, id="app.prev_pane",
            group=PANE),
    *TAB_BINDINGS,
    Binding("slash", "filter", "Filter", id="app.filter",
            tooltip="filter tensors by name or glob", group=FILTER),
    Binding("escape", "clear_filter", "Clear filter", show=False, id="app.clear_filter",
            group=FILTER),
    Binding("n", "next_finding(1)", "Next finding", id="app.next_finding",
            tooltip="next tensor with a finding", group=FINDING),
    Binding("N", "next_finding(-1)", "Prev finding", show=False, id="app.prev_finding",
            group=FINDING),
    Binding("s", "sort", "Sort", show=False, id="app.sort",
            tooltip="sort the table by the column under the cursor", group=SORT),
    Binding("L", "toggle_log", "Log", show=False, id="app.log",
            tooltip="log scale: histogram counts or the depth metric"),
    Binding("m", "depth_metric", "Depth metric", show=False, id="app.depth_metric",
            tooltip="Depth or Series tab: next metric"),
    Binding("d", "swap_diff", "Swap A/B", show=False, id="app.swap",
            tooltip="diff mode: swap which checkpoint is A (header, plots, Overview, Diff tab)"),
    Binding("left_square_bracket", "step(-1)", "Prev step", show=False, id="app.step_prev",
            tooltip="series mode: the previous checkpoint of the run", group=STEP),
    Binding("right_square_bracket", "step(1)", "Next step", id="app.step_next",
            tooltip="series mode: the next checkpoint of the run", group=STEP),
    Binding("e", "export_view", "Export view", id="app.export_view",
            tooltip="write this view as wstui.view/1 JSON", group=EXPORT),
    Binding("E", "export_scan", "Export scan", show=False, id="app.export_scan",
            tooltip="write the whole scan as wstui.scan/1 JSON", group=EXPORT),
    Binding("r", "quant_study", "Run study", id="app.quant_study",
            tooltip="model/block Quantization tab: run the quantization study", group=STUDY),
    Binding("g", "quant_granularity", "Granularity", show=False, id="app.quant_granularity",
            tooltip="quantization study: next granularity (table and plan)", group=STUDY),
    Binding("a", "quant_alpha", "Alpha", show=False, id="app.quant_alpha",
            tooltip="quantization study: free-refit or fixed-xmin alpha", group=STUDY),
    Binding("r", "sens_study", "Run study", id="app.sens_study",
            tooltip="Sensitivity tab: run the sensitivity study (r again cancels)", group=SENS),
    Binding("escape", "sens_cancel", "Cancel study", show=False, id="app.sens_cancel",
            tooltip="Sensitivity tab: cancel the running study", group=SENS),
    Binding("m", "sens_metric", "Metric", show=False, id="app.sens_metric",
            tooltip="Sensitivity tab: next metric (plot and tables)", group=SENS),
    # Textual adds its own ctrl+p unless the app binds `command_palette`: this one has an id
    Binding("ctrl+p", "command_palette", "palette", show=False, priority=True,
            id="app.palette",
            tooltip="command palette: go to a tensor, sort the table by, depth of, export"),
]

#: the help screen's own keys
HELP_BINDINGS: list[BindingType] = [
    Binding("escape,question_mark,q", "dismiss", "Close", id="help.close"),
]
