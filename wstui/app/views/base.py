"""What a tab of the app is: a `View` shows the selected tree node in its pane and exports what
it shows as `wstui.view/1`.

A view is a small class the app makes once (its state, such as the Depth view's metric, lives
from start-up, before its widgets mount lazily); its widgets are built by `body()`. It reads
the app's shared state (`app.state`, `app.pairing`, `app.swapped`, `app.log_y`) and asks the
engine for work only through `app.bridge`. The registry in `wstui.app.views` lists the views in
tab order: the tab bar, the `1`-`9` keys, `e`, the palette and the help screen read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual.widget import Widget

from wstui.app.tabs import Tab
from wstui.documents.view import view_document
from wstui.render.plots import PlotSpec, overlay_plots

if TYPE_CHECKING:  # pragma: no cover
    from wstui.app.app import WstuiApp
    from wstui.app.bridge import JobDone, JobFailed, JobProgress


class View:
    """One tab. Subclasses set the class attributes and `body`, `show`, and where the default
    (a summary of the selection) does not fit, `document`."""

    tab: ClassVar[Tab]
    title: ClassVar[str]  # the pane's title until the first resize labels the bar
    label: ClassVar[str]  # in the tab bar when there is room ("Overview") ...
    short: ClassVar[str]  # ... and when there is not ("Info"); the digit goes before both
    #: shows the block or model of the selection (redrawn when scope-wide results land)
    scoped: ClassVar[bool] = False
    #: the pane mounts after the first paint
    lazy: ClassVar[bool] = True
    #: non-empty: the view needs diff mode, and this says so when asked for without it
    needs_pair: ClassVar[str] = ""
    #: non-empty: the view needs series mode (a training run), and this says so without it
    needs_run: ClassVar[str] = ""
    #: the widget that takes the focus when the tab opens (a table: j/k must move in it)
    focus: ClassVar[type[Widget] | None] = None
    #: `n`/`N` from this tab show the next tensor here (False: in its Overview)
    keep_on_jump: ClassVar[bool] = True
    #: names of the bridge's jobs whose messages this view handles
    jobs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, app: WstuiApp) -> None:
        self.app = app

    @property
    def screen(self) -> Any:
        return self.app.main_screen

    @property
    def state(self) -> Any:
        return self.app.state

    # --- what subclasses give ----------------------------------------------------------------

    def body(self) -> Widget:
        """The pane's content (built once, in compose)."""
        raise NotImplementedError

    def wants(self, node: Any, *, tensor: bool, scope: bool) -> bool:
        """Whether a redraw of `tensor` views / `scope` views concerns this one."""
        return scope if self.scoped else tensor

    def show(self, node: Any) -> None:
        """Draw `node` (the tree's selection) in the pane."""
        raise NotImplementedError

    def document(self, node: Any) -> dict[str, Any]:
        """What `e` writes: by default a summary of the selection, as the Overview of a block."""
        return self.selection_document(node)

    def resize(self, width: int) -> None:
        """The screen is now `width` columns wide."""

    def check_action(self, action: str) -> bool | None:
        """Textual's check_action for the app's keys this view owns (None: not one of them)."""
        return None

    def request_failed(self, name: str, error: str) -> None:
        """The engine refused an on-demand request (`app.bridge.request`) for tensor `name`."""

    def checkpoint_changed(self) -> None:
        """Series mode moved to another checkpoint: drop what was of the one before."""

    def job_progress(self, message: JobProgress) -> None: ...

    def job_done(self, message: JobDone) -> None: ...

    def job_failed(self, message: JobFailed) -> None: ...

    # --- shared helpers ----------------------------------------------------------------------

    def selection(self, key: str, names: list[str]) -> dict[str, Any]:
        return {"key": key, "label": self.state.node_by_key[key].label, "tensors": names}

    def selection_document(self, node: Any) -> dict[str, Any]:
        names = self.state.scope_names(node.key)
        pairs = self.state.findings(names)
        return view_document(Tab.OVERVIEW, selection=self.selection(node.key, names), metrics={
            "n_tensors": len(names),
            "scanned": sum(1 for n in names if n in self.state.results)},
            findings=[{"tensor": n, **f.to_dict()} for n, f in pairs])

    def tensor_plots(self, node: Any) -> dict[str, PlotSpec]:
        if node.tensor is None:
            return {}
        return self.state.plots.get(node.tensor.name, {})

    def overlay(self, node: Any) -> dict[str, PlotSpec]:
        """Diff mode: the A/B overlays of the selected pair (rebuilt when swapped or log-y)."""
        if node.tensor is None or self.app.pairing is None:
            return {}
        cmp = self.state.compare.get(node.tensor.name)
        if cmp is None:
            return {}
        if not self.app.swapped and not self.app.log_y:
            return self.state.compare_plots.get(node.tensor.name, {})
        return overlay_plots(cmp, swap=self.app.swapped, log_y=self.app.log_y)

    def why_missing(self, node: Any, analyzer: str) -> str:
        """Why a plot of `analyzer` is empty, as the panel says it."""
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
        if self.app.scan_complete:
            return f"no {analyzer} result: not part of this scan"
        return f"computing {analyzer}… (next in the queue)"


class TensorView(View):
    """A view of the selected tensor (a block or the model gets the default summary)."""

    def tensor_specs(self, node: Any) -> list[PlotSpec]:
        """The plots this view shows of a tensor, in the order `e` exports them."""
        return []

    def document(self, node: Any) -> dict[str, Any]:
        if node.tensor is None:
            return self.selection_document(node)
        ref = node.tensor
        result = self.state.results.get(ref.name)
        return view_document(
            self.tab, tensor=ref.name, metrics=result.metrics if result else {},
            plots=self.tensor_specs(node),
            findings=[f.to_dict() for f in result.findings] if result else [],
            shape=list(ref.shape), dtype=ref.dtype, kind=ref.kind, block=ref.block,
            errors=dict(result.errors) if result else {},
        )
