"""Series (series mode only): a metric of a training run against the step.

For the model or a block (or a group in it), one line per module kind: the median over that
kind's tensors in the selection (for the model, the document's own `by_kind`); α gets the HTSR
bands, lines at 2 and 6. For a tensor, its own series beside its kind's median, and a table
of every metric at the steps around the cursor. `m` picks the next metric; the step cursor
(`[`/`]`, owned by the app: it switches the checkpoint every other view shows) is the
vertical line.

The series is the run's `wstui.track/1` document (`engine.track.track`, cached: a reopen is
instant), computed by a job of the bridge that starts with the app.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from wstui.app.series import TRACK, track_job
from wstui.app.tabs import Tab
from wstui.app.views.base import View
from wstui.app.widgets.plots import PlotPanel
from wstui.documents.numbers import median
from wstui.documents.track import by_kind
from wstui.documents.view import view_document
from wstui.render import plain, visible
from wstui.render.numbers import fmt, kind_key
from wstui.render.plots import SERIES_METRICS, PlotSpec, series_plot

METRICS = tuple(SERIES_METRICS)
#: the tensor table's column titles (narrow: the pane is ~50 columns at 80)
SHORT = {"alpha": "α", "stable_rank": "st.rank", "spectral_norm": "σ max",
         "rel_change_prev": "Δ prev", "rel_change_first": "Δ first"}
HTSR = "HTSR: α<2 over-trained, 2–6 well trained, >6 under-trained"


class SeriesView(View):
    tab = Tab.SERIES
    title = label = "Series"
    short = "Run"
    needs_run = ("the Series tab needs a training run: wstui CKPT1 CKPT2 …, or "
                 "wstui RUN_DIR --series")
    jobs = (TRACK,)

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.metric = "alpha"
        self.doc: dict[str, Any] | None = None  # the run's wstui.track/1
        self._by_name: dict[str, dict[str, Any]] = {}
        self.progress: Any = None
        self.error = ""

    def body(self) -> Widget:
        table = Static(id="series-table")
        table.styles.height = "auto"
        return Vertical(Static(id="series-caption", classes="caption"),
                        PlotPanel(id="plot-series"), table)

    # --- the job -----------------------------------------------------------------------------

    def start(self) -> None:
        """Compute the run's series (the app calls this once its first frame is painted)."""
        run = self.app.series
        if run is None or self.app.bridge.running(TRACK):
            return
        self.error, self.progress = "", None
        self.app.bridge.run(TRACK, track_job(run.track, len(run.steps)))

    def job_progress(self, message: Any) -> None:
        self.progress = message
        self._redraw()

    def job_done(self, message: Any) -> None:
        self.doc = message.result
        self._by_name = {t["name"]: t for t in self.doc.get("tensors", [])}
        self._redraw()

    def job_failed(self, message: Any) -> None:
        self.error = message.error
        self.app.notify(visible(f"the run's series failed: {message.error}"), severity="error",
                        markup=False, timeout=8)
        self._redraw()

    def _redraw(self) -> None:
        if self.app.active_tab == self.tab:
            self.app.refresh_view()

    # --- keys --------------------------------------------------------------------------------

    def check_action(self, action: str) -> bool | None:
        """`[`/`]` exist in series mode only (the footer shows them there alone)."""
        if action == "step":
            return self.app.series is not None
        return None

    def next_metric(self) -> None:
        self.metric = METRICS[(METRICS.index(self.metric) + 1) % len(METRICS)]

    # --- the data ----------------------------------------------------------------------------

    @property
    def cursor(self) -> int | None:
        """The step number under the cursor (the checkpoint the other views show)."""
        run = self.app.series
        return run.steps[self.app.step_index] if run is not None else None

    def steps(self) -> list[int]:
        return [s["step"] for s in self.doc["steps"]] if self.doc else []

    def entry(self, node: Any) -> dict[str, Any] | None:
        """A tensor's entry in the document (None: not followed, or no document yet)."""
        return self._by_name.get(node.tensor.name) if node.tensor is not None else None

    def lines(self, node: Any, metric: str) -> list[tuple[str, list[Any]]]:
        """(label, one value per step) of each line the plot draws for `node`."""
        doc = self.doc
        if doc is None:
            return []
        if node.tensor is not None:
            t = self.entry(node)
            if t is None:
                return []
            out = [(visible(node.label), list(t["series"].get(metric) or []))]
            row = doc["by_kind"].get(t["kind"], {})
            if row.get("n_tensors", 0) > 1:
                out.append((f"{t['kind']} median", list(row.get(metric) or [])))
            return out
        if node is self.state.root:
            rows = doc["by_kind"]
        else:
            names = set(self.state.scope_names(node.key))
            tensors = [t for t in doc["tensors"] if t["name"] in names]
            rows = by_kind(tensors, [metric], len(doc["steps"]),
                           lambda v: median(v, finite=True))
        return [(kind, list(rows[kind].get(metric) or [])) for kind in sorted(rows, key=kind_key)]

    def spec(self, node: Any, metric: str | None = None) -> PlotSpec:
        """The plot of `metric` (the current one by default) for `node`."""
        metric = metric or self.metric
        label = SERIES_METRICS[metric]
        what = "median per module kind" if node.tensor is None else "this tensor"
        spec = series_plot(self.steps(), self.lines(node, metric), metric, cursor=self.cursor,
                           title=f"{label} against step, {what}")
        if metric == "alpha":
            spec.note = HTSR
        return spec

    # --- showing -----------------------------------------------------------------------------

    def wants(self, node: Any, *, tensor: bool, scope: bool) -> bool:
        return tensor and scope  # the scan's results change nothing here

    def show(self, node: Any) -> None:
        caption = self.screen.query_one("#series-caption", Static)
        panel = self.screen.query_one("#plot-series", PlotPanel)
        table = self.screen.query_one("#series-table", Static)
        run = self.app.series
        where = run.where(self.app.step_index) if run is not None else ""
        caption.update(plain(f"m: next metric · [ ]: step · cursor at {where}"))
        if self.doc is None:
            table.display = False
            panel.show(None, self.waiting())
            return
        subject = visible(node.tensor.display_name) if node.tensor is not None else (
            f"{visible(node.label)} ({len(self.state.scope_names(node.key))} tensors)")
        spec = self.spec(node)
        panel.show(spec, self.why_empty(node), subject)
        entry = self.entry(node)
        table.display = entry is not None
        if entry is not None:
            table.update(self.tensor_table(entry))

    def waiting(self) -> str:
        if self.error:
            return f"the run's series failed: {self.error}"
        p = self.progress
        if p is None:
            return "computing the run's series…"
        return f"computing the run's series ({p.done + 1}/{p.total}): {p.current or ''}"

    def why_empty(self, node: Any) -> str:
        label = SERIES_METRICS[self.metric]
        if node.tensor is not None and self.entry(node) is None:
            ref = node.tensor
            if not ref.analyzable:
                why = ref.note or f"{ref.dtype} is not analyzed"
            else:
                why = "tied to another tensor" if ref.tied_to else "not in the series"
            return f"not in the run's series: {why}"
        if self.metric == "alpha" or self.metric in ("stable_rank", "spectral_norm"):
            return f"no {label} here: only matrices have a spectrum"
        return f"no {label} here"

    def tensor_table(self, t: dict[str, Any]) -> Table:
        """Every metric at the steps around the cursor; `=`: unchanged since the step before
        (not analyzed again)."""
        steps = self.steps()
        at = self.app.step_index
        room = max(3, self.app.size.height - 19)  # the plot keeps ~10 lines
        lo = max(0, min(at - room // 2, len(steps) - room))
        rows = range(lo, min(len(steps), lo + room))
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
        table.add_column("step", justify="right", no_wrap=True)
        for m in METRICS:
            table.add_column(SHORT[m], justify="right", no_wrap=True, overflow="ellipsis")
        analyzed = t.get("analyzed") or []
        for i in rows:
            same = i < len(analyzed) and not analyzed[i]
            mark = "▸" if i == at else " "
            cells = [Text(f"{mark}{steps[i]}{' =' if same else '  '}",
                          style="bold" if i == at else "")]
            cells += [fmt((t["series"].get(m) or [None] * len(steps))[i]) for m in METRICS]
            table.add_row(*cells)
        if lo > 0 or rows.stop < len(steps):
            table.caption = f"steps {lo + 1}-{rows.stop} of {len(steps)}"
        return table

    # --- export ------------------------------------------------------------------------------

    def document(self, node: Any) -> dict[str, Any]:
        metrics: dict[str, Any] = {"metric": self.metric, "steps": self.steps(),
                                   "cursor_step": self.cursor}
        if self.doc is None:
            metrics["status"] = self.waiting()
        if node.tensor is not None:
            t = self.entry(node)
            plots = [self.spec(node, m) for m in METRICS] if t is not None else []
            extra = {"kind": t["kind"], "block": t["block"], "analyzed": t["analyzed"],
                     "series": t["series"]} if t is not None else {}
            return view_document(self.tab, tensor=node.tensor.name, metrics=metrics,
                                 plots=plots, **extra)
        names = self.state.scope_names(node.key)
        plots = [self.spec(node)] if self.doc is not None else []
        return view_document(self.tab, selection=self.selection(node.key, names),
                             metrics=metrics, plots=plots)
