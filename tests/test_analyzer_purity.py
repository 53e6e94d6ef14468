"""`analyzers` is pure computation: importing and running it pulls in no app code."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("textual", "rich", "wstui")


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_and_analyze_load_no_app_modules():
    out = _run(
        "import sys, analyzers, torch\n"
        "analyzers.names()\n"
        "r = analyzers.analyze('w', torch.randn(16, 16), kind='embedding')\n"
        "analyzers.compare(torch.randn(4, 4), torch.randn(4, 4))\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(bad)\n"
    )
    assert out.strip() == "[]"


def test_core_types_import_without_torch():
    out = _run("import sys, analyzers\nprint('torch' in sys.modules)")
    assert out.strip() == "False"
