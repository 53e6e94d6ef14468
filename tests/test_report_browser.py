"""The report and `wstui serve` in a real browser: Debian's `chromium`, headless, driven over
the DevTools protocol. `.ci/run` installs chromium; without it these tests are skipped."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.report_helpers import Browser, chromium, env, wstui

pytestmark = [
    pytest.mark.skipif(chromium() is None, reason="chromium is not installed (.ci/run installs "
                       "Debian's chromium; apt-get install -y chromium)"),
    pytest.mark.slow,
]
FIGURE_SECTIONS = ("depth", "worst", "embeddings", "quantization", "diff")
WIDTH, HEIGHT = 1280, 900


@pytest.fixture(scope="module")
def report_url(demo_paths, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("browser")
    cache = tmp_path_factory.getbasetemp() / "report-cache"
    r = wstui(cache, "report", str(demo_paths.base), "--diff", str(demo_paths.finetuned),
              "--quant", "-o", str(out / "demo.html"), "--worst", "2")
    assert r.returncode == 0, r.stderr
    return (out / "demo.html").as_uri()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(chromium(), tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def _image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def test_report_renders_offline_with_every_section(report_url, browser):
    page = browser.visit(report_url, width=WIDTH, height=HEIGHT)
    # the network is off (a dead proxy), and the page asked for nothing but itself
    assert page["requests"] == [report_url]
    assert page["title"] == "wstui report: base vs finetuned"
    img = _image(page["png"])
    assert img.size == (WIDTH, HEIGHT)
    colours = img.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text, tables: not a blank page
    assert img.getpixel((5, 5)) == (255, 255, 255)  # light by default
    dom = page["dom"]
    assert '<table id="top-issues"' in dom and "nonfinite" in dom
    for section in FIGURE_SECTIONS:
        part = dom.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
        assert "<svg" in part, section


def test_report_follows_the_dark_preference(report_url, browser):
    ink = "getComputedStyle(document.querySelector('#fig-depth svg text')).fill"
    light = browser.visit(report_url, width=WIDTH, height=HEIGHT, evaluate=(ink,))
    page = browser.visit(report_url, width=WIDTH, height=HEIGHT, dark=True, evaluate=(ink,))
    img = _image(page["png"])
    r, g, b = img.getpixel((5, 5))
    assert max(r, g, b) < 40  # a dark background
    # the figures' ink follows the theme: dark text in light mode, light text in dark mode
    assert _brightness(light["values"][0]) < 100 < _brightness(page["values"][0])


def test_serve_shows_the_app_in_a_browser(demo_paths, tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wstui", "serve", str(demo_paths.base), "--port", str(port)],
        env={**env(tmp_path / "cache"), "COLUMNS": "100"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for_port(port, proc)
        with Browser(chromium(), tmp_path / "profile", offline=False) as b:
            page = b.visit(f"http://127.0.0.1:{port}/", width=1000, height=700,
                           wait_for="document.body.classList.contains('-first-byte')",
                           timeout=120, evaluate=(
                               "document.body.className",
                               "getComputedStyle(document.querySelector('.intro-dialog'))"
                               ".display",
                               "document.querySelectorAll('.textual-terminal canvas').length"))
        # textual-serve's page, named by us, whose terminal got the app's first bytes (the
        # page then hides its intro dialog and shows the terminal, drawn on canvases)
        assert f"wstui {demo_paths.base}" in page["dom"]
        body_class, intro, canvases = page["values"]
        assert "-first-byte" in body_class.split() and intro == "none" and canvases > 0
        assert _image(page["png"]).size == (1000, 700)
    finally:
        _stop(proc, str(demo_paths.base))


def _brightness(css_colour: str) -> float:
    """`rgb(227, 229, 232)` -> its mean channel."""
    parts = css_colour[css_colour.index("(") + 1 : css_colour.index(")")].split(",")
    return sum(float(p) for p in parts[:3]) / 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"wstui serve exited: {proc.stdout.read() if proc.stdout else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"wstui serve did not listen on {port}")


def _stop(proc: subprocess.Popen, marker: str) -> None:
    """Stop the server's process group, then any app session it started (they run in their
    own terminal session): found by pid, by the checkpoint path only this test uses."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
    for pid in _pids_running("-m wstui " + marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pids_running(fragment: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if fragment in cmd and "serve" not in cmd:
                out.append(int(d.name))
    return out
