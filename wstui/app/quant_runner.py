"""The model-level quantization study in the app: a runner thread and the app's side of it.

The study (`wstui.quant.run_study`) is expensive (one eigendecomposition per matrix and
setting), so it runs on demand (`r`, or the palette's "Run quantization study") on a daemon
thread, never in a Textual worker: asyncio's executor is joined at exit, and `q` must not wait
for a LAPACK call. The thread only posts messages (`post_message` is thread-safe); the app's
handlers (`QuantStudyActions`) own every state change. Quitting cancels the study's scan engine,
which `run_study` hands over through `engine_hook`. A rerun reads the scan cache, so finished
matrices come back at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from textual.message import Message

from wstui.render import visible

StudyFn = Callable[..., dict[str, Any]]


class QuantStudyProgress(Message):
    """Progress of the running study (a newer one replaces a queued older one)."""

    def __init__(self, done: int, total: int, current: str | None, elapsed_s: float,
                 eta_s: float | None) -> None:
        super().__init__()
        self.done, self.total, self.current = done, total, current
        self.elapsed_s, self.eta_s = elapsed_s, eta_s

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, QuantStudyProgress)


class QuantStudyDone(Message):
    """The study's `wstui.quant/1` document (`complete` is False when it was cancelled)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__()
        self.doc = doc


class QuantStudyFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


def _default_study(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from wstui.engine.study import run_study  # imported on the runner's thread (it pulls in numpy)

    return run_study(*args, **kwargs)


class StudyRunner:
    """One study on a daemon thread; `cancel()` stops its engine within a second."""

    def __init__(self, post: Callable[[Message], Any], study_fn: StudyFn | None = None,
                 **study_kw: Any) -> None:
        self.post = post
        self.study_fn = study_fn or _default_study
        self.study_kw = study_kw
        self.cancelled = threading.Event()
        self.engine: Any = None
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.started_at = 0.0

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, checkpoint: Any, tensors: list[Any] | None) -> None:
        self.started_at = time.perf_counter()
        self.thread = threading.Thread(target=self._run, args=(checkpoint, tensors),
                                       name="wstui-quant-study", daemon=True)
        self.thread.start()

    def _hook(self, engine: Any) -> None:
        with self._lock:
            self.engine = engine
        if self.cancelled.is_set():
            engine.cancel()

    def _progress(self, p: Any) -> None:
        if not self.cancelled.is_set():
            self.post(QuantStudyProgress(p.done, p.total, p.current,
                                         time.perf_counter() - self.started_at,
                                         getattr(p, "eta_s", None)))

    def _run(self, checkpoint: Any, tensors: list[Any] | None) -> None:
        try:
            doc = self.study_fn(checkpoint, tensors=tensors, on_progress=self._progress,
                                engine_hook=self._hook, **self.study_kw)
        except Exception as exc:  # shown as a notification; the app stays usable
            if not self.cancelled.is_set():
                self.post(QuantStudyFailed(f"{type(exc).__name__}: {exc}"))
            return
        if not self.cancelled.is_set():
            self.post(QuantStudyDone(doc))

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            engine = self.engine
        if engine is not None:
            with contextlib.suppress(Exception):  # a failing cancel must not block quitting
                engine.cancel()


