"""The app with the real pieces: CLI exit codes, import hygiene, the real engine on the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from app_support import wait_for


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wstui", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args", [("/nonexistent/model",),
                                  ("{demo}", "--diff", "/nonexistent/b"),
                                  ("{demo}", "--threshold", "nonexistent=1")])
def test_bad_input_fails_before_the_app_starts(args: tuple[str, ...], tmp_path: Path) -> None:
    good = tmp_path / "ok.safetensors"
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(good))
    proc = run_cli(*(a.replace("{demo}", str(good)) for a in args))
    assert proc.returncode == 2
    assert proc.stdout == ""  # no escape sequences: the app never started
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wstui: ") and "nonexistent" in lines[0]


def test_first_paint_path_imports_no_torch(tmp_path: Path) -> None:
    """Everything up to the first paint (CLI, app, checkpoint headers, tree) is torch-free."""
    import numpy as np
    from safetensors.numpy import save_file

    f = tmp_path / "m.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight": np.zeros((4, 4), dtype=np.float32)}, str(f))
    code = (
        "import sys, wstui.cli, wstui.commands.app, wstui.app.app\n"
        "from wstui.checkpoint import open_checkpoint\n"
        "from wstui.checkpoint.naming import build_tree\n"
        f"ck = open_checkpoint({str(f)!r}); build_tree(ck.tensors)\n"
        "from wstui.app.app import WstuiApp\n"
        "WstuiApp(ck, build_tree(ck.tensors), None, checkpoint_b=open_checkpoint(ck.path))\n"
        "assert 'torch' not in sys.modules, 'torch imported before first paint'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.slow
async def test_real_engine_on_the_demo(tmp_path: Path, demo_paths) -> None:
    from wstui.app.app import WstuiApp
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import build_tree
    from wstui.engine.scan import ScanEngine

    ck = open_checkpoint(demo_paths.base)
    engines: list[ScanEngine] = []

    def factory() -> ScanEngine:
        engines.append(ScanEngine(ck, methods=["stats", "sparsity", "quantization"],
                                  use_cache=False, workers=2))
        return engines[0]

    app = WstuiApp(ck, build_tree(ck.tensors), factory, export_dir=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: engines and engines[0].done, timeout=60)
        await pilot.pause(0.3)
        # planted defects reach the tree: a dead row in block 0, NaNs in block 4
        assert app.state.state("block:0") == "warn"
        assert app.state.state("block:4") == "critical"
        app.jump_to("model.layers.4.mlp.gate_proj.weight")
        await pilot.pause(0.2)
        assert "nonfinite" in {f.code for f in
                               app.state.results["model.layers.4.mlp.gate_proj.weight"].findings}
        await pilot.press("E")
        await wait_for(pilot, lambda: list(tmp_path.glob("wstui-scan-*.json")), timeout=20)
        from wstui.jsonio import loads_strict

        doc = loads_strict(next(tmp_path.glob("wstui-scan-*.json")).read_text())
        assert doc["schema"] == "wstui.scan/1" and len(doc["tensors"]) == len(ck.tensors)
        await pilot.press("q")
