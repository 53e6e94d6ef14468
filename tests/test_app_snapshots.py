"""Snapshots of the main views at 100x30 on the stand-in checkpoint with fixed results.

Update deliberately with `pytest tests/test_app_snapshots.py --snapshot-update` (and look at
the SVGs) after a Textual upgrade or a change of layout.
"""

from __future__ import annotations

import pytest
from app_support import make_app, wait_for

SIZE = (100, 30)
TENSOR = "model.layers.1.mlp.down_proj.weight"


def scanned_app(tensor: str | None = TENSOR, keys: tuple[str, ...] = ()):
    """The app with every fixed result landed, `tensor` selected, then `keys` pressed."""
    app, eng = make_app()

    async def run_before(pilot) -> None:
        await wait_for(pilot, lambda: eng.done and app.state.n_done() == len(eng.fixed))
        await pilot.pause(0.3)
        if tensor:
            app.jump_to(tensor)
        await pilot.press(*keys)
        await pilot.pause(0.3)

    return app, run_before


VIEWS = {
    "model": (None, ()),
    "overview": (TENSOR, ()),
    "spectrum": (TENSOR, ("2",)),
    "histogram": (TENSOR, ("3",)),
    "quantization": (TENSOR, ("4",)),
    "table": (None, ("5",)),
    "depth": (None, ("6",)),
    "findings": (None, ("7",)),
    "help": (None, ("question_mark",)),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_view_snapshot(snap_compare, view: str) -> None:
    tensor, keys = VIEWS[view]
    app, run_before = scanned_app(tensor, keys)
    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)
