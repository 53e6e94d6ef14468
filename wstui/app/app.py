"""WstuiApp: the layer tree beside tabs of metrics and plots, fed by the scan engine.

Start-up order (why the first paint never waits for torch): the checkpoint is already open
(headers only) when the app is built; compose paints the header, the whole tree and the
footer; only after that first refresh does a thread worker build the `ScanEngine` and start
it. The engine's callbacks run on its threads and only touch the `Inbox`; a 100 ms timer on
the event loop drains it, updates badges and redraws what is visible.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.lazy import Lazy
from textual.widgets import (
    Footer,
    Input,
    Static,
    TabbedContent,
    TabPane,
    Tree,
)

from analyzers.core import DEFAULT_THRESHOLDS
from wstui.app.diff import DiffRunner, match
from wstui.app.format import COLUMNS, num, plural
from wstui.app.messages import JumpToTensor, SortChanged
from wstui.app.palette import WstuiCommands
from wstui.app.quant_runner import QuantStudyActions
from wstui.app.screens.help import HelpScreen
from wstui.app.state import Inbox, ScanState
from wstui.app.widgets.metrics import scope_overview, tensor_overview
from wstui.app.widgets.plots import PlotPanel
from wstui.app.widgets.quant_study import QuantStudyView
from wstui.app.widgets.table import DiffTable, FindingsTable, TensorTable
from wstui.app.widgets.tree import LayerTree, matches
from wstui.documents.view import slug, unique_path, view_document, write_view
from wstui.listing import checkpoint_notes
from wstui.render import plain, visible
from wstui.render.numbers import human_count
from wstui.render.plots import PlotSpec, depth_plot, histogram_plot, overlay_plots

TABS = ("overview", "spectrum", "histogram", "quantization", "table", "depth", "findings",
        "diff")
LONG_TABS = ("1 Overview", "2 Spectrum", "3 Histogram", "4 Quantization", "5 Table",
             "6 Depth", "7 Findings", "8 Diff")
#: the digits stay: they are the keys that switch tabs
SHORT_TABS = ("1 Info", "2 Spec", "3 Hist", "4 Quant", "5 Table", "6 Depth", "7 Find",
              "8 Diff")
FLUSH_S = 0.1
SCOPE_REFRESH_S = 1.0  # tables and depth plots redraw at most this often while results stream
FULL_QUANT = ("quantization_full", "quant_alpha")
#: the engine's phase names as a user reads them: the quick analyzers, then the spectra
PHASES = {"cheap": "quick pass", "heavy": "spectra pass"}

EngineFactory = Callable[[], Any]


def left_width(width: int) -> int:
    """The tree pane's width at a screen width: `#left` in wstui.tcss (36%, 26 to 64)."""
    return min(64, max(26, int(width * 0.36)))


def tab_labels(width: int, *, with_diff: bool) -> tuple[tuple[str, ...], bool]:
    """(labels, tight) that fit the tab bar at this screen width: long labels where they
    fit, short ones with their digits otherwise; `tight` drops a tab's right padding."""
    room = width - left_width(width)
    n = len(TABS) if with_diff else len(TABS) - 1
    for labels, pad, tight in ((LONG_TABS, 2, False), (SHORT_TABS, 2, False),
                               (SHORT_TABS, 1, True)):
        if sum(len(label) + pad for label in labels[:n]) <= room:
            return labels, tight
    return SHORT_TABS, True  # narrower still: the bar scrolls to the active tab


