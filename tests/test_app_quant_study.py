"""The model-level Quantization tab: the study's table, α-against-bits plot, plan heat map, the
`r` key with progress, export, cancel on quit; the per-tensor tab keeps its curves.

Most tests use a stand-in study (a real `wstui.quant/1` document built by `build_document` from
fixed per-layer sweeps of the stand-in checkpoint); one runs the real `run_study` on a tiny
safetensors file.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from app_support import FakeEngine, make_app, wait_for
from rich.console import Console

from analyzers.core import TensorResult
from wstui.app.widgets.plots import PlotPanel
from wstui.app.widgets.quant_study import SKIPPED, QuantStudyView, heat_grid
from wstui.jsonio import loads_strict

SIZE = (100, 30)
BITS = (8, 4, 2)
GRANS = ("tensor", "channel")
SKIP = "model.layers.1.mlp.up_proj.weight"  # the study could not sweep it (shown as ✗)


def sweep_metrics(i: int, kind: str) -> dict[str, Any]:
    """A fixed sweep: alpha drifts as bits fall, more per tensor than per channel; mlp_down
    loses SQNR per tensor (so its plan differs)."""
    alpha = 3.0 + 0.1 * i
    results = []
    for gran in GRANS:
        for b in BITS:
            drift = (8 - b) * (0.02 if gran == "tensor" else 0.002) * alpha
            sqnr = 6.02 * b - (20 if gran == "tensor" and kind == "mlp_down" else 2)
            results.append({"bits": b, "granularity": gran, "scheme": "sym", "sqnr_db": sqnr,
                            "cosine": 0.99, "alpha": alpha + 1.5 * drift,
                            "alpha_fixed_xmin": alpha + drift,
                            "no_fit_reason": None})
    return {"alpha": alpha, "xmin": 0.1, "no_fit_reason": None, "numel": 64 * 64,
            "results": results}


def stand_in_doc(ckpt: Any, tensors: list[Any]) -> dict[str, Any]:
    from wstui.documents.quant import build_document

    entries = []
    for i, ref in enumerate(tensors):
        r = TensorResult(name=ref.name, kind=ref.kind, shape=ref.shape)
        r.metrics["quant_sweep"] = sweep_metrics(i, ref.kind)
        entries.append(SimpleNamespace(ref=ref, result=r))
    doc = build_document(ckpt, entries, {"bits": list(BITS), "granularity": list(GRANS),
                                         "scheme": ["sym"]})
    skip = next(r for r in tensors if r.name == SKIP)
    doc["layers"] = [x for x in doc["layers"] if x["name"] != skip.display_name]
    doc["skipped"] = [{"name": skip.display_name, "reason": "nonfinite: 3 NaN"}]
    doc["plan"] = [{**p, "layers": [x for x in p["layers"] if x["name"] != skip.display_name]}
                   for p in doc["plan"]]
    return {**doc, "device": "cpu", "elapsed_s": 0.5, "complete": True}


class StudyEngine:
    """What `engine_hook` receives: records `cancel`, which releases a held study."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


def stand_in_study(hold: bool = False) -> tuple[Any, list[StudyEngine]]:
    engines: list[StudyEngine] = []

    def study(ckpt: Any, *, tensors: list[Any], on_progress: Any, engine_hook: Any,
              **kw: Any) -> dict[str, Any]:
        eng = StudyEngine()
        engines.append(eng)
        engine_hook(eng)
        for k in range(len(tensors)):
            on_progress(SimpleNamespace(done=k + 1, total=len(tensors),
                                        current=tensors[k].name, eta_s=1.0))
        if hold:
            eng.cancelled.wait(10)
        return stand_in_doc(ckpt, tensors)

    return study, engines


def plain(renderable: Any, width: int = 200) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


async def open_model_quant_tab(pilot: Any, app: Any, eng: FakeEngine) -> QuantStudyView:
    await wait_for(pilot, lambda: eng.done)
    await pilot.press("4")
    await wait_for(pilot, lambda: bool(app.query(QuantStudyView))
                   and app.query_one(QuantStudyView).display)
    return app.query_one(QuantStudyView)


