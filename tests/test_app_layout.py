"""Layout at the sizes users have: every tab label with its digit, all tabs visible from 110
columns in diff mode, and a resize laid out for the new size at once (issue 15.7, 15.9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_support import make_app, wait_for
from textual.widgets import Tab, Tabs

from wstui.app.widgets.plots import PlotPanel


def tab_geometry(app) -> tuple[list[str], bool]:
    """(labels of the shown tabs, whether each lies wholly inside the tab bar)."""
    bar = app.query_one(Tabs).region
    tabs = [t for t in app.query(Tab) if t.display]
    inside = all(bar.x <= t.region.x and t.region.right <= bar.right and t.region.width
                 for t in tabs)
    return [str(t.label) for t in tabs], inside


@pytest.mark.parametrize("width", [80, 100, 110, 118, 125, 160])
async def test_tab_labels_keep_their_digits_and_fit(width: int) -> None:
    app, _ = make_app()
    async with app.run_test(size=(width, 24)) as pilot:
        await pilot.pause()
        labels, inside = tab_geometry(app)
        # every tab but Diff (8, diff mode only)
        assert [label.split()[0] for label in labels] == [*map(str, range(1, 8)), "9"]
        assert inside, labels


@pytest.mark.parametrize("width", [110, 114, 118, 121, 125])
async def test_diff_mode_shows_all_nine_tabs_from_110_columns(tmp_path: Path,
                                                              width: int) -> None:
    from test_app_diff import _diff_app

    app = _diff_app(tmp_path)
    async with app.run_test(size=(width, 30)) as pilot:
        await pilot.pause()
        labels, inside = tab_geometry(app)
        assert len(labels) == 9 and labels[-2] == "8 Diff" and inside, labels


async def test_resize_lays_out_for_the_new_size() -> None:
    """160x45 -> 70x20 -> 160x45: labels and the spectrum layout follow each resize at once."""
    app, eng = make_app()
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.jump_to("model.layers.0.self_attn.q_proj.weight")
        await pilot.press("2")
        await wait_for(pilot, lambda: bool(app.query("#spectrum-plots")))
        plots = app.query_one("#spectrum-plots")
        assert not plots.has_class("stacked")
        assert str(app.query(Tab).first().label) == "1 Overview"
        await pilot.resize_terminal(70, 20)
        await pilot.pause()
        assert plots.has_class("stacked")
        assert str(app.query(Tab).first().label) == "1 Info"
        await pilot.resize_terminal(160, 45)
        await pilot.pause()
        assert not plots.has_class("stacked")
        assert str(app.query(Tab).first().label) == "1 Overview"


def bert_app():
    """A MiniLM-shaped checkpoint: long names that differ only at their ends."""
    import math

    from app_support import FakeEngine

    from wstui.app.app import WstuiApp
    from wstui.checkpoint.base import Checkpoint, TensorRef
    from wstui.checkpoint.naming import build_tree, kind_and_block

    names = [("embeddings.word_embeddings.weight", (1000, 384)),
             ("embeddings.LayerNorm.weight", (384,)), ("embeddings.LayerNorm.bias", (384,))]
    for b in range(2):
        p = f"encoder.layer.{b}"
        names += [(f"{p}.attention.self.query.weight", (384, 384)),
                  (f"{p}.attention.output.LayerNorm.weight", (384,)),
                  (f"{p}.attention.output.LayerNorm.bias", (384,)),
                  (f"{p}.output.dense.weight", (384, 1536)),
                  (f"{p}.attention.self.query.bias", (384,)),
                  (f"{p}.output.LayerNorm.weight", (384,))]
    refs = []
    for name, shape in names:
        kind, block = kind_and_block(name)
        refs.append(TensorRef(name=name, shape=shape, dtype="F32", nbytes=4 * math.prod(shape),
                              file=Path("model.safetensors"), hf_name=name, kind=kind,
                              block=block))
    ckpt = Checkpoint(path=Path("/fixture/minilm"), format="safetensors",
                      files=[Path("/fixture/minilm/model.safetensors")], tensors=refs)
    eng = FakeEngine(ckpt)
    return WstuiApp(ckpt, build_tree(ckpt.tensors), lambda: eng, show_timings=False), eng


async def test_tree_at_80_columns_never_merges_names_or_cuts_shapes() -> None:
    from wstui.app.format import shape_text
    from wstui.app.widgets.tree import LayerTree

    app, eng = bert_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: eng.done)
        tree = app.query_one(LayerTree)
        tree.root.expand_all()
        await pilot.pause()
        width = tree.scrollable_content_region.width
        shown: dict[str, str] = {}
        for y in range(tree.last_line + 1):
            node = tree._tree_lines[y].node
            text = tree._render_line(y, 0, width, tree.rich_style).text.rstrip()
            assert len(text) <= width
            if node.data is not None and node.data.tensor is not None:
                shape = shape_text(node.data.tensor.shape)
                # the shape whole, or none of it (no `384` shown as `38`)
                assert shape in text or not any(ch.isdigit() for ch in text.split()[-1]), text
                shown[node.data.tensor.name] = text.lstrip("│├└ ")
        assert len(shown) == len(eng.fixed)
        for b in ("embeddings.", "encoder.layer.0.", "encoder.layer.1."):  # siblings
            mine = [v for k, v in shown.items() if k.startswith(b)]
            assert len(set(mine)) == len(mine), mine  # no two look the same
        assert shown["embeddings.LayerNorm.weight"].endswith("weight")


async def test_tables_at_80_columns_show_values_beside_names() -> None:
    """Issue 15.9: the Table kept scrolling its name column away and Findings showed names
    only; at 80x24 a row shows its name and values (Table) or code and value (Findings)."""
    from wstui.app.widgets.table import FindingsTable, TensorTable

    app, eng = bert_app()
    eng.fixed["encoder.layer.1.output.dense.weight"].findings.extend(
        f for f in app_findings())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        await pilot.press("5")
        table = app.query_one(TensorTable)
        await wait_for(pilot, lambda: table.row_count == len(eng.fixed))
        assert table.fixed_columns == 3  # badge, block, name stay while metrics scroll
        widths = [c.get_render_width(table) for c in table.ordered_columns]
        assert sum(widths[:3]) < table.size.width * 0.7  # room left for the metrics
        name = table.get_cell("encoder.layer.0.attention.output.LayerNorm.weight", "name")
        assert name.plain.endswith("LayerNorm.weight")
        await pilot.press("7")
        findings = app.query_one(FindingsTable)
        await wait_for(pilot, lambda: findings.row_count == 1)
        keys = [c.key.value for c in findings.ordered_columns]
        widths = [c.get_render_width(findings) for c in findings.ordered_columns]
        before_tensor = sum(widths[:keys.index("tensor") + 1])
        assert keys[:5] == ["sev", "code", "value", "block", "tensor"]
        assert before_tensor <= findings.size.width  # code, value, block and name in view
        row = findings.get_row_at(0)
        assert row[3] == "1" and row[4].plain.startswith("output.dense")  # whole: it fits


def app_findings():
    from analyzers.core import Finding, Severity

    return [Finding("quantization", "int8_lossy", Severity.CRITICAL, 8.1, 16.0,
                    "per-tensor int8 SQNR 8.1 dB < 16 dB")]


async def test_overview_metric_names_are_whole_at_80_columns() -> None:
    """Issue 15.9: the Overview cut `near_zero_frac_…` names to the same text."""
    import io

    from rich.console import Console

    app, eng = bert_app()
    name = "encoder.layer.0.output.dense.weight"
    eng.fixed[name].metrics["sparsity"] = {
        "near_zero_frac_1e-06": 0.0, "near_zero_frac_1e-04": 0.01, "near_zero_frac_1e-02": 0.2}
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        app.jump_to(name)
        await pilot.pause()
        body = app.query_one("#overview-body")
        console = Console(width=body.content_region.width, record=True, file=io.StringIO())
        console.print(body.content)
        text = console.export_text()
        for key in eng.fixed[name].metrics["sparsity"]:
            assert key in text


async def test_depth_has_one_point_per_block_per_line() -> None:
    """Issue 15.6: a block's 8 biases (or 2 norms) joined into one zigzagging line."""
    app, eng = bert_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        app.show_depth(0)  # std: every tensor has it
        panel = app.query_one("#plot-depth", PlotPanel)
        await wait_for(pilot, lambda: panel.spec is not None)
        series = panel.spec.series
        for s in series:
            assert s.x == sorted(set(s.x)), (s.label, s.x)  # one point per block
        labels = {s.label for s in series}
        assert "attn_q" in labels  # one tensor per block: the kind names the line
        assert "norm attention.output.LayerNorm.weight" in labels  # several: the role does
        assert "bias attention.self.query.bias" in labels


