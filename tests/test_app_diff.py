"""Diff mode on two small safetensors files: pairs compared in the background, overlays, the
Diff tab ranking, export, and unmatched names listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_support import FakeEngine, wait_for
from safetensors.numpy import save_file
from textual.widgets import TabbedContent

from wstui.app.app import WstuiApp
from wstui.app.widgets.plots import PlotPanel
from wstui.app.widgets.table import DiffTable
from wstui.checkpoint import open_checkpoint
from wstui.checkpoint.naming import build_tree
from wstui.jsonio import loads_strict


def write_pair(tmp: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    a = {f"model.layers.{b}.mlp.{p}.weight": rng.standard_normal((32, 16)).astype(np.float32)
         for b in range(2) for p in ("up_proj", "down_proj")}
    a["model.norm.weight"] = np.ones(16, dtype=np.float32)
    b = {k: v.copy() for k, v in a.items()}
    b["model.layers.1.mlp.up_proj.weight"] += 0.9 * rng.standard_normal((32, 16)).astype(
        np.float32)  # a large change
    b["model.layers.0.mlp.down_proj.weight"] += 0.01
    del b["model.norm.weight"]
    save_file(a, str(tmp / "a.safetensors"))
    save_file(b, str(tmp / "b.safetensors"))
    return tmp / "a.safetensors", tmp / "b.safetensors"


async def test_diff_mode(tmp_path: Path) -> None:
    pa, pb = write_pair(tmp_path)
    ck_a, ck_b = open_checkpoint(pa), open_checkpoint(pb)
    eng = FakeEngine(ck_a, results={r.name: _empty(r) for r in ck_a.tensors})
    app = WstuiApp(ck_a, build_tree(ck_a.tensors), lambda: eng, export_dir=tmp_path,
                   checkpoint_b=ck_b, show_timings=False)
    big = "model.layers.1.mlp.up_proj.weight"
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.pairing is not None
        assert app.pairing.only_in_a == ["model.norm.weight"]
        await wait_for(pilot, lambda: len(app.state.compare) == 4, timeout=30)
        await pilot.pause(0.2)
        assert app.state.compare[big].metrics["compare"]["rel_change"] > 0.5
        assert app.state.state(f"t:{big}") == "warn"  # large_change reaches the tree badge
        await pilot.press("8")
        await pilot.pause(0.3)
        assert app.query_one(TabbedContent).active == "diff"
        table = app.query_one(DiffTable)
        assert table.names[0] == big  # most changed first
        await pilot.press("j")
        assert table.cursor_row == 1  # j/k move here as in every table
        await pilot.press("k")
        assert table.cursor_row == 0
        await pilot.press("e")
        await pilot.pause()
        doc = loads_strict(next(tmp_path.glob("wstui-view-diff-*.json")).read_text())
        assert doc["view"] == "diff" and doc["only_in_a"] == ["model.norm.weight"]
        assert doc["metrics"]["pairs"][0]["name"] == big
        await pilot.press("enter")  # jump to the most changed tensor
        await pilot.pause()
        assert app.selected_key == f"t:{big}"
        await pilot.press("2")
        await pilot.pause(0.2)
        spec = app.query_one("#plot-spectrum", PlotPanel).spec
        assert [s.label for s in spec.series] == ["σ A (base)", "σ B"]
        await pilot.press("d")
        await pilot.pause(0.2)
        spec = app.query_one("#plot-spectrum", PlotPanel).spec
        assert [s.label for s in spec.series] == ["σ A", "σ B (base)"]
        await pilot.press("q")


def _empty(ref):
    from analyzers.core import TensorResult

    return TensorResult(name=ref.name, kind=ref.kind, shape=ref.shape)


def _diff_app(tmp_path: Path, result: Any = None) -> WstuiApp:
    """Diff mode on the fixed pair; `result(ref, i)` makes the base's scan results."""
    pa, pb = write_pair(tmp_path)
    ck_a, ck_b = open_checkpoint(pa), open_checkpoint(pb)
    make = result or (lambda r, i: _empty(r))
    eng = FakeEngine(ck_a, results={r.name: make(r, i) for i, r in enumerate(ck_a.tensors)})
    return WstuiApp(ck_a, build_tree(ck_a.tensors), lambda: eng, export_dir=tmp_path,
                    checkpoint_b=ck_b, show_timings=False)