async def test_model_tab_says_what_the_study_will_do(tmp_path: Path) -> None:
    from wstui.app.palette import WstuiCommands

    app, eng = make_app(tmp=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_model_quant_tab(pilot, app, eng)
        status = plain(view.query_one("#qs-status").content)
        assert "16 matrices" in status and "Press r" in status  # 2 blocks x 7 + embed + head
        assert not app.query_one("#plot-quant", PlotPanel).display
        assert any(b.binding.key == "r" for b in app.screen.active_bindings.values())
        hits = [h.text async for h in WstuiCommands(app.screen).search("quantization study")]
        assert "Run quantization study" in [str(h) for h in hits]
        await pilot.press("e")  # export before any run: says so, no plot
        await pilot.pause(0.1)
        out = loads_strict(next(tmp_path.glob("wstui-view-quantization-*.json")).read_text())
        assert out["metrics"]["study"] is None and out["plots"] == []
        await pilot.press("1")  # elsewhere the key is neither shown nor active
        await pilot.pause()
        assert app.check_action("quant_study", ()) is False


async def test_r_runs_the_study_and_the_view_renders(tmp_path: Path) -> None:
    app, eng = make_app(tmp=tmp_path)
    app.quant.study_fn, engines = stand_in_study()
    async with app.run_test(size=SIZE) as pilot:
        view = await open_model_quant_tab(pilot, app, eng)
        await pilot.press("r")
        await wait_for(pilot, lambda: app.quant.doc is not None)
        await pilot.pause(0.1)
        doc = app.quant.doc
        status = plain(view.query_one("#qs-status").content)
        assert "Quantization study done: 15 matrices" in status and "1 skipped" in status
        # the table: the unquantized row and one row per bit width of the first granularity
        table = plain(view.query_one("#qs-table").content)
        assert "tensor sym" in table and "none" in table
        firsts = [line.split()[0] for line in table.splitlines() if line.strip()]
        assert [f for f in firsts if f.isdigit()] == [str(b) for b in BITS]
        # the plot: one mean line per granularity, spread markers, the unquantized line
        spec = view.query_one("#plot-quant-alpha", PlotPanel).spec
        lines = [s for s in spec.series if s.style == "line"]
        assert [s.label for s in lines] == ["tensor mean", "channel mean"]
        assert [s.x for s in lines] == [sorted(BITS)] * 2
        assert sum(s.style == "scatter" for s in spec.series) == 2
        assert any(s.style == "hline" for s in spec.series)
        # the heat map: one cell per (block, kind), holding the planned bits
        plan = doc["plan"][0]
        rows, kinds, cells = heat_grid(doc, plan)
        assert rows == [0, 1, None]
        assert kinds == ["embedding", "attn_q", "attn_k", "attn_v", "attn_o", "mlp_gate",
                         "mlp_up", "mlp_down", "lm_head"]
        assert len([c for c in cells if c[0] is not None]) == 2 * 7
        assert cells[(1, "mlp_up")] == SKIPPED
        planned = {p["name"]: p["bits"] for p in plan["layers"]}
        assert cells[(1, "mlp_down")] == planned["model.layers.1.mlp.down_proj.weight"] == 16
        assert cells[(0, "attn_q")] == planned["model.layers.0.self_attn.q_proj.weight"] == 8
        heat = plain(view.query_one("#qs-heatmap").content)
        assert "down" in heat and " 16 " in heat and "bits per weight" in heat
        assert "✗" in heat and f"not swept: {SKIP}: nonfinite" in heat
        # g: the next granularity (the plan changes), a: the other alpha
        await pilot.press("g")
        await pilot.pause(0.1)
        assert "channel sym" in plain(view.query_one("#qs-table").content)
        assert "(channel sym)" in plain(view.query_one("#qs-heatmap").content)
        await pilot.press("a")
        await pilot.pause(0.1)
        assert "xmin" in view.query_one("#plot-quant-alpha", PlotPanel).spec.title
        assert engines and not engines[0].cancelled.is_set()
        # e: the view with the study's data
        await pilot.press("e")
        await pilot.pause(0.1)
        files = list(tmp_path.glob("wstui-view-quantization-*.json"))
        assert len(files) == 1
        out = loads_strict(files[0].read_text())
        assert out["schema"] == "wstui.view/1" and out["view"] == "quantization"
        assert out["selection"]["key"] == app.state.root.key
        assert out["metrics"]["study"]["schema"] == "wstui.quant/1"
        assert len(out["metrics"]["study"]["layers"]) == 15
        heat_out = out["metrics"]["heatmap"]
        assert heat_out["granularity"] == "channel" and heat_out["blocks"] == [0, 1, None]
        assert heat_out["skipped"] == [SKIP]
        assert heat_out["bits"][1][heat_out["kinds"].index("mlp_up")] is None
        assert out["plots"][0]["key"] == "quant_alpha"


async def test_block_selection_shows_the_study_and_marks_the_block() -> None:
    app, eng = make_app()
    app.quant.study_fn, _ = stand_in_study()
    async with app.run_test(size=SIZE) as pilot:
        await open_model_quant_tab(pilot, app, eng)
        app.action_quant_study()  # what the palette entry calls
        await wait_for(pilot, lambda: app.quant.doc is not None)
        app.select_key("block:1")
        await pilot.pause(0.1)
        view = app.query_one(QuantStudyView)
        assert view.display
        assert "▸ 1" in plain(view.query_one("#qs-heatmap").content)


async def test_quit_cancels_a_running_study() -> None:
    app, eng = make_app()
    app.quant.study_fn, engines = stand_in_study(hold=True)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_model_quant_tab(pilot, app, eng)
        await pilot.press("r")
        await wait_for(pilot, lambda: "16/16" in plain(view.query_one("#qs-status").content))
        assert app.quant.running
        await pilot.press("q")
    assert engines[0].cancelled.is_set()
    assert app.quant.doc is None


async def test_tensor_tab_keeps_its_curves_and_notes_the_study() -> None:
    app, eng = make_app()
    app.quant.study_fn, _ = stand_in_study()
    name = "model.layers.0.mlp.down_proj.weight"
    async with app.run_test(size=SIZE) as pilot:
        await open_model_quant_tab(pilot, app, eng)
        await pilot.press("r")
        await wait_for(pilot, lambda: app.quant.doc is not None)
        app.jump_to(name)
        await pilot.press("4")
        await pilot.pause(0.1)
        assert not app.query_one(QuantStudyView).display
        panel = app.query_one("#plot-quant", PlotPanel)
        assert panel.display and panel.spec is not None
        assert {s.label for s in panel.spec.series} >= {"tensor sym", "channel sym"}
        info = plain(app.query_one("#quant-info").content)
        assert "study tensor sym" in info and "plan 16 bits" in info


async def test_real_study_on_a_tiny_checkpoint(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from wstui.app.app import WstuiApp
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import build_tree

    g = torch.Generator().manual_seed(0)
    save_file({f"model.layers.0.self_attn.{p}_proj.weight": torch.randn(48, 40, generator=g)
               for p in ("q", "v")} | {"model.norm.weight": torch.ones(40)},
              str(tmp_path / "model.safetensors"))
    ckpt = open_checkpoint(tmp_path / "model.safetensors")
    eng = FakeEngine(ckpt)
    app = WstuiApp(ckpt, build_tree(ckpt.tensors), lambda: eng, export_dir=tmp_path,
                   show_timings=False, diff_kw={"use_cache": False, "device": "cpu"})
    async with app.run_test(size=SIZE) as pilot:
        view = await open_model_quant_tab(pilot, app, eng)
        assert "2 matrices" in plain(view.query_one("#qs-status").content)
        await pilot.press("r")
        await wait_for(pilot, lambda: app.quant.doc is not None, timeout=60)
        await pilot.pause(0.1)
        doc = app.quant.doc
        assert doc["schema"] == "wstui.quant/1" and len(doc["layers"]) == 2
        rows, kinds, cells = heat_grid(doc, doc["plan"][0])
        assert rows == [0] and kinds == ["attn_q", "attn_v"] and len(cells) == 2
        spec = view.query_one("#plot-quant-alpha", PlotPanel).spec
        assert len([s for s in spec.series if s.style == "line"]) == 3  # three granularities
