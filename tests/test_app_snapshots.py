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


def diff_app(tmp_path, keys: tuple[str, ...]):
    """Diff mode on a fixed pair (tests/test_app_diff.py), every pair compared, then `keys`."""
    from app_support import FakeEngine
    from test_app_diff import _empty, write_pair

    from wstui.app.app import WstuiApp
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import build_tree

    pa, pb = write_pair(tmp_path)
    ck_a, ck_b = open_checkpoint(pa), open_checkpoint(pb)
    eng = FakeEngine(ck_a, results={r.name: _empty(r) for r in ck_a.tensors})
    app = WstuiApp(ck_a, build_tree(ck_a.tensors), lambda: eng, export_dir=tmp_path,
                   checkpoint_b=ck_b, show_timings=False)

    async def run_before(pilot) -> None:
        await wait_for(pilot, lambda: len(app.state.compare) == 4, timeout=30)
        await pilot.pause(0.3)
        await pilot.press(*keys)
        await pilot.pause(0.3)

    return app, run_before


DIFF_VIEWS = {
    "diff-ranking": ("8",),
    "diff-spectrum-overlay": ("8", "enter", "2"),
}


@pytest.mark.parametrize("view", list(DIFF_VIEWS))
def test_diff_view_snapshot(snap_compare, tmp_path, view: str) -> None:
    app, run_before = diff_app(tmp_path, DIFF_VIEWS[view])
    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)
