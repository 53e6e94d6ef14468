"""Pilot tests of the app on a stand-in checkpoint and engine (tests/app_support.py)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from app_support import FakeEngine, fake_checkpoint, fixed_result, make_app, wait_for
from rich.console import Console
from textual.widgets import TabbedContent

from analyzers.core import TensorResult
from wstui.app.screens.help import HelpScreen
from wstui.app.widgets.plots import PlotPanel
from wstui.app.widgets.table import FindingsTable, TensorTable
from wstui.app.widgets.tree import LayerTree
from wstui.jsonio import loads_strict

SIZE = (100, 30)


def plain(widget) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def cursor_key(app) -> str:
    return app.query_one(LayerTree).cursor_node.data.key


async def test_tree_paints_and_badges_fill_in() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(LayerTree)
        keys = [c.data.key for c in tree.root.children]
        assert keys[0] == "embeddings" and "block:0" in keys and "block:1" in keys
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.queue) + 21)
        await pilot.pause(0.2)
        assert app.state.state("block:0") == "critical"  # the k_proj finding
        assert app.state.state("block:1") == "warn"
        assert app.state.state(app.state.root.key) == "critical"
        label = tree.nodes_by_key["block:0"].label.plain
        assert label.startswith("✖")


async def test_tree_movement_expand_collapse() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(LayerTree)
        assert cursor_key(app) == app.state.root.key
        await pilot.press("j", "j", "j")  # model > embeddings > embed_tokens > block 0
        assert cursor_key(app) == "block:0"
        block = tree.cursor_node
        assert not block.is_expanded
        await pilot.press("l")
        assert block.is_expanded
        await pilot.press("l")  # into the first child
        assert tree.cursor_node.parent is block
        assert tree.cursor_node.is_expanded  # attention opens with its block
        await pilot.press("h")  # collapses attention
        assert not tree.cursor_node.is_expanded
        await pilot.press("h")  # to the parent
        assert tree.cursor_node is block
        await pilot.press("h")  # collapse
        assert not block.is_expanded
        await pilot.press("k")
        assert cursor_key(app) != "block:0"
        assert app.selected_key == cursor_key(app)


async def test_tab_switching_and_plots() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.jump_to("model.layers.0.self_attn.q_proj.weight")
        await pilot.pause()
        tabs = app.query_one(TabbedContent)
        for key, tab in (("2", "spectrum"), ("3", "histogram"), ("4", "quantization"),
                         ("5", "table"), ("6", "depth"), ("7", "findings"), ("1", "overview")):
            await pilot.press(key)
            await pilot.pause()
            assert tabs.active == tab
        await pilot.press("2")
        await wait_for(pilot, lambda: app.query_one("#plot-spectrum", PlotPanel).spec is not None)
        assert app.query_one("#plot-esd", PlotPanel).spec is not None
        await pilot.press("3", "L")
        await pilot.pause()
        assert app.log_y
        assert app.query_one("#plot-histogram", PlotPanel).spec.y_log


async def test_selection_moves_tensor_to_front() -> None:
    ckpt = fake_checkpoint()
    eng = FakeEngine(ckpt, hold=True)
    app, _ = make_app(engine=eng)
    last = ckpt.tensors[-2].name  # model.norm.weight, last but one in scan order
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.started.is_set())
        app.jump_to(last)
        await pilot.pause(0.2)
        assert last in eng.prioritized
        eng.release.set()
        await wait_for(pilot, lambda: last in app.state.results)
        assert eng.delivered[0] == last
        body = str(app.query_one("#overview-body").render())
        assert body


async def test_panel_says_computing_then_shows_values() -> None:
    ckpt = fake_checkpoint()
    eng = FakeEngine(ckpt, hold=True)
    app, _ = make_app(engine=eng)
    name = "model.layers.1.mlp.up_proj.weight"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.started.is_set())
        app.jump_to(name)
        await pilot.pause()
        text = plain(app.query_one("#overview-body"))
        assert "computing" in text
        eng.release.set()
        await wait_for(pilot, lambda: name in app.state.results)
        await pilot.pause(0.2)
        text = plain(app.query_one("#overview-body"))
        assert "crest_factor" in text and "computing" not in text


async def test_filter_tree_and_clear() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash")
        await pilot.press(*"down_proj")
        await pilot.pause()
        tree = app.query_one(LayerTree)
        leaves = [k for k in tree.nodes_by_key if k.startswith("t:")]
        assert leaves and all("down_proj" in k for k in leaves)
        assert len(leaves) == 2
        await pilot.press("enter")  # keep the filter, back to the tree
        assert app.focused is tree
        await pilot.press("escape")
        await pilot.pause()
        assert tree.filter_text == ""
        assert not app.query_one("#filter").display


async def test_table_sort_and_filter() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        await pilot.pause(0.2)
        await pilot.press("5")
        await pilot.pause()
        table = app.query_one(TensorTable)
        assert len(table.names) == len(eng.ckpt.tensors)
        app.sort_table_by("alpha")
        await pilot.pause()
        alphas = [app.state.results[n].metrics.get("spectral", {}).get("alpha")
                  for n in table.names]
        present = [a for a in alphas if a is not None]
        assert present == sorted(present, reverse=True)
        assert alphas[-1] is None  # tensors without the metric sort last
        # `s` on the same column flips the order
        table.move_cursor(column=list(table.columns).index(
            next(k for k in table.columns if k.value == "alpha")))
        await pilot.press("s")
        await pilot.pause()
        alphas = [app.state.results[n].metrics.get("spectral", {}).get("alpha")
                  for n in table.names]
        present = [a for a in alphas if a is not None]
        assert present == sorted(present)
        # the tree filter narrows the table too
        await pilot.press("slash", *"q_proj", "enter")
        await pilot.press("5")
        await pilot.pause()
        assert table.names and all("q_proj" in n for n in table.names)


async def test_findings_jump() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        await pilot.pause(0.2)
        await pilot.press("7")
        await pilot.pause()
        table = app.query_one(FindingsTable)
        assert table.row_count == 3
        assert app.focused is table
        await pilot.press("enter")  # first row: the critical finding
        await pilot.pause()
        assert app.selected_key == "t:model.layers.0.self_attn.k_proj.weight"
        assert app.query_one(TabbedContent).active == "overview"
        await pilot.press("n")
        await pilot.pause()
        assert app.selected_key == "t:model.layers.1.mlp.down_proj.weight"
        await pilot.press("N")
        await pilot.pause()
        assert app.selected_key == "t:model.layers.0.self_attn.k_proj.weight"


async def test_export_view_and_scan(tmp_path: Path) -> None:
    app, eng = make_app(tmp=tmp_path)
    name = "model.layers.0.self_attn.q_proj.weight"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.jump_to(name)
        await pilot.press("2", "e")
        await pilot.pause()
        files = sorted(tmp_path.glob("wstui-view-spectrum-*.json"))
        assert len(files) == 1
        doc = loads_strict(files[0].read_text())
        assert doc["schema"] == "wstui.view/1" and doc["view"] == "spectrum"
        assert doc["tensor"] == name
        assert doc["metrics"]["spectral"]["alpha"] == pytest.approx(3.1)
        keys = [p["key"] for p in doc["plots"]]
        assert keys == ["spectrum", "esd"]
        sigma = doc["plots"][0]["series"][0]
        assert sigma["y"] == eng.fixed[name].data["spectral"]["spectrum"]
        assert len(sigma["x"]) == len(sigma["y"])
        await pilot.press("5", "e")
        await pilot.pause()
        table_doc = loads_strict(next(tmp_path.glob("wstui-view-table-*.json")).read_text())
        assert table_doc["view"] == "table" and table_doc["selection"]["key"]
        assert len(table_doc["metrics"]["rows"]) == len(table_doc["selection"]["tensors"])
        await pilot.press("E")
        await wait_for(pilot, lambda: list(tmp_path.glob("wstui-scan-*.json")))
        scan = loads_strict(next(tmp_path.glob("wstui-scan-*.json")).read_text())
        assert scan["schema"] == "wstui.scan/1"


async def test_help_screen() -> None:
    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_quit_during_scan_cancels_at_once() -> None:
    app, eng = make_app(delay_s=0.5)
    t0 = time.monotonic()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.started.is_set())
        await pilot.press("q")
        await pilot.pause()
    assert eng.cancelled
    assert not eng.done
    assert time.monotonic() - t0 < 3.0
    assert app.return_code == 0


async def test_keys_are_handled_while_a_slow_analyzer_runs() -> None:
    app, eng = make_app(delay_s=0.4)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.started.is_set())
        await pilot.press("j", "j", "j", "l", "j")
        await pilot.press("3")
        await pilot.pause()
        assert not eng.done  # the analyzer is still busy...
        assert app.query_one(TabbedContent).active == "histogram"  # ...and the keys landed
        assert app.selected_key == "block:0/attention"
        await pilot.press("k")
        assert app.selected_key == "block:0"
        await pilot.press("q")


async def test_analyzer_error_shows_in_its_panel() -> None:
    ckpt = fake_checkpoint()
    results = {r.name: fixed_result(r, i) for i, r in enumerate(ckpt.tensors)}
    name = "model.layers.0.mlp.gate_proj.weight"
    broken = TensorResult(name=name, kind="mlp_gate", shape=(128, 64))
    broken.metrics["stats"] = dict(results[name].metrics["stats"])
    broken.errors["spectral"] = "LinAlgError: SVD did not converge"
    results[name] = broken
    eng = FakeEngine(ckpt, results=results)
    app, _ = make_app(engine=eng)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.jump_to(name)
        await pilot.pause(0.2)
        text = plain(app.query_one("#overview-body"))
        assert "error in spectral: LinAlgError" in text
        assert app.state.state(f"t:{name}") == "error"
        await pilot.press("2")
        await pilot.pause()
        caption = plain(app.query_one("#plot-spectrum .plot-caption"))
        assert "error in spectral" in caption


async def test_quantization_tab_requests_the_full_sweep() -> None:
    app, eng = make_app()
    name = "model.layers.1.mlp.down_proj.weight"
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.jump_to(name)
        await pilot.press("4")
        await pilot.pause()
        await wait_for(pilot, lambda: (name, ["quantization_full", "quant_alpha"])
                       in eng.requests)
        assert app.query_one("#plot-quant", PlotPanel).spec is not None


async def test_depth_view_has_one_series_per_kind() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        await pilot.pause(0.2)
        await pilot.press("6")
        await pilot.pause()
        spec = app.query_one("#plot-depth", PlotPanel).spec
        assert spec is not None
        kinds = {s.label for s in spec.series}
        assert {"attn_q", "mlp_down"} <= kinds
        assert all(s.x == [0, 1] for s in spec.series)
        before = spec.y_label
        await pilot.press("m")
        await pilot.pause()
        assert app.query_one("#plot-depth", PlotPanel).spec.y_label != before


async def test_palette_provider_offers_commands() -> None:
    from wstui.app.palette import WstuiCommands

    app, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        provider = WstuiCommands(app.screen)
        found = [hit.text async for hit in provider.search("go to tensor down")]
        assert any("down_proj" in (t or "") for t in found)
        titles = [hit.text async for hit in provider.discover()]
        assert titles == ["Go to tensor…", "Sort table by…", "Export view", "Export scan"]
        sort_hits = [hit async for hit in provider.search("sort table by α")]
        assert sort_hits
        # a tab from the registry of views; Diff only in diff mode
        tab_hits = [str(hit.text) async for hit in provider.search("open tab")]
        assert "Open tab Depth" in tab_hits and "Open tab Diff" not in tab_hits


async def test_big_tree_builds_block_children_on_expand() -> None:
    app, _ = make_app(blocks=40, hold=True)  # 40 * 9 + 3 tensors > the lazy threshold
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(LayerTree)
        assert tree.lazy
        assert "t:model.layers.39.mlp.up_proj.weight" not in tree.nodes_by_key
        app.jump_to("model.layers.39.mlp.up_proj.weight")
        await pilot.pause()
        assert cursor_key(app) == "t:model.layers.39.mlp.up_proj.weight"
        assert "t:model.layers.38.mlp.up_proj.weight" not in tree.nodes_by_key
        await pilot.press("q")


async def test_header_says_done_when_the_engine_is_done() -> None:
    """An engine that finishes without a last progress report (all cached) still reads done."""
    app, eng = make_app(emit_progress=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        await wait_for(pilot, lambda: "scan done 21/21" in plain(app.query_one("#header")))


async def test_switching_tabs_keeps_focus_visible() -> None:
    """Issue 15.3: `5` then `1` left focus on the hidden table, so j/k moved nothing."""
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        tree = app.query_one(LayerTree)
        for table_tab, cls in (("5", TensorTable), ("7", FindingsTable)):
            for other in ("1", "2", "3", "4", "6"):
                await pilot.press(table_tab)
                await wait_for(pilot, lambda cls=cls: isinstance(app.focused, cls))
                await pilot.press(other)
                await wait_for(pilot, lambda: app.focused is tree)
        before = tree.cursor_line
        await pilot.press("j", "j")
        assert tree.cursor_line == before + 2


async def test_vim_keys_move_in_every_table() -> None:
    """Issue 15.2: j/k (and h/l across the Table's cells) move the cursor as arrows do."""
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        await pilot.press("5")
        table = app.query_one(TensorTable)
        await wait_for(pilot, lambda: app.focused is table and table.row_count > 3)
        await pilot.press("j", "j", "k", "l", "l", "h")
        assert table.cursor_coordinate == (1, 1)
        await pilot.press("7")
        findings = app.query_one(FindingsTable)
        await wait_for(pilot, lambda: app.focused is findings and findings.row_count >= 3)
        await pilot.press("j", "j", "k")
        assert findings.cursor_row == 1


async def test_depth_of_rel_change_without_diff_says_why() -> None:
    """Issue 15.4: Depth of Δrel said "computing…" forever on a single checkpoint."""
    from wstui.app.format import COLUMNS

    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.show_depth(next(i for i, c in enumerate(COLUMNS) if c.key == "rel_change"))
        panel = app.query_one("#plot-depth", PlotPanel)
        await wait_for(pilot, lambda: "--diff" in str(panel.query_one(".plot-caption").content))
        assert panel.spec is None
