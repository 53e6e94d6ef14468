"""Series mode (the app part of `wstui track`): a 4-step run from the demo's base to its
fine-tune (`wstui.demo_run.interpolated_run`), opened through the launcher of `wstui CKPT...`
(`wstui.commands.app.series_app`) with the real scan and track engines.

The plot is checked on the data the view builds (its `PlotSpec`), not on pixels."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from app_support import make_app, wait_for
from rich.console import Console
from textual.widgets import Static, TabbedContent

from wstui.app.tabs import Tab
from wstui.cli import main
from wstui.demo_run import interpolated_run
from wstui.jsonio import loads_strict
from wstui.render.numbers import fmt, kind_key

STEPS = [0, 100, 300, 1000]
SIZE = (100, 30)
#: a tensor the interpolation changes at every step (its stats differ from step to step)
MOVED = "model.layers.0.mlp.gate_proj.weight"


@pytest.fixture(scope="module")
def demo_run(demo_paths, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("series-run")
    interpolated_run(demo_paths.base, demo_paths.finetuned, out, steps=STEPS)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache for the module: the track and the scans computed once are served after."""
    return tmp_path_factory.mktemp("series-cache")


@pytest.fixture
def series(demo_run: Path, cache: Path, tmp_path: Path, monkeypatch):
    from wstui.commands.app import series_app

    monkeypatch.setenv("WSTUI_CACHE_DIR", str(cache))
    with contextlib.ExitStack() as stack:
        app = series_app([demo_run], stack, workers=2, export_dir=tmp_path, keymap={})
        app.show_timings = False
        yield app


def overview_text(app) -> str:
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(app.main_screen.query_one("#overview-body", Static).content)
    return console.export_text()


def header(app) -> str:
    return app.main_screen.query_one("#header", Static).content.plain


async def series_ready(pilot, app) -> None:
    await wait_for(pilot, lambda: app.view(Tab.SERIES).doc is not None, timeout=120)
    await pilot.pause(0.1)


async def test_opens_on_the_last_step_with_one_line_per_kind_and_the_bands(series) -> None:
    app = series
    async with app.run_test(size=SIZE) as pilot:
        assert app.step_index == 3 and app.checkpoint.path.name == "checkpoint-1000"
        assert app.main_screen.query_one(TabbedContent).active == Tab.SERIES
        assert "step 1000 (4 of 4)" in header(app)
        await series_ready(pilot, app)
        view = app.view(Tab.SERIES)
        doc = view.doc
        assert [s["step"] for s in doc["steps"]] == STEPS
        spec = view.spec(app.state.root)
        lines = [s for s in spec.series if s.style == "line"]
        with_alpha = [k for k, row in doc["by_kind"].items()  # norms have no spectrum
                      if any(v is not None for v in row["alpha"])]
        assert [s.label for s in lines] == sorted(with_alpha, key=kind_key)
        assert "norm" in doc["by_kind"] and "norm" not in with_alpha
        for s in lines:  # x = the step numbers (irregular spacing kept), y = by_kind medians
            assert s.x == STEPS
            assert s.y == pytest.approx(doc["by_kind"][s.label]["alpha"])
        bands = [s for s in spec.series if s.style == "hline"]
        assert [b.y for b in bands] == [[2.0], [6.0]] and all("α" in b.label for b in bands)
        assert spec.y_range[0] <= 2 and spec.y_range[1] >= 6  # the bands stay in view
        cursor = [s for s in spec.series if s.style == "vline"]
        assert [c.x for c in cursor] == [[1000.0]]
        assert spec.x_ticks[0] == [float(s) for s in STEPS]

        # a block: its own tensors only (one per kind: the medians are their values)
        tree_block = app.state.node_by_key["block:2"]
        app.select_key(tree_block.key)
        await pilot.pause()
        names = set(app.state.scope_names("block:2"))
        spec = view.spec(tree_block)
        lines = [s for s in spec.series if s.style == "line"]
        kinds = {t["kind"] for t in doc["tensors"] if t["name"] in names
                 and any(v is not None for v in t["series"]["alpha"])}
        assert {s.label for s in lines} == kinds and "embedding" not in kinds
        q = next(t for t in doc["tensors"] if t["name"] == "model.layers.2.self_attn.q_proj.weight")
        assert next(s for s in lines if s.label == "attn_q").y == pytest.approx(
            q["series"]["alpha"])

        # `m` cycles the metric (no bands but for alpha)
        await pilot.press("m")
        assert view.metric == "stable_rank"
        spec = view.spec(tree_block)
        assert spec.y_label == "stable rank" and not any(
            s.style == "hline" for s in spec.series)


