"""Shared by the report tests: run `wstui` in a subprocess, build a checkpoint with hostile
tensor names, find Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ("<script>alert(1)</script>.weight", '"><img src=x onerror=alert(2)>.weight',
           "model.layers.0.$x^2$_{a}`|*[link](http://evil.example/)*.weight")


def env(cache: Path) -> dict[str, str]:
    return {**os.environ, "WSTUI_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT),
            "COLUMNS": "160", "MPLBACKEND": "Agg"}


def wstui(cache: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wstui", *args], env=env(cache),
                          capture_output=True, text=True, timeout=timeout)


def hostile_checkpoint(folder: Path) -> Path:
    """Matrices named to break out of HTML, Markdown and math text; each has a planted defect
    (a dead row, an outlier) so that it is among the top issues and the worst tensors."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i, name in enumerate(HOSTILE):
        w = torch.randn(48, 32, generator=g) / 6
        w[3] = 0.0
        w[0, i] = 40.0
        tensors[name] = w
    tensors["model.embed_tokens.weight"] = torch.randn(200, 32, generator=g)
    path = folder / "hostile.safetensors"
    save_file(tensors, str(path))
    return path


def chromium() -> str | None:
    """Debian's `chromium` (what `.ci/run` installs), or another Chromium on PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


#: headless, no sandbox (CI runs as root), and the network off: every proxied request goes to
#: a closed port, and nothing bypasses the proxy
OFFLINE = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--no-first-run", "--disable-background-networking", "--disable-sync",
           "--disable-component-update", "--disable-default-apps", "--mute-audio")
