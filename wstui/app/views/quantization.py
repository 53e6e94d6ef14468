"""Quantization (4). For a tensor: SQNR against bits per scheme, the α shift, and the full
sweep asked of the engine on demand. For a block or the model: the quantization study
(`wstui.quant.run_study`, started with `r` as a bridge job) with its table, α against bits and
the plan heat map (`wstui.app.widgets.quant_study`).

The study is expensive (one eigendecomposition per matrix and setting), so it runs on request
only; quitting cancels its engine; a rerun reads the scan cache, so finished matrices come back
at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from wstui.app.bridge import JobDone, JobFailed, JobProgress
from wstui.app.format import num
from wstui.app.tabs import Tab
from wstui.app.views.base import TensorView
from wstui.app.widgets.plots import PlotPanel
from wstui.app.widgets.quant_study import (
    QuantStudyView,
    alpha_plot,
    status_text,
    study_metrics,
    tensor_note,
)
from wstui.documents.view import view_document
from wstui.render import visible
from wstui.render.plots import PlotSpec

#: the analyzers of the full per-tensor sweep (6 to 2 bits, the α shift), asked for on demand
FULL_QUANT = ("quantization_full", "quant_alpha")
#: the bridge job of the study
STUDY = "quant"
#: the keys that live on the model/block tab only
STUDY_ACTIONS = ("quant_study", "quant_granularity", "quant_alpha")

StudyFn = Callable[..., dict[str, Any]]


def run_study(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from wstui.engine.study import run_study  # imported on the job's thread (it pulls in numpy)

    return run_study(*args, **kwargs)


def full_quant_methods(ref: Any) -> tuple[str, ...]:
    if not ref.analyzable:
        return ()
    shape = ref.shape
    is_matrix = len(shape) >= 2 and shape[0] >= 2 and (ref.numel // max(shape[0], 1)) >= 2
    return FULL_QUANT if is_matrix else FULL_QUANT[:1]


def has_ran(result: Any, methods: tuple[str, ...]) -> bool:
    return all(m in result.timings or m in result.skipped or m in result.errors
               for m in methods)


class QuantizationView(TensorView):
    tab = Tab.QUANTIZATION
    title = "Quant"
    label = "Quantization"
    short = "Quant"
    jobs = (STUDY,)

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.requested: dict[str, str] = {}  # tensor -> "" or why the request failed
        self.doc: dict[str, Any] | None = None  # the study's wstui.quant/1 document
        self.progress: JobProgress | None = None
        self.error = ""
        self.plan_index = 0
        self.alpha_key = "alpha"
        #: tests replace this with a stand-in `run_study`
        self.study_fn: StudyFn = run_study

    def body(self) -> Widget:
        return Vertical(Static(id="quant-info"), PlotPanel(id="plot-quant"),
                        QuantStudyView(id="quant-study"))

    # --- the study ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.app.bridge.running(STUDY)

    def study_widget(self) -> QuantStudyView | None:
        found = self.screen.query(QuantStudyView)
        return found.first() if found else None

    def scope(self) -> Any | None:
        """The model or block node selected, or None for a tensor (or another node)."""
        node = self.state.node_by_key.get(self.app.selected_key)
        if node is None or node.tensor is not None:
            return None
        return node

    def study_tensors(self) -> list[Any]:
        from wstui.engine.study import study_tensors

        return study_tensors(self.app.checkpoint, self.state.refs_list())

    def status(self) -> Text:
        status = status_text(doc=self.doc, running=self.running, progress=self.progress,
                             n_matrices=len(self.study_tensors()), error=self.error)
        node = self.scope()
        if node is not None and getattr(node, "group", "") == "block":
            # the study is of the whole model: a block's tab must say so
            status.append(f"\nThe study covers the whole model, not only {visible(node.label)}"
                          ": its row is marked ▸ once it ran.", style="italic")
        return status

    def _refresh(self) -> None:
        if self.app.active_tab == self.tab and self.scope() is not None:
            self.app.refresh_view()

    def check_action(self, action: str) -> bool | None:
        """`r`, `g`, `a` live on the model/block Quantization tab only (shown there alone)."""
        if action in STUDY_ACTIONS:
            return self.app.active_tab == self.tab and self.scope() is not None
        return None

    def start_study(self) -> None:
        """Start the study (the palette reaches it from anywhere; it opens the tab)."""
        app = self.app
        if self.running:
            app.notify("the quantization study is already running")
            return
        tensors = self.study_tensors()
        if not tensors:
            app.notify("no matrix to study in this checkpoint", severity="warning")
            return
        kw = {k: v for k, v in app.diff_kw.items() if k in ("device", "use_cache")}
        self.error = ""
        self.progress = None
        app.bridge.run(STUDY, self.study_fn, app.checkpoint, tensors=tensors, **kw)
        if app.active_tab != self.tab:
            app.action_show_tab(self.tab)
        if self.scope() is None:
            app.notify("quantization study started: select the model or a block to see it")
        self._refresh()

    def checkpoint_changed(self) -> None:
        """Series mode: the study and the sweeps asked for were of the checkpoint before."""
        job = self.app.bridge.job(STUDY)
        if job is not None and job.running:
            job.cancel()
        self.requested.clear()
        self.doc, self.progress, self.error = None, None, ""

    def next_granularity(self) -> None:
        n = len(self.doc["plan"]) if self.doc and self.doc.get("plan") else 1
        self.plan_index = (self.plan_index + 1) % max(n, 1)
        self._refresh()

    def toggle_alpha(self) -> None:
        self.alpha_key = "alpha_fixed_xmin" if self.alpha_key == "alpha" else "alpha"
        self._refresh()

    def job_progress(self, message: JobProgress) -> None:
        self.progress = message
        view = self.study_widget()
        if view is not None and view.display:
            view.set_status(self.status())

    def job_done(self, message: JobDone) -> None:
        doc = self.doc = message.result
        # place skipped matrices in the heat map: their kind and block from the tree's refs
        refs = {r.display_name: r for r in self.state.refs.values()}
        for x in doc.get("skipped") or []:
            if "kind" not in x and x.get("name") in refs:
                x["kind"], x["block"] = refs[x["name"]].kind, refs[x["name"]].block
        n = len(doc.get("plan") or [])
        if self.plan_index >= max(n, 1):
            self.plan_index = 0
        self.app.notify(f"quantization study done: {len(doc.get('layers', []))} matrices",
                        title="quantization")
        self._refresh()

    def job_failed(self, message: JobFailed) -> None:
        self.error = message.error
        self.app.notify(visible(f"quantization study failed: {message.error}"),
                        severity="error", markup=False, timeout=8)
        self._refresh()

    # --- showing -----------------------------------------------------------------------------

    def _show_study(self, node: Any) -> bool:
        """For the model or a block show the study and return True; for a tensor hide it
        and return False (the per-tensor curves show)."""
        view = self.study_widget()
        if view is None:
            return False
        scope = node.tensor is None
        view.display = scope
        info = self.screen.query_one("#quant-info", Static)
        info.display = not scope
        # room for the study's line about this tensor (tensor_note) once the study ran
        info.styles.max_height = 6 if self.doc and not scope else None
        self.screen.query_one("#plot-quant", PlotPanel).display = not scope
        self.app.refresh_bindings()
        if scope:
            block = node.block if getattr(node, "group", "") == "block" else None
            view.show(self.doc, status=self.status(), plan_index=self.plan_index,
                      alpha_key=self.alpha_key, block=block, scope_label=node.label)
        return scope

    def request_failed(self, name: str, error: str) -> None:
        if name in self.requested:
            self.requested[name] = error
            self.app.refresh_view(scope=False)

    def show(self, node: Any) -> None:
        info = self.screen.query_one("#quant-info", Static)
        panel = self.screen.query_one("#plot-quant", PlotPanel)
        if self._show_study(node):
            return
        if node.tensor is None:
            info.update("")
            panel.show(None, self.why_missing(node, "quantization"))
            return
        ref = node.tensor
        result = self.state.results.get(ref.name)
        wanted = full_quant_methods(ref)
        status = ""
        if (result is not None and wanted and ref.name not in self.requested
                and not has_ran(result, wanted) and self.app.bridge.request(ref.name, wanted)):
            self.requested[ref.name] = ""  # a refusal arrives as RequestFailed
        if result is not None and wanted:
            if has_ran(result, wanted):
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
        note = tensor_note(self.doc, ref.display_name, self.plan_index, self.alpha_key)
        if note is not None:  # once the study ran: this matrix's alphas by bits
            lines.append("\n").append_text(note)
        info.update(lines)
        panel.show(self.tensor_plots(node).get("quantization"),
                   self.why_missing(node, "quantization"), ref.display_name)

    def tensor_specs(self, node: Any) -> list[PlotSpec]:
        spec = self.tensor_plots(node).get("quantization")
        return [spec] if spec else []

    def document(self, node: Any) -> dict[str, Any]:
        if node.tensor is not None:
            return super().document(node)
        # model or block: wstui.view/1 with the study's data
        names = self.state.scope_names(node.key)
        selection = {"key": node.key, "label": node.label, "tensors": names}
        doc = self.doc
        plots = [alpha_plot(doc, self.alpha_key)] if doc else []
        return view_document(self.tab, selection=selection,
                             metrics=study_metrics(doc, self.plan_index, self.alpha_key),
                             plots=plots)
