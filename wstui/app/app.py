"""WstuiApp: the shell. The layer tree beside one tab per view (`wstui.app.views`), the header,
the footer, the keys, and the routing between them; the engine behind `wstui.app.bridge`.

Start-up order (why the first paint never waits for torch): the checkpoint is already open
(headers only) when the app is built; compose paints the header, the whole tree and the
footer; only after that first refresh does the bridge build the engines on daemon threads. The
engine's callbacks run on its threads and only touch the `Inbox`; a 100 ms timer on the event
loop drains it, updates badges and redraws what is visible.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.lazy import Lazy
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane, Tree

from analyzers.core import DEFAULT_THRESHOLDS
from wstui.app.bindings import APP_BINDINGS
from wstui.app.bridge import (
    EngineBridge,
    JobDone,
    JobFailed,
    JobProgress,
    RequestFailed,
    match,
)
from wstui.app.format import COLUMNS, plural
from wstui.app.messages import JumpToTensor, SortChanged
from wstui.app.palette import WstuiCommands
from wstui.app.screens.help import HelpScreen
from wstui.app.state import Inbox, ScanState
from wstui.app.tabs import Tab, digit
from wstui.app.views import VIEWS, View
from wstui.app.views.depth import DepthView
from wstui.app.views.quantization import QuantizationView
from wstui.app.views.table import TableView
from wstui.app.widgets.tree import LayerTree, matches
from wstui.documents.view import slug, unique_path, write_view
from wstui.render import plain, visible
from wstui.render.ls import checkpoint_notes
from wstui.render.numbers import human_count

if TYPE_CHECKING:  # pragma: no cover
    from wstui.app.bridge import DiffHandle
    from wstui.app.series import SeriesRun

FLUSH_S = 0.1
SCOPE_REFRESH_S = 1.0  # tables and depth plots redraw at most this often while results stream
#: the engine's phase names as a user reads them: the quick analyzers, then the spectra
PHASES = {"cheap": "quick pass", "heavy": "spectra pass"}

EngineFactory = Callable[[], Any]


def left_width(width: int) -> int:
    """The tree pane's width at a screen width: `#left` in wstui.tcss (36%, 26 to 64)."""
    return min(64, max(26, int(width * 0.36)))


def tab_labels(width: int, *, with_diff: bool, with_run: bool = False
               ) -> tuple[tuple[str, ...], bool]:
    """(labels, tight) that fit the tab bar at this screen width: long labels where they
    fit, short ones with their digits otherwise; `tight` drops a tab's right padding. The
    digits stay: they are the keys that switch tabs."""
    long = tuple(f"{digit(i)} {v.label}" for i, v in enumerate(VIEWS))
    short = tuple(f"{digit(i)} {v.short}" for i, v in enumerate(VIEWS))
    tiny = tuple(f"{digit(i)} {v.short[:3]}" for i, v in enumerate(VIEWS))  # 80 columns
    room = width - left_width(width)
    shown = [(with_diff or not v.needs_pair) and (with_run or not v.needs_run) for v in VIEWS]
    for labels, pad, tight in ((long, 2, False), (short, 2, False), (short, 1, True),
                               (tiny, 1, True)):
        if sum(len(label) + pad for label, on in zip(labels, shown) if on) <= room:
            return labels, tight
    return short, True  # narrower still: the bar scrolls to the active tab