class WstuiApp(QuantStudyActions, App[int]):
    """The TUI of DESIGN §9 on one checkpoint."""

    CSS_PATH = "wstui.tcss"
    TITLE = "wstui"
    COMMANDS = App.COMMANDS | {WstuiCommands}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit_now", "Quit", id="app.quit", tooltip="quit, cancelling the scan"),
        Binding("ctrl+q", "quit_now", "Quit", show=False, priority=True, id="app.quit_ctrl"),
        Binding("ctrl+c", "quit_now", "Quit", show=False, priority=True,
                id="app.quit_interrupt", tooltip="quit, as in htop (ctrl+c did nothing)"),
        Binding("question_mark", "help", "Help", id="app.help", tooltip="every key"),
        Binding("slash", "filter", "Filter", id="app.filter",
                tooltip="filter tensors by name or glob"),
        Binding("n", "next_finding(1)", "Next finding", id="app.next_finding",
                tooltip="next tensor with a finding"),
        Binding("N", "next_finding(-1)", "Prev finding", show=False, id="app.prev_finding"),
        Binding("s", "sort", "Sort", show=False, id="app.sort",
                tooltip="sort the table by the column under the cursor"),
        Binding("L", "toggle_log", "Log", show=False, id="app.log",
                tooltip="log scale: histogram counts or the depth metric"),
        Binding("m", "depth_metric", "Depth metric", show=False, id="app.depth_metric"),
        Binding("d", "swap_diff", "Swap A/B", show=False, id="app.swap"),
        Binding("e", "export_view", "Export view", id="app.export_view",
                tooltip="write this view as wstui.view/1 JSON"),
        Binding("E", "export_scan", "Export scan", show=False, id="app.export_scan",
                tooltip="write the whole scan as wstui.scan/1 JSON"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="app.clear_filter"),
        Binding("r", "quant_study", "Run study", id="app.quant_study",
                tooltip="model/block Quantization tab: run the quantization study"),
        Binding("g", "quant_granularity", "Granularity", show=False, id="app.quant_granularity",
                tooltip="quantization study: next granularity (table and plan)"),
        Binding("a", "quant_alpha", "Alpha", show=False, id="app.quant_alpha",
                tooltip="quantization study: free-refit or fixed-xmin alpha"),
        *[
            Binding(str(i + 1), f"show_tab('{tab}')", tab.capitalize(), show=False,
                    id=f"app.tab.{tab}")
            for i, tab in enumerate(TABS)
        ],
    ]

    def __init__(
        self,
        checkpoint: Any,
        root: Any,
        engine_factory: EngineFactory | None,
        *,
        export_dir: str | Path = ".",
        thresholds: Mapping[str, float] | None = None,
        title: str | None = None,
        show_timings: bool = True,
        checkpoint_b: Any = None,
        diff_kw: Mapping[str, Any] | None = None,
        keymap: Mapping[str, str] | None = None,
    ) -> None:
        """`engine_factory` builds the scan engine (called on a thread after the first paint);
        `checkpoint_b` turns on diff mode, `diff_kw` goes to its DiffEngine (device, cache);
        `keymap` (binding id -> keys, the config file's [keys]) remaps bindings."""
        super().__init__()
        self.keymap = dict(keymap or {})
        if self.keymap:
            self.set_keymap(self.keymap)  # Textual's own remapping, as Posting does
        self.checkpoint = checkpoint
        self.checkpoint_b = checkpoint_b
        self.diff_kw = dict(diff_kw or {})
        self.state = ScanState(root)
        self.inbox = Inbox()
        self.pairing = match(self.state.refs_list(), checkpoint_b.tensors) if checkpoint_b else None
        self.diff_runner: DiffRunner | None = None
        self.swapped = False
        self.engine_factory = engine_factory
        self.engine: Any = None
        self.export_dir = Path(export_dir)
        self.thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        self.show_timings = show_timings
        self.sub_title = visible(title or Path(str(getattr(checkpoint, "path", "model"))).name)
        self.selected_key: str = root.key
        self.log_y = False
        self.depth_index = next(i for i, c in enumerate(COLUMNS) if c.key == "alpha")
        self.depth_log: bool | None = None  # None: the column's own default
        self.requested: dict[str, str] = {}  # tensor -> "" or why the request failed
        self.pending_priority: str | None = None
        self.scan_finished = False
        self._quitting = threading.Event()
        self._engine_lock = threading.Lock()
        self._last_scope_refresh = 0.0
        self._scope_dirty = True
        self._bench_log = os.environ.get("WSTUI_BENCH_LOG")
        self.notes = [*checkpoint_notes(checkpoint), *(
            checkpoint_notes(checkpoint_b) if checkpoint_b is not None else [])]

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(self._header_text(), id="header")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Input(placeholder="filter: name or glob, enter to keep, esc clears",
                            id="filter")
                yield LayerTree(self.state.root, self.state.state, id="tree")
            with TabbedContent(id="tabs", initial="overview"):
                with TabPane("Overview", id="overview"), VerticalScroll(id="overview-scroll"):
                    yield Static(id="overview-body")
                with TabPane("Spectrum", id="spectrum"), Lazy(Horizontal(id="spectrum-plots")):
                    yield PlotPanel(id="plot-spectrum")
                    yield PlotPanel(id="plot-esd")
                with TabPane("Histogram", id="histogram"), Lazy(Vertical()):
                    yield PlotPanel(id="plot-histogram")
                with TabPane("Quant", id="quantization"), Lazy(Vertical()):
                    yield Static(id="quant-info")
                    yield PlotPanel(id="plot-quant")
                    yield QuantStudyView(id="quant-study")
                with TabPane("Table", id="table"), Lazy(Vertical()):
                    yield Static(id="table-caption", classes="caption")
                    yield TensorTable(id="tensor-table")
                with TabPane("Depth", id="depth"), Lazy(Vertical()):
                    yield Static(id="depth-caption", classes="caption")
                    yield PlotPanel(id="plot-depth")
                with TabPane("Findings", id="findings"), Lazy(Vertical()):
                    yield Static(id="findings-caption", classes="caption")
                    yield FindingsTable(id="findings-table")
                with TabPane("Diff", id="diff"), Lazy(Vertical()):
                    yield Static(id="diff-caption", classes="caption")
                    yield DiffTable(id="diff-table")
        yield Footer()

    @property
    def main_screen(self) -> Any:
        """The screen with the tree and tabs (queries must not land on the help screen)."""
        return self.screen_stack[0]

    def on_mount(self) -> None:
        for note in self.notes:  # what the readers noted (an index naming missing tensors, …)
            self.notify(note, title="checkpoint note", severity="warning", timeout=15,
                        markup=False)
        self.main_screen.query_one("#filter", Input).display = False
        if self.pairing is None:
            self.main_screen.query_one(TabbedContent).hide_tab("diff")
        self.main_screen.query_one(LayerTree).focus()
        self.set_interval(FLUSH_S, self.flush)
        self.refresh_view()
        self.call_after_refresh(self._after_first_paint)

    def on_resize(self, event: events.Resize) -> None:
        """Relayout for the new size (the event's: `self.size` may still be the old one)."""
        width = event.size.width
        self._layout_spectrum(width)
        labels, tight = tab_labels(width, with_diff=self.pairing is not None)
        tabs = self.main_screen.query_one(TabbedContent)
        tabs.set_class(tight, "tight")
        for tab, label in zip(TABS, labels):
            tabs.get_tab(tab).label = label
        self._scope_dirty = True  # tables fit their name columns to the new width
        self.call_after_refresh(self.refresh_view, tensor=False)

    def _after_first_paint(self) -> None:
        if self._bench_log:
            self._bench("first_paint")
        if self.engine_factory is not None:
            self.start_engine()
        if self.pairing is not None:
            self.diff_runner = DiffRunner(self.pairing, self.inbox.on_compare,
                                          {"thresholds": self.thresholds}, **self.diff_kw)
            self.diff_runner.start()
        if self._bench_log:
            self.call_after_refresh(self._bench_expand_all)

    # --- the engine --------------------------------------------------------------------------

    def start_engine(self) -> None:
        """Build and start the engine on a daemon thread: this is where torch gets imported.

        Not a Textual thread worker: those run in asyncio's default executor, which
        `asyncio.run` joins at exit, so `q` pressed during the torch import would wait for it.
        """
        threading.Thread(target=self._start_engine, name="wstui-engine-start",
                         daemon=True).start()

    def _start_engine(self) -> None:
        try:
            engine = self.engine_factory()  # type: ignore[misc]
            with self._engine_lock:
                self.engine = engine
                if self._quitting.is_set():
                    return
            engine.start(on_result=self.inbox.on_result, on_progress=self.inbox.on_progress)
            if self._quitting.is_set():
                engine.cancel()
        except Exception as exc:  # shown in the header; the tree stays usable
            self.inbox.on_error(f"scan failed to start: {type(exc).__name__}: {exc}")

    def _engine_call(self, method: str, *args: Any) -> bool:
        """Call the engine if it exists; an engine error becomes a notification."""
        with self._engine_lock:
            engine = self.engine
        if engine is None:
            return False
        try:
            getattr(engine, method)(*args)
        except Exception as exc:
            self.notify(visible(f"scan engine: {method} failed: {exc}"), severity="error",
                        timeout=6, markup=False)
        return True

    def flush(self) -> None:
        """Drain the inbox: new results, progress, errors (every 100 ms)."""
        if self._quitting.is_set() or not self.screen_stack:
            return  # shutting down: the widgets may already be gone
        if self.pending_priority and self._engine_call("prioritize", self.pending_priority):
            self.pending_priority = None
        results, compared, progress, errors = self.inbox.drain()
        for message in errors:
            self.notify(visible(message), severity="error", timeout=10, markup=False)
        if progress is not None:
            self.state.progress = progress
        for batch, is_compare in ((results, False), (compared, True)):
            if not batch:
                continue
            changed = self.state.apply(batch, compare=is_compare)
            try:
                tree = self.main_screen.query_one(LayerTree)
            except NoMatches:  # the app is closing and its screen is already torn down
                return
            for key in changed:
                tree.set_state(key, self.state.state(key))
            self._scope_dirty = True
            sel = self.state.node_by_key.get(self.selected_key)
            if sel is not None and sel.tensor is not None and sel.tensor.name in batch:
                self.refresh_view(scope=False)
        if progress is not None or results or compared or errors:
            self.main_screen.query_one("#header", Static).update(self._header_text())
        just_done = not self.scan_finished and self._engine_done()
        if self._scope_dirty and (
            time.perf_counter() - self._last_scope_refresh >= SCOPE_REFRESH_S or just_done
        ):
            self.refresh_view(tensor=False)

    def _engine_done(self) -> bool:
        engine = self.engine
        done = bool(engine is not None and getattr(engine, "done", False))
        if done and not self.scan_finished:
            self.scan_finished = True
            self.main_screen.query_one("#header", Static).update(self._header_text())
        return done

    @property
    def scan_complete(self) -> bool:
        p = self.state.progress
        return self.scan_finished or (p is not None and p.phase == "done")

    def _header_text(self) -> Text:
        """One line: scan progress first (it must survive 80 columns), then what is open."""
        ck = self.checkpoint
        n = len(self.state.order)
        p = self.state.progress
        done = self.state.n_done()
        text = Text(" ")
        if self.scan_complete:
            text.append(f"scan done {done}/{n}", style="bold green")
        elif p is not None and p.phase == "cancelled":
            text.append(f"scan cancelled {done}/{n}", style="bold yellow")
        elif p is not None:
            pct = 100 * p.done // max(p.total, 1)
            phase = PHASES.get(p.phase, p.phase)
            text.append(f"scan: {phase} {pct}%", style="bold yellow")
            if self.show_timings and p.eta_s is not None:
                text.append(f" eta {p.eta_s:.0f}s", style="yellow")
        else:
            text.append("starting scan…", style="dim")
        text.append("  │ ", style="dim")
        text.append(self.sub_title, style="bold cyan")
        fmt = getattr(ck, "format", "")
        n_params = getattr(ck, "n_params", None)
        text.append(f" · {fmt} · {plural(n, 'tensor')}")
        if n_params:
            text.append(f" · {human_count(int(n_params))} params")
        if self.diff_runner is not None:
            r = self.diff_runner
            a_name, b_name = self._ab_names()
            if self.swapped:
                a_name, b_name = b_name, a_name
            text.append(f" │ diff {len(self.state.compare)}/{r.total} A={a_name} B={b_name}",
                        style="magenta")
        device = getattr(self.engine, "device", None)
        if device:
            text.append(f" · {device}", style="dim")
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text

    def _ab_names(self) -> tuple[str, str]:
        """Short names of A and B: their file or folder names, with as much of the path
        as tells them apart (`model` and `model` say nothing)."""
        pa = Path(str(getattr(self.checkpoint, "path", "A")))
        pb = Path(str(getattr(self.checkpoint_b, "path", "B")))
        a, b = pa.name, pb.name
        depth = 1
        while a == b and depth < max(len(pa.parts), len(pb.parts)):
            depth += 1
            a, b = "/".join(pa.parts[-depth:]), "/".join(pb.parts[-depth:])
        return visible(a), visible(b)

    # --- selection and views -----------------------------------------------------------------

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted[Any]) -> None:
        if event.node.data is not None:
            self.select_key(event.node.data.key)

    @on(Tree.NodeSelected)
    def _selected(self, event: Tree.NodeSelected[Any]) -> None:
        node = event.node
        tree = self.main_screen.query_one(LayerTree)
        if node.allow_expand:
            tree.ensure_loaded(node)
            node.toggle()
        if node.data is not None:
            self.select_key(node.data.key)

    def select_key(self, key: str) -> None:
        if key == self.selected_key:
            return
        self.selected_key = key
        node = self.state.node_by_key.get(key)
        if node is not None and node.tensor is not None:
            self.prioritize(node.tensor.name)
        self._scope_dirty = True
        self.refresh_view()

    def prioritize(self, name: str) -> None:
        if not self._engine_call("prioritize", name):
            self.pending_priority = name
        if self.diff_runner is not None:
            self.diff_runner.prioritize(name)

    @property
    def active_tab(self) -> str:
        return self.main_screen.query_one(TabbedContent).active or "overview"

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self._scope_dirty = True
        self.refresh_view()
        self.call_after_refresh(self._focus_visible)

    def _focus_visible(self) -> None:
        """Keep focus where the user can see it: a table tab focuses its table; otherwise
        focus that sat in a now hidden pane goes back to the tree (j/k must keep moving)."""
        tab = self.active_tab
        cls = {"table": TensorTable, "findings": FindingsTable, "diff": DiffTable}.get(tab)
        if cls is not None:
            for widget in self.main_screen.query(f"#{tab} {cls.__name__}"):
                widget.focus()
                return
            self.call_after_refresh(self._focus_visible)  # Lazy: not mounted yet
            return
        focused = self.main_screen.focused
        hidden = focused is not None and any(
            isinstance(w, TabPane) and w.id != tab for w in focused.ancestors)
        if focused is None or hidden:
            self.main_screen.query_one(LayerTree).focus()

    def refresh_view(self, *, tensor: bool = True, scope: bool = True) -> None:
        """Redraw the active tab (`tensor`: views of the selected tensor; `scope`: tables)."""
        tab = self.active_tab
        node = self.state.node_by_key.get(self.selected_key, self.state.root)
        is_tensor = node.tensor is not None
        if tab != "overview" and self.main_screen.query(f"#{tab} Lazy"):
            self.call_after_refresh(self.refresh_view, tensor=tensor, scope=scope)
            return  # the tab's widgets mount lazily after the first paint
        with self.batch_update():
            if tab == "overview" and (tensor if is_tensor else scope):
                self._show_overview(node)
            elif tab in ("spectrum", "histogram", "quantization") and tensor:
                self._show_tensor_plots(tab, node)
            elif tab == "table" and scope:
                self._show_table()
            elif tab == "depth" and scope:
                self._show_depth()
            elif tab == "findings" and scope:
                self._show_findings()
            elif tab == "diff" and scope:
                self._show_diff()
        if (scope and tab in ("table", "depth", "findings", "diff")) or not is_tensor:
            self._scope_dirty = False
            self._last_scope_refresh = time.perf_counter()

    def _show_overview(self, node: Any) -> None:
        body = self.main_screen.query_one("#overview-body", Static)
        if node.tensor is not None:
            ref = node.tensor
            body.update(tensor_overview(ref, self.state.results.get(ref.name), self.thresholds,
                                        compare=self._compare_of(ref.name),
                                        swapped=self.swapped))
        else:
            names = self.state.scope_names(node.key)
            notes = self.notes if node is self.state.root else ()
            body.update(scope_overview(node, names, self.state, self.state.findings(names),
                                       notes=notes, done=self.scan_complete))

    def _why_missing(self, node: Any, analyzer: str) -> str:
        if node.tensor is None:
            return "select a tensor in the tree"
        result = self.state.results.get(node.tensor.name)
        if result is None:
            return "computing… (moved to the front of the scan queue)"
        if analyzer in result.errors:
            return f"error in {analyzer}: {result.errors[analyzer]}"
        if analyzer in result.skipped:
            return f"{analyzer} skipped: {result.skipped[analyzer]}"
        if not node.tensor.analyzable:
            return f"not analyzable: {node.tensor.note or node.tensor.dtype}"
        if self.scan_complete:
            return f"no {analyzer} result: not part of this scan"
        return f"computing {analyzer}… (next in the queue)"

    def _tensor_plots(self, node: Any) -> dict[str, PlotSpec]:
        if node.tensor is None:
            return {}
        return self.state.plots.get(node.tensor.name, {})

    def _compare_of(self, name: str) -> Any:
        return self.state.compare.get(name) if self.pairing is not None else None

    def _overlay(self, node: Any) -> dict[str, PlotSpec]:
        """Diff mode: the A/B overlays of the selected pair (rebuilt when swapped or log-y)."""
        if node.tensor is None or self.pairing is None:
            return {}
        cmp = self.state.compare.get(node.tensor.name)
        if cmp is None:
            return {}
        if not self.swapped and not self.log_y:
            return self.state.compare_plots.get(node.tensor.name, {})
        return overlay_plots(cmp, swap=self.swapped, log_y=self.log_y)

    def _layout_spectrum(self, width: int | None = None) -> None:
        """The two spectrum plots side by side only when both get a useful width."""
        width = self.size.width if width is None else width
        for plots in self.main_screen.query("#spectrum-plots"):  # absent until lazily mounted
            plots.set_class(width < 150, "stacked")

    def _show_tensor_plots(self, tab: str, node: Any) -> None:
        plots = {**self._tensor_plots(node)}
        overlay = self._overlay(node)
        if "spectrum" in overlay:
            plots["spectrum"] = overlay["spectrum"]
        subject = node.tensor.display_name if node.tensor is not None else ""
        if tab == "spectrum":
            self._layout_spectrum()
            self.main_screen.query_one("#plot-spectrum", PlotPanel).show(
                plots.get("spectrum"), self._why_missing(node, "spectral"), subject)
            esd = plots.get("esd")
            if esd is not None and self.pairing is not None:  # only the base is scanned
                which = "B: the base, after d" if self.swapped else "A: the base"
                esd = replace(esd, note=" · ".join(
                    p for p in (esd.note, f"of {which} (B's σ is in the plot beside)") if p))
            if node.tensor is None:
                why_esd = ""  # said once, in the panel beside
            elif "spectrum" not in plots or plots["spectrum"].empty:
                why_esd = self._why_missing(node, "spectral")
            else:
                why_esd = "no power-law fit (fewer than 10 eigenvalues above 1e-5)"
            self.main_screen.query_one("#plot-esd", PlotPanel).show(esd, why_esd, subject)
        elif tab == "histogram":
            self.main_screen.query_one("#plot-histogram", PlotPanel).show(
                self._histogram_spec(node), self._why_missing(node, "stats"), subject)
        elif tab == "quantization":
            self._show_quant(node, plots.get("quantization"))

    def _histogram_spec(self, node: Any) -> PlotSpec | None:
        if node.tensor is None:
            return None
        overlay = self._overlay(node)
        if "histogram" in overlay:
            return overlay["histogram"]
        result = self.state.results.get(node.tensor.name)
        if result is None:
            return None
        if not self.log_y:
            return self._tensor_plots(node).get("histogram")
        return histogram_plot(result, log_y=True).prepare()

    def _show_quant(self, node: Any, spec: PlotSpec | None) -> None:
        info = self.main_screen.query_one("#quant-info", Static)
        panel = self.main_screen.query_one("#plot-quant", PlotPanel)
        if self.show_quant_study(node):  # model or block: the study view (quant_runner.py)
            return
        if node.tensor is None:
            info.update("")
            panel.show(None, self._why_missing(node, "quantization"))
            return
        ref = node.tensor
        result = self.state.results.get(ref.name)
        wanted = self._full_quant_methods(ref)
        status = ""
        if (result is not None and wanted and ref.name not in self.requested
                and self.engine is not None and not self._has_ran(result, wanted)):
            self.requested[ref.name] = self._request(ref.name, wanted)
        if result is not None and wanted:
            if self._has_ran(result, wanted):
                status = "full sweep done"
            elif self.requested.get(ref.name):
                status = f"full sweep unavailable: {self.requested[ref.name]}"
            else:
                status = "computing the full sweep (6 to 2 bits, α shift)…"
        q = (result.metrics.get("quantization", {}) if result else {})
        alpha = result.metrics.get("spectral", {}).get("alpha") if result else None
        lines = Text()
        for label, value in (("α", alpha), ("α shift (4-bit, free refit)", q.get("alpha_shift")),
                             ("α shift (fixed xmin)", q.get("alpha_fixed_xmin_shift")),
                             ("int8 ready", q.get("int8_ready")),
                             ("min bits for 30 dB", q.get("min_bits_30db")),
                             ("crest factor", q.get("crest_factor"))):
            if value is not None:
                lines.append(f"{label}: ", style="bold")
                lines.append(f"{num(value)}   ")
        if status == "full sweep done" and q.get("alpha_shift") is None:
            reason = (result.metrics.get("quant_alpha", {}).get("no_fit_reason")
                      or result.metrics.get("spectral", {}).get("no_fit_reason"))
            status += f"; no α shift: {reason}" if reason else "; no α shift"
        if status:
            lines.append(f"\n{visible(status)}", style="italic")
        if (note := self.quant_study_note(ref)) is not None:
            lines.append("\n").append_text(note)
        info.update(lines)
        panel.show(spec, self._why_missing(node, "quantization"), ref.display_name)

    def _request(self, name: str, methods: tuple[str, ...]) -> str:
        """Ask the engine for extra analyzers on one tensor, off the event loop (a request may
        read the SQLite cache); returns "" now, a failure arrives later via `_request_failed`."""
        engine = self.engine

        def send() -> None:
            try:
                engine.request(name, list(methods))
                return
            except Exception:  # e.g. one analyzer unknown to this engine: ask for each alone
                errors = []
                for m in methods:
                    try:
                        engine.request(name, [m])
                    except Exception as exc:
                        errors.append(f"{m}: {exc}")
            if errors and not self._quitting.is_set():
                self.call_from_thread(self._request_failed, name, "; ".join(errors))

        threading.Thread(target=send, name="wstui-request", daemon=True).start()
        return ""

    def _request_failed(self, name: str, message: str) -> None:
        self.requested[name] = message
        self.refresh_view(scope=False)

    @staticmethod
    def _full_quant_methods(ref: Any) -> tuple[str, ...]:
        if not ref.analyzable:
            return ()
        shape = ref.shape
        is_matrix = len(shape) >= 2 and shape[0] >= 2 and (ref.numel // max(shape[0], 1)) >= 2
        return FULL_QUANT if is_matrix else FULL_QUANT[:1]

    @staticmethod
    def _has_ran(result: Any, methods: tuple[str, ...]) -> bool:
        return all(m in result.timings or m in result.skipped or m in result.errors
                   for m in methods)

    def _scope_key(self) -> str:
        return self.state.scope_of(self.selected_key)

    def _filter_fn(self) -> Callable[[Any], bool] | None:
        text = self.main_screen.query_one(LayerTree).filter_text
        if not text:
            return None
        return lambda ref: matches(text, ref.name) or matches(text, ref.display_name)

    def _show_table(self) -> None:
        key = self._scope_key()
        node = self.state.node_by_key[key]
        table = self.main_screen.query_one(TensorTable)
        table.rebuild(self.state.scope_names(key), self.state.results, self.state.refs,
                      self._filter_fn(), labels=self.state.labels,
                      state_of=self.state.tensor_state, value_of=self.state.value)
        order = ""
        if table.sort_column:
            order = f" · sorted by {table.sort_column} {'↓' if table.sort_reverse else '↑'}"
        filt = self.main_screen.query_one(LayerTree).filter_text
        self.main_screen.query_one("#table-caption", Static).update(plain(
            f"{node.label}: {plural(len(table.names), 'tensor')}{order}"
            + (f" · filter '{filt}'" if filt else "")
            + " · s: sort by column · enter: open"))  # the filter as typed: never markup

    def _depth_spec(self) -> PlotSpec:
        col = COLUMNS[self.depth_index]
        log = col.log if self.depth_log is None else self.depth_log
        refs = {n: ref for n, ref in self.state.refs.items() if ref.block is not None}
        # one line per kind, unless a kind has several tensors per block (biases, norms):
        # then one per tensor role, so a line never zigzags between two tensors of a block
        per_block = Counter((ref.kind, ref.block) for ref in refs.values())
        shared = {kind for (kind, _), count in per_block.items() if count > 1}
        rows = [(f"{ref.kind} {self.state.labels.get(n, n)}" if ref.kind in shared else ref.kind,
                 ref.block, self.state.value(n, col)) for n, ref in refs.items()]
        label = f"{col.label} ({col.analyzer}.{col.metric})"
        return depth_plot(rows, label, log).prepare()

    def _show_depth(self) -> None:
        col = COLUMNS[self.depth_index]
        self.main_screen.query_one("#depth-caption", Static).update(
            f"{col.analyzer}.{col.metric} against block index · m: next metric · L: log scale")
        if col.analyzer == "compare" and self.pairing is None:
            why = f"{col.label} compares two checkpoints: wstui PATH --diff PATH_B"
        elif self.scan_complete and (col.analyzer != "compare" or self._diff_done()):
            why = f"no tensor has {col.analyzer}.{col.metric} in this scan"
        else:
            why = "no values yet for this metric (computing…)"
        self.main_screen.query_one("#plot-depth", PlotPanel).show(self._depth_spec(), why)

    def _diff_done(self) -> bool:
        return self.diff_runner is not None and len(self.state.compare) >= self.diff_runner.total

    def _show_findings(self) -> None:
        filt = self._filter_fn()
        names = [n for n in self.state.order if filt is None or filt(self.state.refs[n])]
        pairs = self.state.findings(names)
        text = self.main_screen.query_one(LayerTree).filter_text
        self.main_screen.query_one("#findings-caption", Static).update(plain(
            f"{len(pairs)} finding{'' if len(pairs) == 1 else 's'}, worst first"
            + (f" · filter '{text}'" if text else "") + " · enter: go to tensor"))
        self.main_screen.query_one(FindingsTable).rebuild(pairs, self.state.refs,
                                                          self.state.labels)

    def _show_diff(self) -> None:
        if self.pairing is None:
            return
        table = self.main_screen.query_one(DiffTable)
        filt = self._filter_fn()
        names = [n for n in self.state.order if filt is None or filt(self.state.refs[n])]
        table.rebuild(self.state.compare, self.state.refs, self.state.labels, names,
                      swapped=self.swapped)
        p = self.pairing
        only_a, only_b = (p.only_in_b, p.only_in_a) if self.swapped else (p.only_in_a,
                                                                          p.only_in_b)
        extra = [f"{len(only_a)} only in A", f"{len(only_b)} only in B",
                 f"{len(p.shape_mismatch)} shape mismatches"]
        for side, names in (("A", only_a), ("B", only_b)):
            if 0 < len(names) <= 2:  # a rename shows as one of each: name them
                extra.append(f"only in {side}: {', '.join(names)}")
        if self.swapped:
            extra.append("d: A is the second checkpoint, Δrel of the base's norm")
        self.main_screen.query_one("#diff-caption", Static).update(plain(
            f"{len(self.state.compare)}/{len(p.pairs)} pairs compared, most changed first · "
            + ", ".join(extra)))  # names from the files: never markup

    # --- jumps -------------------------------------------------------------------------------

    def jump_to(self, name: str) -> None:
        """Select tensor `name` in the tree and show its Overview."""
        key = self.state.key_of(name)
        tree = self.main_screen.query_one(LayerTree)
        if key is None:
            return
        if not tree.reveal(key):  # hidden by the filter: clear it first
            self.action_clear_filter()
            tree.reveal(key)
        self.select_key(key)
        self.main_screen.query_one(TabbedContent).active = "overview"
        tree.focus()

    @on(JumpToTensor)
    def _jump(self, event: JumpToTensor) -> None:
        self.jump_to(event.name)

    @on(SortChanged)
    def _resort(self) -> None:
        self._show_table()

    def sort_table_by(self, column: str) -> None:
        table = self.main_screen.query_one(TensorTable)
        table.set_sort(column)
        self.main_screen.query_one(TabbedContent).active = "table"
        self._show_table()

    # --- actions -----------------------------------------------------------------------------

    def action_show_tab(self, tab: str) -> None:
        if tab == "diff" and self.pairing is None:
            self.notify("the Diff tab needs a second checkpoint: wstui PATH --diff PATH_B")
            return
        self.main_screen.query_one(TabbedContent).active = tab
        self.call_after_refresh(self._focus_visible)  # the same tab again: no TabActivated

    def action_quit_now(self) -> None:
        """Quit at once: cancel the scan, never wait for a running analyzer."""
        self._quitting.set()  # also stops the flush timer's work
        self._engine_call("cancel")
        self.cancel_quant_study()
        if self.diff_runner is not None:
            self.diff_runner.cancel()
        self.exit(0)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        box = self.main_screen.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.main_screen.query_one(LayerTree).apply_filter(event.value)
        self._scope_dirty = True
        self.refresh_view(tensor=False)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.display = False
        self.main_screen.query_one(LayerTree).focus()

    def action_clear_filter(self) -> None:
        box = self.main_screen.query_one("#filter", Input)
        if box.value or box.display:
            box.value = ""
            box.display = False
            self.main_screen.query_one(LayerTree).apply_filter("")
            self.main_screen.query_one(LayerTree).focus()
            self._scope_dirty = True
            self.refresh_view(tensor=False)

    def action_next_finding(self, step: int) -> None:
        """Move to the next (or previous) tensor with a finding, in tree order."""
        names = [n for n in self.state.order if self.state.results.get(n) is not None
                 and self.state.results[n].findings]
        if not names:
            self.notify("no findings yet")
            return
        node = self.state.node_by_key.get(self.selected_key)
        if node is not None and node.tensor is None and node is not self.state.root:
            inside = set(self.state.scope_names(node.key))  # a block: its own findings
            names = [n for n in names if n in inside]
            if not names:
                self.notify(plain(f"no findings in {node.label}"))
                return
            tab = self.active_tab
            self.jump_to(names[0] if step > 0 else names[-1])
            if tab not in ("table", "depth", "findings"):
                self.main_screen.query_one(TabbedContent).active = tab
            return
        here = node.tensor.name if node is not None and node.tensor is not None else None
        order = self.state.order
        pos = order.index(here) if here in order else -1
        ranked = [(order.index(n), n) for n in names]
        if step > 0:
            after = [n for i, n in ranked if i > pos]
            target = after[0] if after else ranked[0][1]
        else:
            before = [n for i, n in ranked if i < pos] if pos >= 0 else []
            target = before[-1] if before else ranked[-1][1]
        tab = self.active_tab
        self.jump_to(target)
        if tab not in ("table", "depth", "findings"):
            self.main_screen.query_one(TabbedContent).active = tab

    def action_sort(self) -> None:
        if self.active_tab == "table":
            self.main_screen.query_one(TensorTable).action_sort_here()
        else:
            self.action_show_tab("table")

    def action_toggle_log(self) -> None:
        if self.active_tab == "depth":
            col = COLUMNS[self.depth_index]
            current = col.log if self.depth_log is None else self.depth_log
            self.depth_log = not current
        else:
            self.log_y = not self.log_y
            self.notify(f"histogram: {'log' if self.log_y else 'linear'} counts", timeout=2)
        self.refresh_view()

    def action_depth_metric(self) -> None:
        self.show_depth((self.depth_index + 1) % len(COLUMNS))

    def show_depth(self, index: int) -> None:
        """The Depth view of `COLUMNS[index]` (`m` cycles; the palette picks one)."""
        self.depth_index = index
        self.depth_log = None
        if self.active_tab != "depth":
            self.main_screen.query_one(TabbedContent).active = "depth"
        self.refresh_view()

    def action_swap_diff(self) -> None:
        """Swap which checkpoint the overlays and header call A (the scan stays on the base)."""
        if self.pairing is None:
            self.notify("d swaps A and B in diff mode (wstui PATH --diff PATH_B)", timeout=3)
            return
        self.swapped = not self.swapped
        self.main_screen.query_one("#header", Static).update(self._header_text())
        self.refresh_view()

    def action_export_view(self) -> None:
        try:
            path = write_view(self.view_document(), self.export_dir)
        except OSError as exc:
            self.notify(visible(f"export failed: {exc}"), severity="error", markup=False)
            return
        self.notify(visible(f"view written to {path.resolve()}"), title="export",
                    markup=False)

    def action_export_scan(self) -> None:
        engine = self.engine
        if engine is None:
            self.notify("the scan has not started yet", severity="warning")
            return
        self._export_scan_worker(engine)

    @work(thread=True, exit_on_error=False, group="export")
    def _export_scan_worker(self, engine: Any) -> None:
        """`E`: the scan as `wstui.scan/1`; in diff mode the diff too, as `wstui.diff/1` (the
        compare metrics and `large_change` findings), or a word that it was left out."""
        try:
            report = engine.report()
            name = slug(Path(str(getattr(self.checkpoint, "path", "model"))).name)
            path = report.to_json(unique_path(self.export_dir, f"wstui-scan-{name}"))
            lines = [f"scan written to {Path(path).resolve()}"]
            if self.diff_runner is not None:
                diff = self.diff_runner.report()
                if diff is None:
                    lines.append("diff left out: the comparison has not started yet")
                else:
                    b = slug(Path(str(getattr(self.checkpoint_b, "path", "B"))).name)
                    dpath = diff.to_json(unique_path(self.export_dir, f"wstui-diff-{name}-{b}"))
                    done = "" if diff.complete else " (so far: the diff is still running)"
                    lines.append(f"diff written to {Path(dpath).resolve()}{done}")
        except Exception as exc:
            self.call_from_thread(self.notify, visible(f"export failed: {exc}"),
                                  severity="error", markup=False)
            return
        self.call_from_thread(self.notify, visible("\n".join(lines)), title="export",
                              markup=False)

    def view_document(self) -> dict[str, Any]:
        """The current view as `wstui.view/1` (what `e` writes), naming the checkpoint(s) it
        came from: a file in a folder of exports must say which model it is of."""
        doc = self._view_document()
        doc["checkpoint"] = str(Path(str(getattr(self.checkpoint, "path", ""))).resolve())
        if self.checkpoint_b is not None:
            doc["checkpoint_b"] = str(Path(str(getattr(self.checkpoint_b, "path", ""))
                                           ).resolve())
        return doc

    def _view_document(self) -> dict[str, Any]:
        tab = self.active_tab
        node = self.state.node_by_key.get(self.selected_key, self.state.root)
        if tab in ("overview", "spectrum", "histogram", "quantization") and node.tensor is not None:
            ref = node.tensor
            result = self.state.results.get(ref.name)
            plots = self._tensor_plots(node)
            shown = {"spectrum": ["spectrum", "esd"], "histogram": ["histogram"],
                     "quantization": ["quantization"]}.get(tab, [])
            plots = {**plots, **self._overlay(node)}
            specs = [plots[k] for k in shown if k in plots]
            if tab == "histogram" and self.log_y:
                hist = self._histogram_spec(node)
                specs = [hist] if hist else []
            return view_document(
                tab, tensor=ref.name, metrics=result.metrics if result else {},
                plots=specs, findings=[f.to_dict() for f in result.findings] if result else [],
                shape=list(ref.shape), dtype=ref.dtype, kind=ref.kind, block=ref.block,
                errors=dict(result.errors) if result else {},
            )
        if tab == "quantization":  # model or block: the quantization study
            return self.quant_study_view_document(node)
        key = self._scope_key() if tab in ("table", "depth") else node.key
        names = self.state.scope_names(key) if tab != "findings" else self.state.order
        selection = {"key": key, "label": self.state.node_by_key[key].label, "tensors": names}
        if tab == "table":
            table = self.main_screen.query_one(TensorTable)
            refs = self.state.refs
            rows = [{"name": n, "kind": refs[n].kind, "block": refs[n].block,
                     **{c.key: self.state.value(n, c) for c in COLUMNS}}
                    for n in table.names]
            return view_document("table", selection=selection,
                                 metrics={"columns": [c.key for c in COLUMNS], "rows": rows},
                                 sort={"column": table.sort_column, "reverse": table.sort_reverse})
        if tab == "depth":
            spec = self._depth_spec()
            col = COLUMNS[self.depth_index]
            return view_document("depth", selection=selection,
                                 metrics={"metric": f"{col.analyzer}.{col.metric}"}, plots=[spec])
        if tab == "diff" and self.pairing is not None:
            table = self.main_screen.query_one(DiffTable)
            rows = [{"name": n, "name_b": self.pairing.pairs[n].name,
                     "shape": list(self.state.refs[n].shape),
                     "metrics": {"compare": self.state.compare[n].metrics.get("compare", {})},
                     "errors": dict(self.state.compare[n].errors)} for n in table.names]
            return view_document("diff", selection=selection, metrics={"pairs": rows},
                                 b=str(getattr(self.checkpoint_b, "path", "")),
                                 swapped=self.swapped, **self.pairing.to_dict())
        pairs = self.state.findings(names)
        if tab == "findings":
            return view_document("findings", selection=selection, metrics={},
                                 findings=[{"tensor": n, **f.to_dict()} for n, f in pairs])
        return view_document("overview", selection=selection, metrics={
            "n_tensors": len(names),
            "scanned": sum(1 for n in names if n in self.state.results)},
            findings=[{"tensor": n, **f.to_dict()} for n, f in pairs])

    # --- bench hooks (WSTUI_BENCH_LOG) -------------------------------------------------------

    def _bench(self, event: str) -> None:
        with open(self._bench_log, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
            fh.write(f"{event} {time.time():.6f}\n")

    def _bench_expand_all(self) -> None:
        tree = self.main_screen.query_one(LayerTree)
        for key in list(tree.unloaded):
            ui = tree.nodes_by_key.get(key)
            if ui is not None:
                tree.ensure_loaded(ui)
        tree.root.expand_all()
        self.call_after_refresh(self._bench_tree_done)

    def _bench_tree_done(self) -> None:
        self._bench("tree_complete")
        self.main_screen.query_one(LayerTree).scroll_end(animate=False, immediate=True)
        self.call_after_refresh(self._bench_scrolled)

    def _bench_scrolled(self) -> None:
        self._bench("scrolled_end")
        self.action_quit_now()
