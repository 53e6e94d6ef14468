"""The smaller items of issue 15.12: each as a user meets it."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from app_support import Progress, fake_checkpoint, fixed_result, make_app, wait_for
from rich.console import Console

from analyzers.core import DEFAULT_THRESHOLDS, TensorResult
from wstui.app.format import result_state, rule_text
from wstui.app.screens.help import help_renderable
from wstui.app.widgets.metrics import tensor_overview
from wstui.app.widgets.table import FindingsTable
from wstui.app.widgets.tree import LayerTree

SIZE = (120, 40)


def text_of(renderable, width: int = 120) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_help_has_a_glossary_and_points_to_the_metrics_guide() -> None:
    text = text_of(help_renderable())
    for label in ("srank", "erank", "KS", "SQNR8", "Δrel"):
        assert label in text
    assert "stable rank" in text and "docs/metrics.md" in text


def test_header_says_what_the_scan_phase_is() -> None:
    app, _ = make_app()
    app.state.progress = Progress(3, 10, None, "cheap")
    header = app._header_text().plain
    assert "quick pass 30%" in header and "cheap" not in header


def test_dead_units_rule_says_share_of_rows() -> None:
    assert rule_text("dead_units", DEFAULT_THRESHOLDS) == "> 0 ▲  > 10% of rows ✖"


def test_a_tensor_listed_not_analyzed_is_not_clean_and_says_so_once() -> None:
    ref = fake_checkpoint().tensors[0]
    r = TensorResult(name=ref.name, kind=ref.kind, shape=ref.shape)
    for m in ("stats", "sparsity", "quantization", "spectral", "embedding"):
        r.skipped[m] = "listed, not analyzed: I64"
    assert result_state(r) == "skipped"
    text = text_of(tensor_overview(ref, r, DEFAULT_THRESHOLDS))
    assert text.count("listed, not analyzed") == 1


def test_diff_names_tell_a_and_b_apart() -> None:
    app, _ = make_app()
    app.checkpoint = SimpleNamespace(path=Path("/x/base/model"))
    app.checkpoint_b = SimpleNamespace(path=Path("/x/tuned/model"))
    assert app._ab_names() == ("base/model", "tuned/model")


async def test_n_on_a_block_goes_to_that_blocks_finding() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        app.select_key("block:1")
        await pilot.press("n")
        await pilot.pause()
        assert app.selected_key == "t:model.layers.1.mlp.down_proj.weight"


async def test_filter_with_no_match_says_so_and_findings_follow_the_filter() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        tree = app.query_one(LayerTree)
        await pilot.press("slash", *"zzz")
        await pilot.pause()
        assert "no tensor matches 'zzz'" in tree.root.label.plain
        await pilot.press("escape", "slash", *"down_proj", "enter", "7")
        table = app.query_one(FindingsTable)
        await wait_for(pilot, lambda: table.row_count == 1)  # of 3: the filter applies
        assert "filter 'down_proj'" in str(app.query_one("#findings-caption").content)


async def test_done_scan_says_no_findings_not_so_far() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        app.jump_to("model.layers.0.self_attn.q_proj.weight")
        await pilot.pause()
        text = text_of(app.query_one("#overview-body").content)
        assert "no findings" in text and "so far" not in text


async def test_ctrl_c_quits() -> None:
    app, eng = make_app(hold=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.started.is_set())
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert eng.cancelled
    assert app.return_code == 0


async def test_quant_tab_says_why_there_is_no_alpha_shift() -> None:
    ckpt = fake_checkpoint()
    results = {r.name: fixed_result(r, i) for i, r in enumerate(ckpt.tensors)}
    name = "model.layers.0.self_attn.q_proj.weight"
    r = results[name]
    r.timings.update(quantization_full=0.1, quant_alpha=0.1)
    r.metrics["quant_alpha"] = {"alpha_shift": None, "no_fit_reason": "too few eigenvalues"}
    from app_support import FakeEngine

    app, eng = make_app(engine=FakeEngine(ckpt, results=results))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        app.jump_to(name)
        await pilot.press("4")
        await wait_for(pilot, lambda: bool(app.query("#quant-info")))
        info = app.query_one("#quant-info")
        await wait_for(pilot, lambda: "no α shift: too few eigenvalues" in text_of(
            info.content))


async def test_block_quantization_tab_says_the_study_is_of_the_whole_model() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.select_key("block:1")
        await pilot.press("4")
        await wait_for(pilot, lambda: bool(app.query("#qs-status")))
        status = app.query_one("#qs-status")
        await wait_for(pilot, lambda: "covers the whole model, not only block 1" in text_of(
            status.content))
        app.select_key(app.state.root.key)
        await pilot.pause()
        assert "covers the whole model" not in text_of(status.content)


async def test_findings_cursor_stays_after_a_jump_and_back() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        await pilot.press("7")
        table = app.query_one(FindingsTable)
        await wait_for(pilot, lambda: app.focused is table and table.row_count == 3)
        await pilot.press("j", "j", "enter")
        await wait_for(pilot, lambda: app.active_tab == "overview")
        await pilot.press("7")
        await wait_for(pilot, lambda: app.focused is table)
        assert table.cursor_row == 2


def test_counts_are_singular_when_one() -> None:
    from wstui.app.format import plural

    assert plural(1, "tensor") == "1 tensor" and plural(2, "tensor") == "2 tensors"


async def test_table_caption_of_a_one_tensor_scope_says_tensor() -> None:
    app, eng = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.select_key("head")
        await pilot.press("5")
        await wait_for(pilot, lambda: bool(app.query("#table-caption")))
        await wait_for(pilot, lambda: "2 tensors" in str(
            app.query_one("#table-caption").content))
        await pilot.press("slash", *"lm_head", "enter", "5")
        await wait_for(pilot, lambda: "1 tensor ·" in str(
            app.query_one("#table-caption").content))
