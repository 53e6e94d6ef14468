"""Before-and-after: scan, diff and quant on the demo give the documents committed in
tests/data/golden (written by the code before the one-engine refactor, issue 11).

Timings, paths and the version are dropped; every other value must match. Floats are compared
to 1e-6 relative: torch's float32 reductions depend on the thread count (one worker against two
moved a diff's rel_change by 1.3e-7 relative), so bit-identity would test the machine; a refactor
that changes a computation moves numbers far more than that. An SQNR in dB is compared to 1e-5
dB absolute and a cosine to 1e-6 instead: at 2 bits an SQNR sits near 0 dB, where a relative
tolerance means nothing (the numpy CPU path's error sums moved 21 such values by at most 4.4e-6
dB, towards the float64 value, and one 2-bit cosine of 0.41 by 6.4e-7).
Regenerate with `WSTUI_REGEN_GOLDEN=1 pytest tests/test_golden_documents.py` only when a change
of numbers is intended and said so.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from wstui.cli import main

GOLDEN = Path(__file__).parent / "data" / "golden"
DROP = {"elapsed_s", "wstui_version", "path", "files", "cache", "seconds"}

CASES = {
    # every per-tensor analyzer on the safetensors base
    "scan_all": lambda d: ["scan", str(d.base), "--methods",
                           "stats,sparsity,quantization_full,embedding,spectral,quant_alpha"],
    # the default scan of the quantized GGUF copy
    "scan_gguf": lambda d: ["scan", str(d.gguf)],
    "diff": lambda d: ["scan", str(d.base), "--diff", str(d.finetuned)],
    "quant": lambda d: ["quant", str(d.base)],
}


def normalize(value: Any) -> Any:
    """The document without what legitimately differs between runs and machines."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if k not in DROP}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def _abs_tol(where: str) -> float:
    """Quantization error metrics near zero: an SQNR in dB to 1e-5 dB, a cosine to 1e-6."""
    key = where.rsplit(".", 1)[-1]
    return 1e-5 if "sqnr" in key else 1e-6 if key == "cosine" else 1e-300


def assert_same(got: Any, want: Any, where: str = "$") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=_abs_tol(where)), (
            f"{where}: {got} != {want}")
    else:
        assert got == want and type(got) is type(want), f"{where}: {got!r} != {want!r}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_document_unchanged(case: str, demo_paths, tmp_path: Path) -> None:
    out = tmp_path / f"{case}.json"
    code = main([*CASES[case](demo_paths), "--no-cache", "--quiet", "--json", str(out)])
    assert code in (0, 1), code
    got = normalize(json.loads(out.read_text(encoding="utf-8")))
    golden = GOLDEN / f"{case}.json"
    if os.environ.get("WSTUI_REGEN_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(got, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    assert_same(got, json.loads(golden.read_text(encoding="utf-8")))
