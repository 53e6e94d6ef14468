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


class Browser:
    """Headless Chromium driven over the DevTools protocol (aiohttp's websocket client, which
    textual-serve brings): navigate, wait for a page condition, list every request the page
    made, screenshot with the colour scheme emulated. Enough for the tests; not a library."""

    def __init__(self, exe: str, profile: Path, *, offline: bool = True) -> None:
        import re
        import time

        flags = OFFLINE if offline else tuple(f for f in OFFLINE if "proxy" not in f)
        self.proc = subprocess.Popen(
            [exe, *flags, "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        self.port = None
        assert self.proc.stderr is not None
        while time.monotonic() < deadline and self.port is None:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
            elif not line and self.proc.poll() is not None:
                break
        if self.port is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def visit(self, url: str, *, width: int, height: int, dark: bool = False,
              wait_for: str = "document.readyState === 'complete'", timeout: float = 60,
              full_page: bool = False, evaluate: tuple[str, ...] = ()) -> dict:
        """Load `url`; once `wait_for` (JS) is true: a screenshot (PNG bytes; of the whole
        page with `full_page`), the requested URLs, the title, the DOM as HTML, and the
        values of the `evaluate` expressions."""
        import asyncio

        return asyncio.run(self._visit(url, width, height, dark, wait_for, timeout,
                                       full_page, evaluate))

    async def _visit(self, url: str, width: int, height: int, dark: bool, wait_for: str,
                     timeout: float, full_page: bool, evaluate: tuple[str, ...]) -> dict:
        import asyncio
        import base64
        import itertools
        import time

        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json/list") as r:
                targets = await r.json(content_type=None)
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                ids = itertools.count(1)
                requests: list[str] = []

                async def call(method: str, **params: object) -> dict:
                    n = next(ids)
                    await ws.send_json({"id": n, "method": method, "params": params})
                    while True:
                        msg = await ws.receive_json(timeout=timeout)
                        if msg.get("method") == "Network.requestWillBeSent":
                            requests.append(msg["params"]["request"]["url"])
                        if msg.get("id") == n:
                            if "error" in msg:
                                raise RuntimeError(f"{method}: {msg['error']}")
                            return msg.get("result", {})

                await call("Network.enable")
                await call("Page.enable")
                await call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                           deviceScaleFactor=1, mobile=False)
                await call("Emulation.setEmulatedMedia", features=[
                    {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
                await call("Page.navigate", url=url)
                deadline = time.monotonic() + timeout
                while True:
                    r = await call("Runtime.evaluate", expression=f"!!({wait_for})",
                                   returnByValue=True)
                    if r.get("result", {}).get("value") is True:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url}: never true: {wait_for}")
                    await asyncio.sleep(0.25)
                if full_page:
                    size = (await call("Page.getLayoutMetrics"))["cssContentSize"]
                    await call("Emulation.setDeviceMetricsOverride", width=width,
                               height=int(size["height"]), deviceScaleFactor=1, mobile=False)
                await asyncio.sleep(0.3)  # one more frame
                shot = await call("Page.captureScreenshot", format="png")
                dom = await call("Runtime.evaluate", returnByValue=True,
                                 expression="document.documentElement.outerHTML")
                title = await call("Runtime.evaluate", expression="document.title",
                                   returnByValue=True)
                values = [(await call("Runtime.evaluate", expression=e, returnByValue=True))
                          ["result"].get("value") for e in evaluate]
                return {"png": base64.b64decode(shot["data"]), "requests": requests,
                        "dom": dom["result"]["value"], "title": title["result"]["value"],
                        "values": values}
