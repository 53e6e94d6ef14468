"""The Sensitivity tab: the study on request (`r`) with progress and cancel, its four model
parts (depth plot, critical weights, super weights, perturbation), enter on a critical weight,
a tensor's scores and heat map, the cache on reopening, and a checkpoint that cannot run.

The study itself is real (a tiny random llama with a character tokenizer, small settings:
seconds); the cancel test holds a stand-in study until it is cancelled.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from app_support import FakeEngine, wait_for
from rich.console import Console

from tests.sens_models import save_llama_dir
from wstui.app.tabs import Tab
from wstui.app.widgets.plots import PlotPanel
from wstui.app.widgets.sensitivity import CriticalTable, SensitivityPanel
from wstui.jsonio import loads_strict

SIZE = (100, 30)
FAST = {"tokens": 64, "topk": 5, "seeds": [0, 1]}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama_dir(tmp_path_factory.mktemp("sens-app") / "tiny", seed=0)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("WSTUI_CACHE_DIR", str(path))
    return path


def text(renderable: Any, width: int = 200) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def open_app(path: Path, tmp: Path, **view_kw: Any) -> tuple[Any, Any, FakeEngine]:
    from wstui.app.app import WstuiApp
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import build_tree

    ckpt = open_checkpoint(path)
    eng = FakeEngine(ckpt)
    app = WstuiApp(ckpt, build_tree(ckpt.tensors), lambda: eng, export_dir=tmp,
                   show_timings=False, diff_kw={"device": "cpu", "use_cache": True})
    view = app.view(Tab.SENSITIVITY)
    view.settings.update(FAST)
    for k, v in view_kw.items():
        setattr(view, k, v)
    return app, view, eng


async def open_tab(pilot: Any, app: Any, eng: FakeEngine) -> SensitivityPanel:
    await wait_for(pilot, lambda: eng.done)
    await pilot.press("9")
    await wait_for(pilot, lambda: bool(app.query(SensitivityPanel)))
    await pilot.pause(0.1)
    return app.query_one(SensitivityPanel)


def status(panel: SensitivityPanel) -> str:
    return text(panel.query_one("#sens-status").content)


class Gate:
    """Wraps the real study: holds it at its gradients step until released."""

    def __init__(self) -> None:
        self.at_step = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def study(self, *args: Any, on_progress: Any, **kw: Any) -> Any:
        from wstui.app.views.sensitivity import run_study

        self.calls += 1

        def progress(p: Any) -> None:
            on_progress(p)
            if (p.current or "").startswith("gradients") and not self.release.is_set():
                self.at_step.set()
                self.release.wait(30)

        return run_study(*args, on_progress=progress, **kw)


async def test_r_runs_the_study_with_progress_and_reopening_reads_the_cache(
        llama_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    gate = Gate()
    app, view, eng = open_app(llama_dir, tmp_path, study_fn=gate.study)
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_tab(pilot, app, eng)
        before = status(panel)
        assert "not run yet" in before and "forward+backward" in before
        assert "Press r" in before and "64 tokens" in before
        assert any(b.binding.key == "r" and b.binding.action == "sens_study"
                   for b in app.screen.active_bindings.values())
        await pilot.press("r")
        await wait_for(pilot, gate.at_step.is_set, timeout=60)
        await wait_for(pilot, lambda: "gradients" in status(panel), timeout=10)
        running = status(panel)
        assert "running the sensitivity study" in running and "esc cancels" in running
        bar = panel.query_one("#sens-bar")
        assert bar.display and 0 < bar.progress < 100
        gate.release.set()
        await wait_for(pilot, lambda: view.doc is not None, timeout=120)
        await pilot.pause(0.2)
        doc = view.doc
        assert doc["schema"] == "wstui.sensitivity/1" and doc["text"]["tokens"] == 64
        assert not panel.query_one("#sens-bar").display
        assert "Sensitivity study: perplexity" in status(panel)
        # 1. depth: one line per module kind against block index
        spec = panel.query_one("#plot-sens", PlotPanel).spec
        assert spec.key == "sensitivity_depth"
        labels = {s.label for s in spec.series}
        assert {"attn_q", "mlp_down", "norm input_layernorm"} <= labels
        assert all(s.x == [0, 1] for s in spec.series)
        # 2. the critical weights: the model's top-k
        table = panel.query_one(CriticalTable)
        assert table.display and table.row_count == FAST["topk"]
        # 3. super weights (a random tiny model has none: the tab says so)
        sw = text(panel.query_one("#sens-super").content)
        assert ("Super weights" in sw) if doc["super_weights"] else ("No super weight" in sw)
        # 4. perturbation
        pt = text(panel.query_one("#sens-perturb").content)
        assert "random_k" in pt and "bottom_k" in pt and "top_k" in pt
        # m: the next metric, for the plot and the table
        await pilot.press("m")
        await pilot.pause(0.1)
        assert view.metric == "fisher"
        assert panel.query_one("#plot-sens", PlotPanel).spec.series[0].label
        assert "fisher" in text(panel.query_one("#sens-topk-caption").content)
        await pilot.press("1", "9")  # m elsewhere is the Depth tab's: here it stays ours
        await pilot.pause(0.1)
        assert app.active_tab == Tab.SENSITIVITY
        # e: the view with its data
        await pilot.press("e")
        await pilot.pause(0.2)
        out = loads_strict(next(tmp_path.glob("wstui-view-sensitivity-*.json")).read_text())
        assert out["schema"] == "wstui.view/1" and out["view"] == "sensitivity"
        assert out["plots"][0]["key"] == "sensitivity_depth"
        assert len(out["critical_weights"]["rows"]) == FAST["topk"]
        assert out["perturbation"] == doc["perturbation"]
    assert gate.calls == 1
    assert list((cache_dir / "sensitivity").glob("*.json"))

    # reopened on the same files: shown at once from the cache, the study not called again
    again = Gate()
    app2, view2, eng2 = open_app(llama_dir, tmp_path, study_fn=again.study)
    async with app2.run_test(size=SIZE) as pilot:
        panel = await open_tab(pilot, app2, eng2)
        await wait_for(pilot, lambda: view2.doc is not None, timeout=10)
        await pilot.pause(0.1)
        assert "from the cache" in status(panel)
        assert view2.doc["perplexity"] == doc["perplexity"]
        assert panel.query_one(CriticalTable).row_count == FAST["topk"]
    assert again.calls == 0


async def test_enter_jumps_and_a_tensor_shows_scores_and_heat_map(
        llama_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    app, view, eng = open_app(llama_dir, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_tab(pilot, app, eng)
        await pilot.press("r")
        await wait_for(pilot, lambda: view.doc is not None, timeout=120)
        await pilot.pause(0.2)
        doc = view.doc
        # enter on the first critical weight: its tensor in the tree
        table = panel.query_one(CriticalTable)
        table.focus()
        await pilot.pause()
        first = doc["topk"][0]["weights"][0]
        await pilot.press("enter")
        await pilot.pause(0.2)
        target = next(t["name"] for t in doc["tensors"] if t["hf_name"] == first["tensor"])
        assert app.selected_key == app.state.key_of(target)
        assert app.active_tab == Tab.OVERVIEW

        # a matrix: its scores, its heat map, its own critical weights
        name = "model.layers.1.mlp.down_proj.weight"
        app.jump_to(name)
        await pilot.press("9")
        await pilot.pause(0.2)
        scores = text(panel.query_one("#sens-scores").content)
        for metric in ("grad_x_weight", "fisher", "wanda"):
            assert metric in scores
        assert "#" in scores and "static: alpha" in scores
        assert not panel.query_one("#plot-sens").display
        heat = text(panel.query_one("#sens-heat").content)
        assert "Heat map" in heat and "32×64 matrix" in heat and "@" in heat
        m = view.study.maps[name]
        top = m["top"][0]
        ref = app.state.refs[name]
        _, drawn = view.heat(ref, view.panel_width())
        import numpy as np

        values = np.asarray(drawn["values"])
        hot = np.unravel_index(np.argmax(values), values.shape)
        re_, ce = drawn["row_edges"], drawn["col_edges"]
        assert re_[hot[0]] <= top["row"] < re_[hot[0] + 1]
        assert ce[hot[1]] <= top["col"] < ce[hot[1] + 1]
        assert tuple(drawn["top_cell"]) == tuple(int(i) for i in hot)
        crit = panel.query_one(CriticalTable)
        assert crit.row_count == len(m["top"]) and set(crit.targets) == {name}
        await pilot.press("e")
        await pilot.pause(0.2)
        out = loads_strict(next(tmp_path.glob("wstui-view-sensitivity-*.json")).read_text())
        assert out["tensor"] == name and out["heatmap"]["values"]
        assert out["metrics"]["scores"]["grad_x_weight"] > 0
        # a block: its own tables
        app.select_key("block:0")
        await pilot.pause(0.2)
        assert panel.query_one("#plot-sens").display
        rows = panel.query_one(CriticalTable).targets
        assert rows and all(".layers.0." in r for r in rows)


class HeldEngine:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


async def test_esc_cancels_and_the_app_stays_usable(llama_dir: Path, cache_dir: Path,
                                                    tmp_path: Path) -> None:
    from types import SimpleNamespace

    engines: list[HeldEngine] = []

    def held(ckpt: Any, *, on_progress: Any, engine_hook: Any, **kw: Any) -> Any:
        eng = HeldEngine()
        engines.append(eng)
        engine_hook(eng)
        on_progress(SimpleNamespace(done=0, total=1, current="building the model",
                                    eta_s=None))
        eng.cancelled.wait(10)
        raise RuntimeError("cancelled")

    app, view, eng = open_app(llama_dir, tmp_path, study_fn=held)
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_tab(pilot, app, eng)
        await pilot.press("r")
        await wait_for(pilot, lambda: "building the model" in status(panel))
        assert view.running
        await pilot.press("escape")
        await wait_for(pilot, lambda: engines[0].cancelled.is_set())
        await pilot.pause(0.2)
        assert not view.running and view.doc is None and not view.error
        assert "cancelled" in status(panel) and "Press r" in status(panel)
        # the app goes on: tabs, the tree, and a new run (r again cancels it too)
        await pilot.press("1", "j")
        await pilot.pause(0.1)
        assert app.active_tab == Tab.OVERVIEW and app.selected_key != app.state.root.key
        await pilot.press("9", "r")
        await wait_for(pilot, lambda: len(engines) == 2 and view.running)
        await pilot.press("r")
        await wait_for(pilot, lambda: engines[1].cancelled.is_set())


async def test_a_checkpoint_that_cannot_run_says_why_in_one_line(tmp_path: Path,
                                                                 cache_dir: Path) -> None:
    folder = save_llama_dir(tmp_path / "no-tok", tokenizer=False)
    calls: list[Any] = []
    app, view, eng = open_app(folder, tmp_path, study_fn=lambda *a, **k: calls.append(a))
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_tab(pilot, app, eng)
        said = status(panel)
        assert "No sensitivity study for this checkpoint" in said
        assert "no tokenizer files" in said and "Traceback" not in said
        await pilot.press("r")
        await pilot.pause(0.2)
        assert calls == [] and not view.running


async def test_an_engine_error_is_one_line_in_the_tab(llama_dir: Path, cache_dir: Path,
                                                      tmp_path: Path) -> None:
    from wstui.checkpoint.base import CheckpointError

    def broken(ckpt: Any, **kw: Any) -> Any:
        raise CheckpointError(ckpt.path, "the checkpoint lacks weights the causal LM needs: "
                              "lm_head.weight")

    app, view, eng = open_app(llama_dir, tmp_path, study_fn=broken)
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_tab(pilot, app, eng)
        await pilot.press("r")
        await wait_for(pilot, lambda: bool(view.error))
        await pilot.pause(0.1)
        said = status(panel)
        assert "the study failed: " in said and "lacks weights" in said
        assert "CheckpointError" not in said and "Traceback" not in said


def test_causal_lm_problem_reads_the_files_only(tmp_path: Path) -> None:
    import json

    from wstui.checkpoint import open_checkpoint
    from wstui.lm.build import causal_lm_problem

    good = save_llama_dir(tmp_path / "good")
    with open_checkpoint(good) as ckpt:
        assert causal_lm_problem(ckpt) is None
    enc = save_llama_dir(tmp_path / "enc")
    cfg = json.loads((enc / "config.json").read_text())
    cfg.update(architectures=["BertForMaskedLM"], model_type="bert")
    (enc / "config.json").write_text(json.dumps(cfg))
    with open_checkpoint(enc) as ckpt:
        problem = str(causal_lm_problem(ckpt))
    assert "BertForMaskedLM (bert) is not a causal LM" in problem and "\n" not in problem
