"""Layout at the sizes users have: every tab label with its digit, all tabs visible from 110
columns in diff mode, and a resize laid out for the new size at once (issue 15.7, 15.9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_support import make_app, wait_for
from textual.widgets import Tab, Tabs


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
        assert [label.split()[0] for label in labels] == [str(i) for i in range(1, 8)]
        assert inside, labels


@pytest.mark.parametrize("width", [110, 114, 118, 121, 125])
async def test_diff_mode_shows_all_eight_tabs_from_110_columns(tmp_path: Path,
                                                               width: int) -> None:
    from test_app_diff import _diff_app

    app = _diff_app(tmp_path)
    async with app.run_test(size=(width, 30)) as pilot:
        await pilot.pause()
        labels, inside = tab_geometry(app)
        assert len(labels) == 8 and labels[-1] == "8 Diff" and inside, labels


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
