"""Sensitivity (9): which weights the model's loss depends on, from a study run on request
(`r`; `r` again or esc cancels) as a bridge job: the causal LM built from our readers, one
forward and backward pass on the calibration text, super weights, perturbation with controls
(`wstui.engine.sensitivity`, the numbers of `wstui sensitivity`).

For the model or a block: the metric (`m` cycles it) summed per tensor against block index,
one line per module kind; the critical weights (enter goes to the tensor); the super weights
and the perturbation table, a block's restricted to it. For a tensor: its scores, a row x
column heat map of its |g⊙w| (max-pooled: the hottest cell holds its top weight), its own
critical weights.

Cached: the last study of these files and settings is kept (`wstui.engine.sensitivity_cache`)
and shown again at once when the tab first opens.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.text import Text
from textual.widget import Widget
from textual.widgets import ProgressBar

from wstui.app.bridge import JobDone, JobFailed, JobProgress
from wstui.app.tabs import Tab
from wstui.app.views.base import View
from wstui.app.widgets.plots import PlotPanel
from wstui.app.widgets.sensitivity import CriticalTable, SensitivityPanel
from wstui.documents.view import view_document
from wstui.render import plain, visible
from wstui.render.numbers import fmt_fixed, human_bytes

#: the bridge jobs: the study, and reading the last one from the cache
STUDY = "sensitivity"
CACHED = "sensitivity_cache"
#: the keys that live on this tab only
STUDY_ACTIONS = ("sens_study", "sens_metric", "sens_cancel")
#: the study's settings: `wstui sensitivity`'s defaults, so the app shows the CLI's numbers
SETTINGS: dict[str, Any] = {
    "tokens": 512, "metrics": ["grad_x_weight", "fisher", "wanda"], "probes": 8,
    "topk": 100, "mode": "global", "perturb": ["zero"], "scale": 1.0,
    "controls": ["random_k", "bottom_k"], "seeds": [0, 1, 2], "stability": True,
    "static": True,
}
#: each matrix's heat map as the run keeps it (rows x cols cells at most)
GRID = (48, 64)
#: the heat map as drawn: at most this many rows (a screenful), columns to the panel's width
SHOWN_ROWS = 24
#: rows of the critical-weights table
TABLE_ROWS = 20
#: the metric of the maps (the heat map and each tensor's own top weights)
MAP_METRIC = "grad_x_weight"

StudyFn = Callable[..., Any]


@dataclass
class Study:
    """What the job hands the view: the document, the per-tensor maps, where it came from."""

    doc: dict[str, Any]
    maps: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


def run_study(ckpt: Any, *, on_progress: Any, engine_hook: Any, settings: Mapping[str, Any],
              device: str = "cpu", use_cache: bool = True) -> Study:
    """The study with its heat maps, kept in the cache (on the job's thread: imports torch).
    It opens the checkpoint again: its readers are the study's own, since building the model
    closes a GGUF's file (to drop its pages), which must not happen under the scan's reads."""
    from wstui.checkpoint import open_checkpoint
    from wstui.engine import sensitivity_cache
    from wstui.engine.sensitivity import run_sensitivity_maps

    with open_checkpoint(ckpt.path) as own:
        doc, maps = run_sensitivity_maps(own, grid=GRID, on_progress=on_progress,
                                         job_hook=engine_hook, device=device,
                                         use_cache=use_cache, **settings)
    if use_cache:
        sensitivity_cache.save(ckpt, cache_settings(settings), doc, maps)
    return Study(doc, maps)


def load_cached(ckpt: Any, *, settings: Mapping[str, Any], **_: Any) -> Study | None:
    """The last study of these files and settings from the cache, or None (no torch)."""
    from wstui.engine import sensitivity_cache

    found = sensitivity_cache.load(ckpt, cache_settings(settings))
    return Study(found[0], found[1], cached=True) if found else None


def cache_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {**settings, "heatmaps": list(GRID)}


def checkpoint_problem(ckpt: Any) -> str:
    """Why this checkpoint cannot run as a causal LM ('' when it looks as if it can)."""
    from wstui.lm.build import causal_lm_problem

    try:
        problem = causal_lm_problem(ckpt)
    except Exception as exc:  # a checkpoint stand-in without files: say so, never crash
        return f"cannot tell whether it builds as a causal LM: {exc}"
    return "" if problem is None else str(problem)


def one_line(error: str) -> str:
    """A job's error as the tab shows it: the engine's one line, without the class name of a
    CheckpointError (its message already names the file)."""
    text = " ".join(str(error).split())
    for prefix in ("CheckpointError: ", "ValueError: "):
        text = text.removeprefix(prefix)
    return text


def n_perturbations(settings: Mapping[str, Any]) -> int:
    per_method = len(settings["metrics"])
    if "random_k" in settings["controls"]:
        per_method += len(settings["seeds"])
    if "bottom_k" in settings["controls"]:
        per_method += 1
    return len(settings["perturb"]) * (per_method + 1)  # + the super weights, when found


def n_steps(settings: Mapping[str, Any]) -> int:
    """The steps the study reports (build, perplexity, gradients, hutchinson per seed, the
    two halves, super weights, each perturbation, static metrics): the bar's denominator."""
    n = 3 + 1 + n_perturbations(settings) + 1
    if "hutchinson" in settings["metrics"]:
        n += len(settings["seeds"])
    if settings.get("stability"):
        n += 2
    return n


def cell_of(edges: list[int], i: int) -> int:
    return bisect.bisect_right(edges, i) - 1


class SensitivityView(View):
    tab = Tab.SENSITIVITY
    title = "Sens"
    label = "Sensitivity"
    short = "Sens"
    jobs = (STUDY, CACHED)

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.study: Study | None = None
        self.progress: JobProgress | None = None
        self.steps_seen: list[str] = []
        self.error = ""
        self.note = ""  # "cancelled", …
        self.metric_index = 0
        self.looked_in_cache = False
        self._problem: str | None = None
        self._drawn: tuple[Any, ...] | None = None
        self._ticker: Any = None  # redraws the status every second while the study runs
        #: tests replace these with stand-ins (and `settings` with a faster study)
        self.study_fn: StudyFn = run_study
        self.load_fn: StudyFn = load_cached
        self.settings: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v)
                                         for k, v in SETTINGS.items()}
        self.problem_fn: Callable[[Any], str] = checkpoint_problem

    def body(self) -> Widget:
        return SensitivityPanel(id="sens-panel")

    # --- state -------------------------------------------------------------------------------

    @property
    def doc(self) -> dict[str, Any] | None:
        return self.study.doc if self.study else None

    @property
    def running(self) -> bool:
        job = self.app.bridge.job(STUDY)
        return job is not None and job.running and not job.cancelled.is_set()

    @property
    def stopping(self) -> bool:
        """Cancelled, and its thread still finishing the step it was in."""
        job = self.app.bridge.job(STUDY)
        return job is not None and job.running and job.cancelled.is_set()

    @property
    def problem(self) -> str:
        if self._problem is None:
            self._problem = self.problem_fn(self.app.checkpoint)
        return self._problem

    @property
    def metrics(self) -> list[str]:
        """The metrics `m` cycles through: the study's, then magnitude."""
        ms = list((self.doc or {}).get("settings", {}).get("metrics") or self.settings["metrics"])
        return [*ms, *(["magnitude"] if "magnitude" not in ms else [])]

    @property
    def metric(self) -> str:
        ms = self.metrics
        return ms[self.metric_index % len(ms)]

    @property
    def use_cache(self) -> bool:
        return bool(self.app.diff_kw.get("use_cache", True))

    def check_action(self, action: str) -> bool | None:
        here = self.app.active_tab == self.tab
        if action in ("sens_study", "sens_metric"):
            return here
        if action == "sens_cancel":
            return here and self.running
        if action == "clear_filter" and here and self.running:
            return False  # esc cancels the study first
        if action == "depth_metric" and here:
            return False  # m: this tab's metric
        return None

    def _refresh(self) -> None:
        self._drawn = None
        if self.app.active_tab == self.tab:
            self.app.refresh_view()

    # --- the study ---------------------------------------------------------------------------

    def look_in_cache(self) -> None:
        """Once, when the tab first shows: the last study of this checkpoint, if kept."""
        if self.looked_in_cache:
            return
        self.looked_in_cache = True
        if self.use_cache and not self.problem:
            self.app.bridge.run(CACHED, self.load_fn, self.app.checkpoint,
                                settings=dict(self.settings))

    def start_study(self) -> None:
        """`r`: start the study, or cancel the running one (the palette opens the tab)."""
        app = self.app
        if app.active_tab != self.tab:
            app.action_show_tab(self.tab)
        if self.running:
            self.cancel_study()
            return
        if self.stopping:
            app.notify("the cancelled study is still finishing its current step")
            return
        if self.problem:
            app.notify(visible(f"no sensitivity study: {self.problem}"), severity="warning",
                       markup=False, timeout=6)
            self._refresh()
            return
        device = app.diff_kw.get("device", "cpu") or "cpu"
        self.error = self.note = ""
        self.progress = None
        self.steps_seen = []
        app.bridge.run(STUDY, self.study_fn, app.checkpoint, settings=dict(self.settings),
                       device=device, use_cache=self.use_cache)
        if self._ticker is None:
            self._ticker = app.set_interval(1.0, self._tick)
        self._refresh()

    def _tick(self) -> None:
        """The elapsed time goes on between the study's steps (a step may take a minute)."""
        if self.running and self.app.active_tab == self.tab:
            self._draw_status()

    def cancel_study(self) -> None:
        job = self.app.bridge.job(STUDY)
        if job is None or not self.running:
            return
        job.cancel()
        self.progress = None
        self.note = ("cancelled" + (": the results below are the last complete study's"
                                    if self.study else ""))
        self.app.notify("sensitivity study cancelled", timeout=3)
        self._refresh()

    def next_metric(self) -> None:
        self.metric_index = (self.metric_index + 1) % len(self.metrics)
        self._refresh()

    def job_progress(self, message: JobProgress) -> None:
        if message.job != STUDY or not self.running:
            return
        self.progress = message
        cur = message.current or ""
        if cur and cur not in self.steps_seen and not self._static_phase():
            self.steps_seen.append(cur)
        self._draw_status()

    def _static_phase(self) -> bool:
        return any(s.startswith("static metrics") for s in self.steps_seen)

    def job_done(self, message: JobDone) -> None:
        if message.job == CACHED:
            if message.result is not None and self.study is None and not self.running:
                self.study = message.result
                self._refresh()
            return
        self.study = message.result
        self.progress = None
        self.note = ""
        n = len(self.study.doc.get("tensors", [])) if self.study else 0
        self.app.notify(f"sensitivity study done: {n} tensors", title="sensitivity")
        self._refresh()

    def job_failed(self, message: JobFailed) -> None:
        if message.job == CACHED:
            return  # a cache that cannot be read is a miss
        self.error = one_line(message.error)
        self.progress = None
        self.app.notify(visible(f"sensitivity study failed: {self.error}"), severity="error",
                        markup=False, timeout=8)
        self._refresh()

    # --- text --------------------------------------------------------------------------------

    def fraction(self) -> float:
        """How far the running study is, 0..1, from the steps it reported."""
        total = n_steps(self.settings)
        done = len(self.steps_seen)
        if self._static_phase() and self.progress is not None and self.progress.total:
            done = total - 1 + self.progress.done / self.progress.total
        return max(0.0, min(1.0, done / total))

    def cost_text(self) -> Text:
        s = self.settings
        ckpt = self.app.checkpoint
        n_params = int(getattr(ckpt, "n_params", 0) or 0)
        n_mat = sum(1 for r in self.state.refs.values() if len(r.shape) == 2)
        backward = 3 if s.get("stability") else 1
        t = Text("Sensitivity study (not run yet)", style="bold")
        t.append(f": builds this checkpoint as a causal LM in float32 (about "
                 f"{human_bytes(4 * n_params)} of weights) and runs it on {s['tokens']} tokens "
                 f"of the shipped calibration text: {backward} forward+backward passes "
                 f"(gradients{', and the two text halves for stability' if backward > 1 else ''}"
                 f"), the super-weight search, {n_perturbations(s)} perplexity runs "
                 f"(perturbation of the top {s['topk']} against random and bottom controls), "
                 f"then α, int8 SQNR and stable rank of the {n_mat} matrices. ")
        t.append("Press r to run it", style="bold cyan")
        t.append(" (r or esc cancels). The result is kept and shown again next time.")
        return t

    def status(self) -> Text:
        t = Text()
        if self.running:
            t.append("running the sensitivity study", style="bold yellow")
            p = self.progress
            job = self.app.bridge.job(STUDY)
            if job is not None and job.started_at:
                t.append(f" · {time.perf_counter() - job.started_at:.0f} s", style="yellow")
            if p is not None:
                if p.current:
                    t.append(f"\n{visible(p.current)}", style="dim")
            else:
                t.append(" · starting (loading torch, building the model)…", style="yellow")
            t.append("\nr or esc cancels" + ("; the last study stays below" if self.study
                                            else ""), style="dim")
            return t
        if self.stopping:
            t.append("stopping the study at its next step…\n", style="bold yellow")
        if self.error:
            t.append(f"the study failed: {visible(self.error)}\n", style="bold red")
        elif self.note:
            t.append(f"{visible(self.note)}\n", style="yellow")
        doc = self.doc
        if doc is None:
            if self.problem:
                t.append("No sensitivity study for this checkpoint: ", style="bold")
                t.append(visible(self.problem), style="bold red")
                t.append("\nIt needs a causal LM (decoder with an LM head) with its config and "
                         "tokenizer beside the weights.", style="dim")
                return t
            if not self.error:
                t.append_text(self.cost_text())
            else:
                t.append("r: try again", style="dim")
            return t
        txt = doc.get("text", {})
        t.append("Sensitivity study", style="bold green")
        t.append(f": perplexity {fmt_fixed(doc.get('perplexity'), '.4g')} on "
                 f"{txt.get('tokens', '?')} tokens")
        total = (doc.get("timings") or {}).get("total_s")
        if total is not None:
            t.append(f" · {total:.1f} s on {visible(str(doc.get('device', '?')))}")
        if self.study and self.study.cached:
            t.append(" · from the cache", style="cyan")
        t.append(f"\nm: metric ({self.metric}) · r: run again · enter on a row: go to the "
                 "tensor", style="dim")
        return t

    # --- picking rows out of the document ----------------------------------------------------

    def names(self) -> dict[str, str]:
        """HF name (what the document calls a tensor) -> stored name (the tree's)."""
        doc = self.doc or {}
        out = {t["hf_name"]: t["name"] for t in doc.get("tensors", [])}
        for ref in self.state.refs.values():
            out.setdefault(ref.hf_name or ref.name, ref.name)
        return out

    def tensor_entry(self, ref: Any) -> dict[str, Any] | None:
        for t in (self.doc or {}).get("tensors", []):
            if t["name"] == ref.name or t["hf_name"] == (ref.hf_name or ref.name):
                return t
        return None

    def scope_tensors(self, node: Any) -> set[str] | None:
        """HF names of the tensors under a block (or other group) node; None: the model."""
        if node is self.state.root or node.key == self.state.root.key:
            return None
        inside = set(self.state.scope_names(node.key))
        return {hf for hf, name in self.names().items() if name in inside}

    def critical_rows(self, node: Any) -> tuple[list[dict[str, Any]], str]:
        """(rows, caption) of the critical weights for the selection and metric."""
        doc = self.doc or {}
        metric = self.metric
        maps = self.study.maps if self.study else {}
        k = (doc.get("settings") or {}).get("topk", "?")
        glob = next((e["weights"] for e in doc.get("topk", [])
                     if e.get("metric") == metric and e.get("mode") == "global"), None)
        if node.tensor is not None:
            entry = self.tensor_entry(node.tensor)
            hf = entry["hf_name"] if entry else (node.tensor.hf_name or node.tensor.name)
            if metric == MAP_METRIC and hf in maps:
                return (list(maps[hf]["top"]),
                        f"Critical weights of this tensor by {metric} (its own top "
                        f"{len(maps[hf]['top'])})")
            rows = [w for w in glob or [] if w["tensor"] == hf]
            return rows, (f"Critical weights of this tensor among the model's top {k} by "
                          f"{metric}: {len(rows)}")
        inside = self.scope_tensors(node)
        if inside is None:
            if glob is None:
                return [], f"No top-k list for {metric} (the study ranks its own metrics only)"
            return list(glob[:TABLE_ROWS]), (f"Critical weights: the model's top {k} by "
                                             f"{metric} (first {min(TABLE_ROWS, len(glob))})")
        if metric == MAP_METRIC and maps:
            rows = sorted((w for hf in inside if hf in maps for w in maps[hf]["top"]),
                          key=lambda w: -(w.get("score") or 0.0))[:TABLE_ROWS]
            return rows, f"Critical weights of {visible(node.label)} by {metric} (its top " \
                         f"{len(rows)})"
        rows = [w for w in glob or [] if w["tensor"] in inside][:TABLE_ROWS]
        return rows, (f"Critical weights of {visible(node.label)} among the model's top {k} "
                      f"by {metric}: {len(rows)}")

    def block_of(self, node: Any) -> int | None:
        return node.block if getattr(node, "group", "") == "block" else None

    def depth_spec(self) -> Any:
        from wstui.render.plots import sensitivity_depth_plot

        return sensitivity_depth_plot(self.doc or {}, self.metric).prepare()

    def scores_text(self, ref: Any) -> Text:
        """A tensor's scores with its rank in the model, and the static metrics."""
        doc = self.doc or {}
        entry = self.tensor_entry(ref)
        t = Text()
        if entry is None:
            t.append(plain(f"{ref.display_name}: not a parameter of the model the study built"
                           " (tied to another tensor, or not used by the forward pass)"))
            return t
        tensors = doc.get("tensors", [])
        t.append_text(plain(entry["hf_name"], style="bold"))
        t.append(f"  {entry['kind']} · " + "×".join(map(str, entry["shape"])) + "\n")
        for m in ("grad_x_weight", "fisher", "wanda", "hutchinson", "magnitude"):
            v = entry.get(m)
            if v is None:
                continue
            vals = sorted((x[m] for x in tensors if x.get(m) is not None), reverse=True)
            rank = vals.index(v) + 1 if v in vals else None
            total = sum(vals)
            t.append(f"{m:>13} ", style="bold" if m == self.metric else "")
            t.append(f"{fmt_fixed(v, '.3g'):>8}")
            if m == "hutchinson" and entry.get("hutchinson_stderr") is not None:
                t.append(f" ± {fmt_fixed(entry['hutchinson_stderr'], '.2g')}")
            if rank is not None:
                t.append(f"  #{rank}/{len(vals)}", style="dim")
            if total:
                t.append(f" {100 * v / total:.1f}%", style="dim")
            t.append("\n")
        t.append("#rank among the model's tensors, share of the model's total\n", style="dim")
        static = ((doc.get("summary") or {}).get("static") or {}).get("per_tensor", {})
        st = static.get(entry["hf_name"])
        if st:
            t.append("static: " + " · ".join(
                f"{k} {fmt_fixed(st.get(k), '.3g')}" for k in ("alpha", "int8_sqnr_db",
                                                               "stable_rank")), style="dim")
        return t

    def heat(self, ref: Any, width: int) -> tuple[Any, dict[str, Any] | None]:
        """(renderable, the map as drawn) of a tensor's heat map at `width` columns."""
        from analyzers.sensitivity import Pooled, repool
        from wstui.render.sensitivity import heat_legend, heatmap_text

        entry = self.tensor_entry(ref)
        maps = self.study.maps if self.study else {}
        m = maps.get(entry["hf_name"]) if entry else None
        if m is None or m.get("values") is None:
            why = ("no heat map: a vector" if len(ref.shape) < 2
                   else "no heat map for this tensor (its gradient was not computed)")
            return Text(why, style="dim"), None
        import numpy as np

        values = np.asarray([[np.nan if v is None else v for v in row] for row in m["values"]],
                            dtype=np.float64)
        full = Pooled(values, list(m["row_edges"]), list(m["col_edges"]), m.get("how", "max"))
        label_w = max(len(str(full.row_edges[-1] - 1)), 3) + 1
        shown = repool(full, (SHOWN_ROWS, max(8, width - label_w - 1)))
        top = (m.get("top") or [None])[0]
        mark = None
        if top is not None and top.get("col") is not None:
            mark = (cell_of(shown.row_edges, int(top["row"])),
                    cell_of(shown.col_edges, int(top["col"])))
        vals = shown.values.tolist()
        caption = Text(f"Heat map: |g⊙w| of the {full.row_edges[-1]}×{full.col_edges[-1]} "
                       f"matrix, {full.how}-pooled to {len(shown.row_edges) - 1}×"
                       f"{len(shown.col_edges) - 1} cells (rows down, columns across)",
                       style="bold")
        parts: list[Any] = [caption, heatmap_text(vals, shown.row_edges, shown.col_edges,
                                                  mark=mark), heat_legend(vals, shown.how)]
        if top is not None:
            parts.append(Text(f"reversed cell: the top weight, row {top['row']}, col "
                              f"{top['col']} (|g⊙w| {fmt_fixed(top.get('score'), '.3g')})",
                              style="dim"))
        data = {"metric": m.get("metric", MAP_METRIC), "how": shown.how,
                "row_edges": shown.row_edges, "col_edges": shown.col_edges, "values": vals,
                "top_cell": list(mark) if mark else None}
        return Group(*parts), data

    # --- showing -----------------------------------------------------------------------------

    def panel_width(self) -> int:
        found = self.screen.query(SensitivityPanel)
        width = found.first().size.width if found else 0
        return (width or max(40, self.app.size.width // 2)) - 2

    def wants(self, node: Any, *, tensor: bool, scope: bool) -> bool:
        return tensor  # the scan's results do not change this tab: only the selection does

    def resize(self, width: int) -> None:
        self._drawn = None

    def _draw_status(self) -> None:
        found = self.screen.query(SensitivityPanel)
        if not found:
            return
        parts = found.first().parts()
        parts["sens-status"].update(self.status())
        bar: ProgressBar = parts["sens-bar"]
        bar.display = self.running
        if self.running:
            bar.update(total=100, progress=round(100 * self.fraction()))

    def show(self, node: Any) -> None:
        self.look_in_cache()
        found = self.screen.query(SensitivityPanel)
        if not found:
            return
        panel = found.first()
        width = self.panel_width()
        drawn = (node.key, id(self.study), self.metric, width, self.error, self.note,
                 self.running, self.stopping, self.problem)
        self._draw_status()
        self.app.refresh_bindings()
        if drawn == self._drawn:
            return
        self._drawn = drawn
        parts = panel.parts()
        doc = self.doc
        scope = node.tensor is None
        for key in ("sens-scores", "plot-sens", "sens-heat", "sens-topk-caption", "sens-topk",
                    "sens-super", "sens-perturb"):
            parts[key].display = doc is not None
        if doc is None:
            return
        parts["sens-scores"].display = not scope
        parts["sens-heat"].display = not scope
        parts["plot-sens"].display = scope
        parts["sens-super"].display = scope
        parts["sens-perturb"].display = scope
        table: CriticalTable = parts["sens-topk"]
        rows, caption = self.critical_rows(node)
        parts["sens-topk-caption"].update(plain(caption + (" · enter: go to the tensor"
                                                           if rows and scope else "")))
        names = self.names()
        here = node.tensor.name if node.tensor is not None else None
        table.rebuild(rows, [names.get(r["tensor"]) for r in rows],
                      name_width=max(16, width - 34), here=here)
        table.display = bool(rows)
        if scope:
            self._show_scope(node, parts, width)
        else:
            parts["sens-scores"].update(self.scores_text(node.tensor))
            parts["sens-heat"].update(self.heat(node.tensor, width)[0])

    def _show_scope(self, node: Any, parts: Mapping[str, Any], width: int) -> None:
        from wstui.render.sensitivity import no_super_line, perturbation_table, super_table

        doc = self.doc or {}
        block = self.block_of(node)
        label = plain(node.label)
        spec = self.depth_spec()
        panel: PlotPanel = parts["plot-sens"]
        panel.show(spec, f"no {self.metric} values to plot")
        inside = self.scope_tensors(node)
        sw_rows = [s for s in doc.get("super_weights", [])
                   if inside is None or s["tensor"] in inside]
        if sw_rows:
            title = ("Super weights (zeroed one at a time)" if inside is None
                     else f"Super weights in {label.plain}")
            sub = {**doc, "super_weights": sw_rows}
            parts["sens-super"].update(super_table(sub, title=title, compact=True))
        elif doc.get("super_weights") and inside is not None:
            parts["sens-super"].update(Text(f"No super weight in {label.plain} (the model has "
                                            f"{len(doc['super_weights'])})", style="dim"))
        else:
            parts["sens-super"].update(Text(no_super_line(doc), style="dim"))
        title = (f"Perturbation (perplexity before: {fmt_fixed(doc.get('perplexity'), '.4g')})"
                 + (" · of the whole model" if block is not None or inside is not None else ""))
        parts["sens-perturb"].update(perturbation_table(doc, title=title, compact=True))

    # --- export ------------------------------------------------------------------------------

    def document(self, node: Any) -> dict[str, Any]:
        doc = self.doc
        if doc is None:
            note = (f"no sensitivity study: {self.problem}" if self.problem
                    else "the study has not been run (r runs it)")
            base = {"tensor": node.tensor.name} if node.tensor is not None else {
                "selection": self.selection(node.key, self.state.scope_names(node.key))}
            return view_document(self.tab, metrics={"study": None, "note": note}, **base)
        rows, caption = self.critical_rows(node)
        critical = {"caption": caption, "metric": self.metric, "rows": rows}
        if node.tensor is not None:
            ref = node.tensor
            entry = self.tensor_entry(ref) or {}
            static = ((doc.get("summary") or {}).get("static") or {}).get("per_tensor", {})
            _, heat = self.heat(ref, self.panel_width())
            return view_document(
                self.tab, tensor=ref.name, metrics={
                    "scores": {m: entry.get(m) for m in ("grad_x_weight", "fisher", "wanda",
                                                         "hutchinson", "hutchinson_stderr",
                                                         "magnitude")},
                    "static": static.get(entry.get("hf_name", "")),
                    "perplexity": doc.get("perplexity")},
                heatmap=heat, critical_weights=critical, shape=list(ref.shape),
                kind=ref.kind, block=ref.block)
        inside = self.scope_tensors(node)
        return view_document(
            self.tab, selection=self.selection(node.key, self.state.scope_names(node.key)),
            metrics={"metric": self.metric, "perplexity": doc.get("perplexity"),
                     "settings": doc.get("settings"), "text": doc.get("text"),
                     "timings": doc.get("timings"), "cached": bool(self.study and
                                                                   self.study.cached)},
            plots=[self.depth_spec()], critical_weights=critical,
            super_weights=[s for s in doc.get("super_weights", [])
                           if inside is None or s["tensor"] in inside],
            perturbation=doc.get("perturbation", []))
