"""Regenerate screenshots/*.svg: the app on the demo checkpoint, each view saved by the app.

    python screenshots/make.py [--size 120x36] [--out screenshots]

Builds (or reuses) the demo, opens it in diff mode with the real scan engine (cache off),
waits for every result and every compared pair, then visits each view and calls
`app.save_screenshot`. Nothing on screen depends on timing once the scan is done.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: file stem -> (tensor to select or None for the model, keys to press)
VIEWS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "overview": ("model.layers.3.mlp.up_proj.weight", ("1",)),
    "spectrum": ("model.layers.5.mlp.down_proj.weight", ("2",)),
    "histogram": ("model.layers.3.mlp.up_proj.weight", ("3", "L")),
    "quantization": ("model.layers.3.mlp.up_proj.weight", ("4",)),
    "table": (None, ("5",)),
    "depth": (None, ("6",)),
    "findings": (None, ("7",)),
    "diff": (None, ("8",)),
}


async def _wait(pilot: Any, cond: Any, timeout: float) -> None:
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout:
        await pilot.pause(0.2)


async def make(out: Path, size: tuple[int, int]) -> list[Path]:
    from wstui.app.app import WstuiApp
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import build_tree
    from wstui.demo import build_demo
    from wstui.engine.scan import ScanEngine

    paths = build_demo()
    ck_a, ck_b = open_checkpoint(paths.base), open_checkpoint(paths.finetuned)
    app = WstuiApp(ck_a, build_tree(ck_a.tensors),
                   lambda: ScanEngine(ck_a, use_cache=False, workers=2),
                   checkpoint_b=ck_b, show_timings=False, title="demo/base")
    written: list[Path] = []
    async with app.run_test(size=size) as pilot:
        await _wait(pilot, lambda: app.engine is not None and app.engine.done, 600)
        await _wait(pilot, lambda: app.diff_runner is not None and app.diff_runner.done, 600)
        await pilot.pause(1.5)  # the last flush and the scope views' refresh
        for stem, (tensor, keys) in VIEWS.items():
            if app.log_y:
                app.log_y = False
            if tensor:
                app.jump_to(tensor)
            else:
                app.select_key(app.state.root.key)
                app.query_one("#tree").move_cursor(app.query_one("#tree").root)
            await pilot.press(*keys)
            await _wait(pilot, lambda: False, 0.6 if stem != "quantization" else 8)
            written.append(Path(app.save_screenshot(filename=f"{stem}.svg", path=str(out))))
        await pilot.press("q")
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description="regenerate the README screenshots")
    ap.add_argument("--size", default="120x36", help="terminal COLSxROWS")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    cols, rows = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(make(args.out, (cols, rows))):
        print(path)


if __name__ == "__main__":
    main()