class WstuiApp(App[int]):
    """The TUI of DESIGN §9 on one checkpoint."""

    CSS_PATH = "wstui.tcss"
    TITLE = "wstui"
    COMMANDS = App.COMMANDS | {WstuiCommands}
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = APP_BINDINGS

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
        series: SeriesRun | None = None,
    ) -> None:
        """`engine_factory` builds the scan engine (called on a thread after the first paint);
        `checkpoint_b` turns on diff mode, `diff_kw` goes to its DiffEngine (device, cache);
        `keymap` (binding id -> keys, the config file's [keys]) remaps bindings; `series`
        turns on series mode (`checkpoint` is then its latest step's)."""
        super().__init__()
        self.keymap = dict(keymap or {})
        if self.keymap:
            self.set_keymap(self.keymap)  # Textual's own remapping, as Posting does
            if "app.palette" in self.keymap:  # the footer names the palette's key
                self.COMMAND_PALETTE_BINDING = self.keymap["app.palette"].split(",")[0]
        self.checkpoint = checkpoint
        self.checkpoint_b = checkpoint_b
        self.series = series
        self.step_index = series.latest if series is not None else 0  # the step cursor
        self.diff_kw = dict(diff_kw or {})
        self.state = ScanState(root)
        self.inbox = Inbox()
        self.pairing = match(self.state.refs_list(), checkpoint_b.tensors) if checkpoint_b else None
        self.thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        self.bridge = EngineBridge(self.post_message, self.inbox, engine_factory,
                                   pairing=self.pairing,
                                   diff_options={"thresholds": self.thresholds},
                                   diff_kw=self.diff_kw)
        self.swapped = False
        self.export_dir = Path(export_dir)
        self.show_timings = show_timings
        self.sub_title = visible(title or Path(str(getattr(checkpoint, "path", "model"))).name)
        self.selected_key: str = root.key
        self.log_y = False  # histogram counts (and the diff overlays) on a log scale
        self.scan_finished = False
        self._quitting = threading.Event()
        self._last_scope_refresh = 0.0
        self._scope_dirty = True
        self._bench_log = os.environ.get("WSTUI_BENCH_LOG")
        self.notes = [*checkpoint_notes(checkpoint), *(
            checkpoint_notes(checkpoint_b) if checkpoint_b is not None else [])]
        #: one instance per tab, in tab order (their state lives before their widgets mount)
        self.views: dict[Tab, View] = {cls.tab: cls(self) for cls in VIEWS}

    def view(self, tab: Tab | str) -> Any:
        return self.views[Tab(tab)]

    @property
    def active_view(self) -> View:
        return self.views[self.active_tab]

    # --- for scripts (screenshots/make.py) and tests ------------------------------------------

    @property
    def engine(self) -> Any:
        """The scan engine once built."""
        return self.bridge.engine

    @property
    def diff_runner(self) -> DiffHandle | None:
        """Diff mode's engine handle (`done`, `total`, `report()`)."""
        return self.bridge.diff

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(self._header_text(), id="header")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Input(placeholder="filter: name or glob, enter to keep, esc clears",
                            id="filter")
                yield LayerTree(self.state.root, self.state.state, id="tree")
            with TabbedContent(id="tabs", initial=Tab.SERIES if self.series else Tab.OVERVIEW):
                for view in self.views.values():
                    with TabPane(view.title, id=view.tab):
                        yield Lazy(view.body()) if view.lazy else view.body()
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
        for view in self.views.values():
            if (view.needs_pair and self.pairing is None) or (
                    view.needs_run and self.series is None):
                self.main_screen.query_one(TabbedContent).hide_tab(view.tab)
        self.main_screen.query_one(LayerTree).focus()
        self.set_interval(FLUSH_S, self.flush)
        self.refresh_view()
        self.call_after_refresh(self._after_first_paint)

    def on_resize(self, event: events.Resize) -> None:
        """Relayout for the new size (the event's: `self.size` may still be the old one)."""
        width = event.size.width
        for view in self.views.values():
            view.resize(width)
        labels, tight = tab_labels(width, with_diff=self.pairing is not None,
                                   with_run=self.series is not None)
        tabs = self.main_screen.query_one(TabbedContent)
        tabs.set_class(tight, "tight")
        for tab, label in zip(self.views, labels):
            tabs.get_tab(tab).label = label
        self._scope_dirty = True  # tables fit their name columns to the new width
        self.call_after_refresh(self.refresh_view, tensor=False)

    def _after_first_paint(self) -> None:
        if self._bench_log:
            self._bench("first_paint")
        self.bridge.start()
        if self.series is not None:
            self.view(Tab.SERIES).start()  # the run's series, beside the latest step's scan
        if self._bench_log:
            self.call_after_refresh(self._bench_expand_all)

    # --- the engine --------------------------------------------------------------------------

    def flush(self) -> None:
        """Drain the inbox: new results, progress, errors (every 100 ms)."""
        if self._quitting.is_set() or not self.screen_stack:
            return  # shutting down: the widgets may already be gone
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
        done = self.bridge.scan_done
        if done and not self.scan_finished:
            self.scan_finished = True
            self.main_screen.query_one("#header", Static).update(self._header_text())
        return done

    @property
    def scan_complete(self) -> bool:
        p = self.state.progress
        return self.scan_finished or (p is not None and p.phase == "done")

    @property
    def diff_complete(self) -> bool:
        diff = self.bridge.diff
        return diff is not None and len(self.state.compare) >= diff.total

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
        if self.series is not None:
            text.append(self.series.where(self.step_index), style="bold magenta")
            text.append(" │ ", style="dim")
        text.append(self.sub_title, style="bold cyan")
        fmt = getattr(ck, "format", "")
        n_params = getattr(ck, "n_params", None)
        text.append(f" · {fmt} · {plural(n, 'tensor')}")
        if n_params:
            text.append(f" · {human_count(int(n_params))} params")
        if self.bridge.diff is not None:
            a_name, b_name = self._ab_names()
            if self.swapped:
                a_name, b_name = b_name, a_name
            text.append(f" │ diff {len(self.state.compare)}/{self.bridge.diff.total} "
                        f"A={a_name} B={b_name}", style="magenta")
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

    # --- messages from the bridge's threads --------------------------------------------------

    def _job_views(self, job: str) -> list[View]:
        return [v for v in self.views.values() if job in v.jobs]

    @on(JobProgress)
    def _job_progress(self, message: JobProgress) -> None:
        for view in self._job_views(message.job):
            view.job_progress(message)

    @on(JobDone)
    def _job_done(self, message: JobDone) -> None:
        for view in self._job_views(message.job):
            view.job_done(message)

    @on(JobFailed)
    def _job_failed(self, message: JobFailed) -> None:
        for view in self._job_views(message.job):
            view.job_failed(message)

    @on(RequestFailed)
    def _request_failed(self, message: RequestFailed) -> None:
        for view in self.views.values():
            view.request_failed(message.name, message.error)

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
            self.bridge.prioritize(node.tensor.name)
        self._scope_dirty = True
        self.refresh_view()

    @property
    def selected_node(self) -> Any:
        return self.state.node_by_key.get(self.selected_key, self.state.root)

    @property
    def active_tab(self) -> Tab:
        return Tab(self.main_screen.query_one(TabbedContent).active or Tab.OVERVIEW)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self._scope_dirty = True
        self.refresh_view()
        self.call_after_refresh(self._focus_visible)

    def _focus_visible(self) -> None:
        """Keep focus where the user can see it: a table tab focuses its table; otherwise
        focus that sat in a now hidden pane goes back to the tree (j/k must keep moving)."""
        view = self.active_view
        if view.focus is not None:
            for widget in self.main_screen.query(f"#{view.tab} {view.focus.__name__}"):
                widget.focus()
                return
            self.call_after_refresh(self._focus_visible)  # Lazy: not mounted yet
            return
        focused = self.main_screen.focused
        hidden = focused is not None and any(
            isinstance(w, TabPane) and w.id != view.tab for w in focused.ancestors)
        if focused is None or hidden:
            self.main_screen.query_one(LayerTree).focus()

    def refresh_view(self, *, tensor: bool = True, scope: bool = True) -> None:
        """Redraw the active tab (`tensor`: views of the selected tensor; `scope`: tables)."""
        view = self.active_view
        node = self.selected_node
        if view.lazy and self.main_screen.query(f"#{view.tab} Lazy"):
            self.call_after_refresh(self.refresh_view, tensor=tensor, scope=scope)
            return  # the tab's widgets mount lazily after the first paint
        with self.batch_update():
            if view.wants(node, tensor=tensor, scope=scope):
                view.show(node)
        if (scope and view.scoped) or node.tensor is None:
            self._scope_dirty = False
            self._last_scope_refresh = time.perf_counter()

    def scope_key(self) -> str:
        """The block (or model) of the selection: what the Table and Depth views show."""
        return self.state.scope_of(self.selected_key)

    @property
    def filter_text(self) -> str:
        return self.main_screen.query_one(LayerTree).filter_text

    def filter_fn(self) -> Callable[[Any], bool] | None:
        text = self.filter_text
        if not text:
            return None
        return lambda ref: matches(text, ref.name) or matches(text, ref.display_name)

    def filtered_names(self) -> list[str]:
        """Every tensor in tree order that the filter lets through."""
        filt = self.filter_fn()
        return [n for n in self.state.order if filt is None or filt(self.state.refs[n])]

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
        self.main_screen.query_one(TabbedContent).active = Tab.OVERVIEW
        tree.focus()

    @on(JumpToTensor)
    def _jump(self, event: JumpToTensor) -> None:
        self.jump_to(event.name)

    @on(SortChanged)
    def _resort(self) -> None:
        self.view(Tab.TABLE).show(self.selected_node)

    def sort_table_by(self, column: str) -> None:
        """The Table sorted by `column` (the palette's "Sort table by …")."""
        table: TableView = self.view(Tab.TABLE)
        table.sort_by(column)
        self.main_screen.query_one(TabbedContent).active = Tab.TABLE
        table.show(self.selected_node)

    def show_depth(self, index: int) -> None:
        """The Depth view of `COLUMNS[index]` (`m` cycles; the palette picks one)."""
        depth: DepthView = self.view(Tab.DEPTH)
        depth.pick(index)
        if self.active_tab != Tab.DEPTH:
            self.main_screen.query_one(TabbedContent).active = Tab.DEPTH
        self.refresh_view()

    # --- actions -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        for view in self.views.values():
            verdict = view.check_action(action)
            if verdict is not None:
                return verdict
        return super().check_action(action, parameters)

    def action_show_tab(self, tab: str) -> None:
        view = self.view(tab)
        if view.needs_pair and self.pairing is None:
            self.notify(view.needs_pair)
            return
        if view.needs_run and self.series is None:
            self.notify(view.needs_run)
            return
        self.main_screen.query_one(TabbedContent).active = view.tab
        self.call_after_refresh(self._focus_visible)  # the same tab again: no TabActivated

    def action_quit_now(self) -> None:
        """Quit at once: cancel the scan, the diff and every job, never wait for a running
        analyzer."""
        self._quitting.set()  # also stops the flush timer's work
        self.bridge.cancel()
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

    def _jump_keeping_tab(self, name: str) -> None:
        """`n`/`N`: show `name` in the same tab where that tab shows a tensor."""
        view = self.active_view
        self.jump_to(name)
        if view.keep_on_jump:
            self.main_screen.query_one(TabbedContent).active = view.tab

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
            self._jump_keeping_tab(names[0] if step > 0 else names[-1])
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
        self._jump_keeping_tab(target)

    def action_sort(self) -> None:
        if self.active_tab == Tab.TABLE:
            self.view(Tab.TABLE).sort_here()
        else:
            self.action_show_tab(Tab.TABLE)

    def action_toggle_log(self) -> None:
        if self.active_tab == Tab.DEPTH:
            self.view(Tab.DEPTH).toggle_log()
        else:
            self.log_y = not self.log_y
            self.notify(f"histogram: {'log' if self.log_y else 'linear'} counts", timeout=2)
        self.refresh_view()

    def action_depth_metric(self) -> None:
        if self.active_tab == Tab.SERIES:
            self.view(Tab.SERIES).next_metric()
            self.refresh_view()
            return
        depth: DepthView = self.view(Tab.DEPTH)
        self.show_depth((depth.index + 1) % len(COLUMNS))

    def action_swap_diff(self) -> None:
        """Swap which checkpoint the overlays and header call A (the scan stays on the base)."""
        if self.pairing is None:
            self.notify("d swaps A and B in diff mode (wstui PATH --diff PATH_B)", timeout=3)
            return
        self.swapped = not self.swapped
        self.main_screen.query_one("#header", Static).update(self._header_text())
        self.refresh_view()

    # --- series mode: the step cursor ---------------------------------------------------------

    def action_step(self, delta: int) -> None:
        """`[`/`]`: the previous / next checkpoint of the run."""
        if self.series is None:
            return
        index = min(max(self.step_index + delta, 0), self.series.latest)
        if index == self.step_index:
            self.notify(f"{'first' if delta < 0 else 'last'} step of the run", timeout=2)
            return
        self.set_step(index)

    def set_step(self, index: int) -> None:
        """Show checkpoint `index` of the run: its tensors under the same tree (the selection
        and what is open are kept: the names are the same at every step, checked at launch),
        badges and every view from a scan of it (a new engine: cached results land at once;
        the scan before is cancelled)."""
        run = self.series
        if run is None or index == self.step_index:
            return
        self.step_index = index
        self.checkpoint = run.checkpoints[index]
        refs = {r.name: r for r in self.checkpoint.tensors}
        for node in self.state.root.walk():
            if node.tensor is not None and node.tensor.name in refs:
                node.tensor = refs[node.tensor.name]
        self.state = ScanState(self.state.root)
        self.scan_finished = False
        self.sub_title = visible(run.name(index))
        self.inbox = self.bridge.restart_scan(lambda: run.scan_factory(index))
        node = self.selected_node
        if node.tensor is not None:
            self.bridge.prioritize(node.tensor.name)
        tree = self.main_screen.query_one(LayerTree)
        tree.state_of = self.state.state
        for key in list(tree.nodes_by_key):
            tree.set_state(key, self.state.state(key))
        for view in self.views.values():
            view.checkpoint_changed()
        self.main_screen.query_one("#header", Static).update(self._header_text())
        self._scope_dirty = True
        self.refresh_view()

    # the model's quantization study (`r`, `g`, `a`): its view owns it
    def action_quant_study(self) -> None:
        self.quant.start_study()

    def action_quant_granularity(self) -> None:
        self.quant.next_granularity()

    def action_quant_alpha(self) -> None:
        self.quant.toggle_alpha()

    @property
    def quant(self) -> QuantizationView:
        return self.view(Tab.QUANTIZATION)

    # the sensitivity study (`r`, esc, `m` on its tab): its view owns it
    def action_sens_study(self) -> None:
        self.view(Tab.SENSITIVITY).start_study()

    def action_sens_cancel(self) -> None:
        self.view(Tab.SENSITIVITY).cancel_study()

    def action_sens_metric(self) -> None:
        self.view(Tab.SENSITIVITY).next_metric()

    # --- export ------------------------------------------------------------------------------

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
            if self.bridge.diff is not None:
                diff = self.bridge.diff.report()
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
        """The current view as `wstui.view/1` (what `e` writes, built by the active view),
        naming the checkpoint(s) it came from: a file in a folder of exports must say which
        model it is of."""
        doc = self.active_view.document(self.selected_node)
        doc["checkpoint"] = str(Path(str(getattr(self.checkpoint, "path", ""))).resolve())
        if self.series is not None:
            doc["step"] = self.series.steps[self.step_index]
        if self.checkpoint_b is not None:
            doc["checkpoint_b"] = str(Path(str(getattr(self.checkpoint_b, "path", ""))
                                           ).resolve())
        return doc

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