async def test_plots_name_their_tensor_and_say_things_once() -> None:
    """Issue 15.10: plot captions name the tensor with its block; a block on the Spectrum
    tab says "select a tensor" once, not twice and cut."""
    app, eng = make_app()
    name = "model.layers.1.mlp.down_proj.weight"
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.jump_to(name)
        await pilot.press("2")
        spectrum = app.query_one("#plot-spectrum", PlotPanel)
        await wait_for(pilot, lambda: spectrum.spec is not None)
        for panel in ("#plot-spectrum", "#plot-esd"):
            caption = str(app.query_one(panel).query_one(".plot-caption").content)
            assert caption.startswith(name), caption
        app.select_key("block:0")
        await pilot.pause()
        captions = [str(app.query_one(p).query_one(".plot-caption").content)
                    for p in ("#plot-spectrum", "#plot-esd")]
        assert captions == ["select a tensor in the tree", ""]


async def test_gguf_findings_use_the_tree_names() -> None:
    """Issue 15.10: a GGUF's tree shows HF names; the model Overview's findings listed the
    GGUF names beside them. One naming: the tree's."""
    from app_support import FakeEngine, fixed_result, llama_refs

    from analyzers.core import Finding, Severity
    from wstui.app.app import WstuiApp
    from wstui.checkpoint.base import Checkpoint
    from wstui.checkpoint.naming import build_tree

    refs = llama_refs(1)
    k = next(r for r in refs if r.name.endswith("k_proj.weight"))
    k.name = "blk.0.attn_k.weight"  # a GGUF's own name; hf_name stays the HF one
    ckpt = Checkpoint(path=Path("/fixture/tiny.gguf"), format="gguf",
                      files=[Path("/fixture/tiny.gguf")], tensors=refs)
    results = {r.name: fixed_result(r, i) for i, r in enumerate(refs)}
    results[k.name].findings.append(Finding("spectral", "ill_conditioned", Severity.CRITICAL,
                                            3e8, 1e8, "condition number 3e8 > 1e8"))
    eng = FakeEngine(ckpt, results=results)
    app = WstuiApp(ckpt, build_tree(refs), lambda: eng, show_timings=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(refs))
        app.refresh_view()
        await pilot.pause()
        import io

        from rich.console import Console

        console = Console(width=100, record=True, file=io.StringIO())
        console.print(app.query_one("#overview-body").content)
        text = console.export_text()
        assert "model.layers.0.self_attn.k_proj.weight" in text
        assert "blk.0.attn_k.weight" not in text