async def test_rel_change_reaches_table_and_depth(tmp_path: Path) -> None:
    """Issue 15.4: Δrel was empty in the Table and Depth views even with every pair compared."""
    from wstui.app.format import COLUMNS
    from wstui.app.widgets.table import TensorTable

    app = _diff_app(tmp_path)
    big = "model.layers.1.mlp.up_proj.weight"
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(app.state.compare) == 4, timeout=30)
        await pilot.press("5")
        table = app.query_one(TensorTable)
        await wait_for(pilot, lambda: table.row_count == 5)
        want = app.state.compare[big].metrics["compare"]["rel_change"]
        cell = table.get_cell(big, "rel_change")
        assert cell.plain and float(cell.plain) == pytest.approx(want, rel=1e-2)
        app.sort_table_by("rel_change")
        await pilot.pause()
        assert table.names[0] == big  # sorting by Δrel sorts
        app.show_depth(next(i for i, c in enumerate(COLUMNS) if c.key == "rel_change"))
        panel = app.query_one("#plot-depth", PlotPanel)
        await wait_for(pilot, lambda: panel.spec is not None)
        ys = [y for s in panel.spec.series for y in s.y]
        assert max(ys) == pytest.approx(want)


def test_oriented_swaps_a_and_b_and_flips_signed_deltas() -> None:
    from wstui.app.format import oriented

    m = {"alpha_a": 3.0, "alpha_b": 4.0, "delta_alpha": 1.0, "cosine": 0.9, "rel_change": 0.2}
    assert oriented(m, False) == m
    assert oriented(m, True) == {"alpha_a": 4.0, "alpha_b": 3.0, "delta_alpha": -1.0,
                                 "cosine": 0.9, "rel_change": 0.2}
    from wstui.app.format import num

    assert num(oriented({"delta_alpha": 0.0}, True)["delta_alpha"]) == "0"  # never "-0"


async def test_swap_reaches_overview_diff_tab_and_esd(tmp_path: Path) -> None:
    """Issue 15.8: `d` swapped the header and overlays only; the Overview's alpha_a/alpha_b/
    delta_alpha, the Diff tab's Δα and only-in counts, and the ESD's caption now follow."""
    import io

    from app_support import fixed_result
    from rich.console import Console

    app = _diff_app(tmp_path, fixed_result)
    big = "model.layers.1.mlp.up_proj.weight"
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: len(app.state.compare) == 4, timeout=30)
        app.state.compare[big].metrics["compare"].update(alpha_a=3.0, alpha_b=4.5,
                                                         delta_alpha=1.5)
        await pilot.press("8")
        table = app.query_one(DiffTable)
        caption = app.query_one("#diff-caption")
        await wait_for(pilot, lambda: table.row_count == 4)
        assert table.get_cell(big, "delta_alpha").plain == "1.5"
        assert "1 only in A, 0 only in B" in str(caption.content)
        await pilot.press("d")
        await wait_for(pilot, lambda: table.get_cell(big, "delta_alpha").plain == "-1.5")
        assert "0 only in A, 1 only in B" in str(caption.content)
        app.jump_to(big)
        await pilot.pause()
        body = app.query_one("#overview-body")
        console = Console(width=120, record=True, file=io.StringIO())
        console.print(body.content)
        text = console.export_text()
        rows = {line.split()[0]: line.split()[1] for line in text.splitlines()
                if line.strip().startswith(("alpha_a", "alpha_b", "delta_alpha"))}
        assert rows == {"alpha_a": "4.5", "alpha_b": "3", "delta_alpha": "-1.5"}, rows
        await pilot.press("2")
        esd = app.query_one("#plot-esd", PlotPanel)
        await wait_for(pilot, lambda: "B: the base" in str(
            esd.query_one(".plot-caption").content))
        await pilot.press("d")
        await wait_for(pilot, lambda: "A: the base" in str(
            esd.query_one(".plot-caption").content))


async def test_exports_in_diff_mode_name_checkpoints_and_write_the_diff(
        tmp_path: Path, monkeypatch) -> None:
    """Issue 15.11: `E` wrote only the base scan; `e` files did not say which checkpoint;
    notifications showed a relative path."""
    monkeypatch.chdir(tmp_path)
    app = _diff_app(tmp_path)
    app.export_dir = Path("out")  # relative, as `--export-dir out` gives it
    out = tmp_path / "out"
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: len(app.state.compare) == 4 and app.diff_runner.done,
                       timeout=30)
        await pilot.press("8", "e")
        await wait_for(pilot, lambda: list(out.glob("wstui-view-diff-*.json")))
        doc = loads_strict(next(out.glob("wstui-view-diff-*.json")).read_text())
        assert doc["checkpoint"] == str(tmp_path / "a.safetensors")
        assert doc["checkpoint_b"] == str(tmp_path / "b.safetensors")
        await pilot.press("E")
        await wait_for(pilot, lambda: list(out.glob("wstui-diff-*.json")), timeout=10)
        diff = loads_strict(next(out.glob("wstui-diff-*.json")).read_text())
        assert diff["schema"] == "wstui.diff/1"
        assert "large_change" in str(diff)  # the diff's findings travel with it
        assert list(out.glob("wstui-scan-*.json"))
        messages = [n.message for n in app._notifications]
        assert any(str(out / "wstui-view-diff") in m for m in messages), messages
        assert any(f"diff written to {out}" in m and f"scan written to {out}" in m
                   for m in messages), messages
