"""FetchApp: the screen `wstui org/name` shows while it fetches a repo that is not cached.

The explorer needs an opened checkpoint, so the fetch runs before it, in its own small app:
the header names the repo and carries the byte count, rate and ETA, a progress bar fills, and
the explorer opens once the files are there. The download runs on a daemon thread (a thread
cannot be killed: `q` or ctrl+c ends the app at once and the files already fetched stay in
the HF cache, as they do after Ctrl-C in the CLI).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, ProgressBar, Static

from wstui.render import visible

#: fetch(text, on_progress) -> what to open; raises CheckpointError with a one-line message
Fetch = Callable[[str, Callable[[int, int, float, str], None]], str]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def progress_line(done: int, total: int, rate: float) -> str:
    eta = f"ETA {(total - done) / rate:.0f} s" if rate > 0 and total > done else "ETA ?"
    return f"{human_bytes(done)} / {human_bytes(total)}  {human_bytes(rate)}/s  {eta}"


class FetchApp(App[None]):
    """Fetches each repo in turn; `targets` holds what to open, `error` the one-line failure."""

    TITLE = "wstui"
    CSS = "#fetch-file { margin: 1 2; } ProgressBar { margin: 0 2; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,ctrl+c", "interrupt", "Quit", id="fetch.quit", priority=True),
    ]

    def __init__(self, repos: Sequence[str], fetch: Fetch) -> None:
        super().__init__()
        self.repos = list(repos)
        self.fetch = fetch
        self.targets: list[str] = []
        self.error: Exception | None = None
        self.interrupted = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="fetch-file")
        yield ProgressBar(total=None, show_eta=False, id="fetch-bar")
        yield Footer()

    def on_mount(self) -> None:
        self._show(self.repos[0], "asking the Hub…", None)
        threading.Thread(target=self._run, name="wstui-fetch", daemon=True).start()

    def _run(self) -> None:
        try:
            for repo in self.repos:
                self.call_from_thread(self._show, repo, "asking the Hub…", None)

                def on_progress(done: int, total: int, rate: float, file: str,
                                repo: str = repo) -> None:
                    self.call_from_thread(self._progress, repo, done, total, rate, file)

                self.targets.append(self.fetch(repo, on_progress))
        except Exception as exc:  # CheckpointError: one line, shown after the app closes
            self.error = exc
        self.call_from_thread(self.exit)

    def _show(self, repo: str, line: str, file: str | None) -> None:
        self.sub_title = f"fetching {visible(repo)}: {line}"
        self.query_one("#fetch-file", Static).update(
            visible(file) if file else "")

    def _progress(self, repo: str, done: int, total: int, rate: float, file: str) -> None:
        self._show(repo, progress_line(done, total, rate), file)
        self.query_one("#fetch-bar", ProgressBar).update(total=total or None, progress=done)

    def action_interrupt(self) -> None:
        self.interrupted = True
        self.exit()


def fetch_in_app(repos: Sequence[str], *, file: str | None, allow_bin: bool,
                 mouse: bool = True) -> list[str]:
    """What to open for each repo, fetched with the progress in the app's header. Raises
    CheckpointError (one line) or KeyboardInterrupt as the CLI's fetch does."""
    from wstui.checkpoint.hub import download

    def fetch(text: str, on_progress: Callable[[int, int, float, str], None]) -> str:
        # the first repo may pick a GGUF with --file, as on the command line
        return download(text, file=file if text == repos[0] else None, allow_bin=allow_bin,
                        stream=io.StringIO(), on_progress=on_progress)

    app = FetchApp(repos, fetch)
    app.run(mouse=mouse)
    if app.interrupted:
        raise KeyboardInterrupt
    if app.error is not None:
        raise app.error
    return app.targets
