"""The cold paths never import torch (1.2-1.7 s): `--help`, `ls`, a scan served wholly from
the cache, and the app's first paint with cached results. Each runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

NO_TORCH = (
    "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
    "assert not bad, 'imported: ' + ', '.join(bad[:5])\n"
)


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    """Two blocks of a Llama-named model with an embedding (numpy-written: no torch here)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": rng.standard_normal((200, 32), dtype=np.float32)}
    for i in range(2):
        t[f"model.layers.{i}.self_attn.q_proj.weight"] = rng.standard_normal(
            (32, 32), dtype=np.float32)
        t[f"model.layers.{i}.mlp.up_proj.weight"] = rng.standard_normal(
            (64, 32), dtype=np.float32)
        t[f"model.layers.{i}.input_layernorm.weight"] = np.ones(32, dtype=np.float32)
    path = tmp_path / "model.safetensors"
    save_file(t, str(path))
    return path


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "WSTUI_CACHE_DIR": str(tmp_path / "cache")}


@pytest.mark.parametrize("argv", [["--help"], ["scan", "--help"], ["ls", "{model}"]])
def test_cli_without_weights_imports_no_torch(argv: list[str], model: Path,
                                              env: dict[str, str]) -> None:
    args = [a.replace("{model}", str(model)) for a in argv]
    code = (
        "import sys\nfrom wstui.cli import main\n"
        f"try:\n    rc = main({args!r})\nexcept SystemExit as e:\n    rc = e.code\n"
        "assert rc in (0, None), rc\n" + NO_TORCH
    )
    run = _run(code, env)
    assert run.returncode == 0, run.stderr[-2000:]


def test_scan_served_from_the_cache_imports_no_torch(model: Path, tmp_path: Path,
                                                     env: dict[str, str]) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    fill = subprocess.run([sys.executable, "-m", "wstui", "scan", str(model), "--quiet",
                           "--json", str(first)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert fill.returncode == 0, fill.stderr[-2000:]
    code = (
        "import sys\nfrom wstui.cli import main\n"
        f"rc = main(['scan', {str(model)!r}, '--quiet', '--json', {str(second)!r}])\n"
        "assert rc == 0, rc\n" + NO_TORCH
    )
    run = _run(code, env)
    assert run.returncode == 0, run.stderr[-2000:]
    a, b = (json.loads(p.read_text()) for p in (first, second))
    assert [t["metrics"] for t in a["tensors"]] == [t["metrics"] for t in b["tensors"]]
    assert a["top_issues"] == b["top_issues"]


def test_app_first_paint_with_cached_results_imports_no_torch(model: Path,
                                                             env: dict[str, str]) -> None:
    fill = subprocess.run([sys.executable, "-m", "wstui", "scan", str(model), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert fill.returncode == 0, fill.stderr[-2000:]
    code = (
        "import asyncio, sys\n"
        "from wstui.app.app import WstuiApp\n"
        "from wstui.checkpoint import open_checkpoint\n"
        "from wstui.checkpoint.naming import build_tree\n"
        "from wstui.engine.scan import ScanEngine\n"
        f"ck = open_checkpoint({str(model)!r})\n"
        "engines = []\n"
        "def factory():\n"
        "    engines.append(ScanEngine(ck))\n"
        "    return engines[0]\n"
        "async def main():\n"
        "    app = WstuiApp(ck, build_tree(ck.tensors), factory)\n"
        "    async with app.run_test(size=(100, 30)) as pilot:\n"
        "        for _ in range(200):\n"
        "            await pilot.pause(0.05)\n"
        "            if engines and engines[0].done:\n"
        "                break\n"
        "        assert engines and engines[0].done, 'the cached scan did not finish'\n"
        "        assert engines[0].progress().cached == len(ck.tensors)\n"
        "asyncio.run(main())\n" + NO_TORCH
    )
    run = _run(code, env)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.parametrize("methods", ["stats,spectral", "stats,sparsity,quantization,embedding"])
def test_fresh_cpu_scan_of_safetensors_imports_no_torch(model: Path, tmp_path: Path,
                                                        env: dict[str, str],
                                                        methods: str) -> None:
    """A CPU scan computes on numpy arrays read without torch (DESIGN §7; 1.2-1.7 s saved)."""
    out = tmp_path / "scan.json"
    code = (
        "import sys\nfrom wstui.cli import main\n"
        f"rc = main(['scan', {str(model)!r}, '--no-cache', '--quiet', '--device', 'cpu', "
        f"'--methods', {methods!r}, '--json', {str(out)!r}])\n"
        "assert rc in (0, 1), rc\n" + NO_TORCH
    )
    run = _run(code, env)
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert all(not t["errors"] for t in doc["tensors"]), doc["tensors"]
    q = next(t for t in doc["tensors"] if t["name"].endswith("q_proj.weight"))
    assert q["metrics"]["stats"]["numel"] == 32 * 32


@pytest.mark.parametrize("pays", [False, True])
def test_torch_is_imported_for_eigvalsh_only_where_it_pays(tmp_path: Path,
                                                           env: dict[str, str],
                                                           pays: bool) -> None:
    """Big Gram matrices go through MKL's eigvalsh (torch), 1.9-2.4x faster than numpy's from
    n = 1536; the scan imports torch for that, before its workers start, only when the
    estimated saving is twice the import. One 1024-wide matrix does not pay (a scan of it
    stays torch-free); with the saving per n³ raised, the same scan imports torch."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    path = tmp_path / "wide.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight":
               rng.standard_normal((1100, 1024), dtype=np.float32)}, str(path))
    code = (
        "import sys\nfrom wstui.engine import placement\n"
        + ("placement.TORCH_EIGH_SAVES_S_PER_N3 = 1.0\n" if pays else "")
        + "from wstui.api import Scope\n"
        f"with Scope({str(path)!r}, use_cache=False, device='cpu') as s:\n"
        "    r = s.scan(methods=['spectral'])\n"
        "e = r.entries[0].result\n"
        "assert not e.errors and e.metrics['spectral']['sv_max'] > 0, (e.errors, e.metrics)\n"
        "print('torch' in sys.modules)\n"
    )
    run = _run(code, env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == str(pays)