class QuantStudyActions:
    """The app's side of the study, mixed into `WstuiApp` (actions, handlers, the view hook).

    Expects the app's `main_screen`, `state`, `selected_key`, `active_tab`, `checkpoint`,
    `diff_kw` and `refresh_view`."""

    quant_doc: dict[str, Any] | None = None
    quant_runner: StudyRunner | None = None
    quant_progress: QuantStudyProgress | None = None
    quant_error: str = ""
    quant_plan_index: int = 0
    quant_alpha_key: str = "alpha"
    #: tests replace this with a stand-in `run_study`
    quant_study_fn: StudyFn | None = None

    # --- what the view shows -------------------------------------------------------------

    def _quant_view(self) -> Any:
        from wstui.app.widgets.quant_study import QuantStudyView

        found = self.main_screen.query(QuantStudyView)
        return found.first() if found else None

    def _quant_scope(self) -> Any | None:
        """The model or block node selected, or None for a tensor (or another node)."""
        node = self.state.node_by_key.get(self.selected_key)
        if node is None or node.tensor is not None:
            return None
        return node

    def show_quant_study(self, node: Any) -> bool:
        """Called by the Quantization tab: for the model or a block show the study view and
        return True; for a tensor hide it and return False (the per-tensor curves show)."""
        from textual.widgets import Static

        from wstui.app.widgets.plots import PlotPanel

        view = self._quant_view()
        if view is None:
            return False
        scope = node.tensor is None
        view.display = scope
        info = self.main_screen.query_one("#quant-info", Static)
        info.display = not scope
        # room for the study's line about this tensor (tensor_note) once the study ran
        info.styles.max_height = 6 if self.quant_doc and not scope else None
        self.main_screen.query_one("#plot-quant", PlotPanel).display = not scope
        self.refresh_bindings()
        if scope:
            self._render_quant_study(node)
        return scope

    def _quant_study_tensors(self) -> list[Any]:
        from wstui.engine.study import study_tensors

        return study_tensors(self.checkpoint, self.state.refs_list())

    def _render_quant_study(self, node: Any) -> None:
        view = self._quant_view()
        if view is None:
            return
        block = node.block if getattr(node, "group", "") == "block" else None
        view.show(self.quant_doc, status=self._quant_status(), plan_index=self.quant_plan_index,
                  alpha_key=self.quant_alpha_key, block=block, scope_label=node.label)

    def _quant_status(self) -> Any:
        from wstui.app.widgets.quant_study import status_text

        runner = self.quant_runner
        status = status_text(
            doc=self.quant_doc, running=runner is not None and runner.running,
            progress=self.quant_progress, n_matrices=len(self._quant_study_tensors()),
            error=self.quant_error)
        node = self._quant_scope()
        if node is not None and getattr(node, "group", "") == "block":
            # the study is of the whole model: a block's tab must say so
            status.append(f"\nThe study covers the whole model, not only {visible(node.label)}"
                          ": its row is marked ▸ once it ran.", style="italic")
        return status

    def _quant_refresh(self) -> None:
        if self.active_tab == "quantization" and self._quant_scope() is not None:
            self.refresh_view()

    # --- keys ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`r`, `g`, `a` live on the model/block Quantization tab only (shown there alone)."""
        if action in ("quant_study", "quant_granularity", "quant_alpha"):
            return self.active_tab == "quantization" and self._quant_scope() is not None
        return super().check_action(action, parameters)

    def action_quant_study(self) -> None:
        """Start the study (the palette reaches it from anywhere; it opens the tab)."""
        if self.quant_runner is not None and self.quant_runner.running:
            self.notify("the quantization study is already running")
            return
        tensors = self._quant_study_tensors()
        if not tensors:
            self.notify("no matrix to study in this checkpoint", severity="warning")
            return
        kw = {k: v for k, v in getattr(self, "diff_kw", {}).items()
              if k in ("device", "use_cache")}
        self.quant_error = ""
        self.quant_progress = None
        self.quant_runner = StudyRunner(self.post_message, self.quant_study_fn, **kw)
        self.quant_runner.start(self.checkpoint, tensors)
        if self.active_tab != "quantization":
            self.action_show_tab("quantization")
        if self._quant_scope() is None:
            self.notify("quantization study started: select the model or a block to see it")
        self._quant_refresh()

    def action_quant_granularity(self) -> None:
        n = len(self.quant_doc["plan"]) if self.quant_doc and self.quant_doc.get("plan") else 1
        self.quant_plan_index = (self.quant_plan_index + 1) % max(n, 1)
        self._quant_refresh()

    def action_quant_alpha(self) -> None:
        self.quant_alpha_key = "alpha_fixed_xmin" if self.quant_alpha_key == "alpha" else "alpha"
        self._quant_refresh()

    def cancel_quant_study(self) -> None:
        """On quit: stop the study's engine (never waits for a running eigendecomposition)."""
        if self.quant_runner is not None:
            self.quant_runner.cancel()

    # --- messages from the runner thread -------------------------------------------------

    def on_quant_study_progress(self, message: QuantStudyProgress) -> None:
        self.quant_progress = message
        view = self._quant_view()
        if view is not None and view.display:
            view.set_status(self._quant_status())

    def on_quant_study_done(self, message: QuantStudyDone) -> None:
        self.quant_runner = None  # its thread may not have returned yet: it is done all the same
        self.quant_doc = message.doc
        # place skipped matrices in the heat map: their kind and block from the tree's refs
        refs = {r.display_name: r for r in self.state.refs.values()}
        for x in message.doc.get("skipped") or []:
            if "kind" not in x and x.get("name") in refs:
                x["kind"], x["block"] = refs[x["name"]].kind, refs[x["name"]].block
        n = len(message.doc.get("plan") or [])
        if self.quant_plan_index >= max(n, 1):
            self.quant_plan_index = 0
        self.notify(f"quantization study done: {len(message.doc.get('layers', []))} matrices",
                    title="quantization")
        self._quant_refresh()

    def on_quant_study_failed(self, message: QuantStudyFailed) -> None:
        self.quant_runner = None
        self.quant_error = message.error
        self.notify(visible(f"quantization study failed: {message.error}"), severity="error",
                    markup=False, timeout=8)
        self._quant_refresh()

    # --- export and the per-tensor note --------------------------------------------------

    def quant_study_view_document(self, node: Any) -> dict[str, Any]:
        """`e` on the model/block Quantization tab: wstui.view/1 with the study's data."""
        from wstui.app.viewexport import view_document
        from wstui.app.widgets.quant_study import alpha_plot, study_metrics

        names = self.state.scope_names(node.key)
        selection = {"key": node.key, "label": node.label, "tensors": names}
        doc = self.quant_doc
        plots = [alpha_plot(doc, self.quant_alpha_key)] if doc else []
        return view_document("quantization", selection=selection,
                             metrics=study_metrics(doc, self.quant_plan_index,
                                                   self.quant_alpha_key),
                             plots=plots)

    def quant_study_note(self, ref: Any) -> Any:
        """One line for the per-tensor tab once the study ran: this matrix's alphas by bits."""
        from wstui.app.widgets.quant_study import tensor_note

        return tensor_note(self.quant_doc, ref.display_name, self.quant_plan_index,
                           self.quant_alpha_key)