async def test_a_tensor_shows_its_own_series(series) -> None:
    app = series
    async with app.run_test(size=SIZE) as pilot:
        await series_ready(pilot, app)
        view = app.view(Tab.SERIES)
        app.jump_to(MOVED)
        app.action_show_tab(Tab.SERIES)
        await pilot.pause(0.2)
        node = app.selected_node
        entry = next(t for t in view.doc["tensors"] if t["name"] == MOVED)
        for metric in ("alpha", "stable_rank", "spectral_norm", "rel_change_first"):
            own = view.spec(node, metric).series[0]
            assert own.x == STEPS and own.y == pytest.approx(entry["series"][metric])
        rel = entry["series"]["rel_change_first"]
        assert rel[0] == 0 and rel[1] < rel[2] < rel[3]
        table = app.main_screen.query_one("#series-table", Static)
        assert table.display  # every metric by step


async def test_the_step_cursor_moves_every_view_to_that_checkpoint(series) -> None:
    app = series
    async with app.run_test(size=SIZE) as pilot:
        app.jump_to(MOVED)
        key = app.selected_key

        def l2() -> float | None:
            r = app.state.results.get(MOVED)
            return None if r is None else r.metrics["stats"]["l2_norm"]

        await wait_for(pilot, lambda: l2() is not None, timeout=60)
        at_1000 = l2()
        await pilot.press("left_square_bracket")
        assert app.step_index == 2 and app.checkpoint.path.name == "checkpoint-300"
        assert "step 300 (3 of 4)" in header(app)
        assert app.selected_key == key  # the tree keeps its selection by name
        await wait_for(pilot, lambda: l2() is not None, timeout=60)
        at_300 = l2()
        assert at_300 != pytest.approx(at_1000)
        await pilot.pause(0.2)
        shown = overview_text(app)  # the Overview shows step 300's numbers, not 1000's
        assert fmt(at_300) in shown and fmt(at_1000) not in shown
        await wait_for(pilot, lambda: app.scan_complete, timeout=60)
        assert app.state.state(app.state.root.key) != "pending"  # badges from step 300
        await pilot.press("left_square_bracket", "left_square_bracket", "left_square_bracket")
        assert app.step_index == 0  # stops at the first step
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
        assert app.step_index == 3
        await wait_for(pilot, lambda: l2() is not None, timeout=60)
        assert l2() == pytest.approx(at_1000)
        await series_ready(pilot, app)
        await pilot.press("left_square_bracket")
        cursor = [s for s in app.view(Tab.SERIES).spec(app.selected_node).series
                  if s.style == "vline"]
        assert cursor[0].x == [300.0]


async def test_export_writes_the_series_view(series, tmp_path: Path) -> None:
    app = series
    async with app.run_test(size=SIZE) as pilot:
        await series_ready(pilot, app)
        await pilot.press("e")
        await pilot.pause(0.2)
        files = sorted(tmp_path.glob("wstui-view-series-*.json"))
        assert len(files) == 1
        doc = loads_strict(files[0].read_text())
        assert doc["schema"] == "wstui.view/1" and doc["view"] == "series"
        assert doc["step"] == 1000 and doc["checkpoint"].endswith("checkpoint-1000")
        assert doc["metrics"]["metric"] == "alpha" and doc["metrics"]["steps"] == STEPS
        lines = [s for s in doc["plots"][0]["series"] if s["style"] == "line"]
        assert lines and all(s["x"] == STEPS for s in lines)
        assert [s["y"] for s in doc["plots"][0]["series"] if s["style"] == "hline"] == [
            [2.0], [6.0]]
        app.jump_to(MOVED)
        app.action_show_tab(Tab.SERIES)
        await pilot.pause(0.1)
        tensor = app.view_document()
        assert tensor["tensor"] == MOVED and len(tensor["plots"]) == 5
        assert tensor["series"]["alpha"] == tensor["plots"][0]["series"][0]["y"]


def test_bad_run_is_one_line_exit_2_before_the_app(demo_run: Path, demo_paths, tmp_path: Path,
                                                   capsys) -> None:
    cases = [
        ([str(demo_run / "checkpoint-0"), str(tmp_path / "missing")], "missing"),
        # the fine-tune renames a tensor: not the same architecture
        ([str(demo_paths.base), str(demo_paths.finetuned), "--order", "given"], "does not match"),
        ([str(demo_run / "checkpoint-0"), str(demo_run / "checkpoint-100"), "--diff",
          str(demo_paths.base)], "--diff"),
        (["track", str(demo_run / "checkpoint-0"), str(tmp_path / "missing"), "--app"],
         "missing"),
        ([str(demo_run / "checkpoint-0"), "--series"], "at least two"),
    ]
    for args, needle in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("wstui: ") and needle in err[0], (args, err)


async def test_without_a_run_the_series_tab_and_step_keys_stay_out_of_the_way() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        tabs = app.main_screen.query_one(TabbedContent)
        assert tabs.get_tab(Tab.SERIES).display is False
        await pilot.press("0")  # the Series tab's key
        assert tabs.active == Tab.OVERVIEW
        assert app.check_action("step", (1,)) is False  # not in the footer, does nothing
        await pilot.press("right_square_bracket")
        assert app.step_index == 0 and "step" not in header(app)
