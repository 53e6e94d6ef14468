"""The lifecycle the scan and diff engines share: start in the background, block in `run`,
wait, and turn Ctrl-C into a cancel. Subclasses supply `_prepare` (run on a daemon thread
first), `cancel` and `report`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class BackgroundJob:
    _kind = "job"  # for thread names and messages

    def _init_job(self) -> None:
        self._cancelled = False
        self._started = False
        self._t0 = 0.0
        self._done_evt = threading.Event()
        self._on_result: Callable[..., None] | None = None
        self._on_progress: Callable[..., None] | None = None

    @property
    def done(self) -> bool:
        return self._done_evt.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def start(
        self,
        on_result: Callable[..., None] | None = None,
        on_progress: Callable[..., None] | None = None,
    ) -> None:
        """Begin in the background; returns at once."""
        if self._started:
            raise RuntimeError(f"{self._kind} already started")
        self._started = True
        self._on_result, self._on_progress = on_result, on_progress
        self._before_start()
        self._t0 = time.perf_counter()
        threading.Thread(target=self._prepare, name=f"wstui-{self._kind}-prepare",
                         daemon=True).start()

    def run(
        self,
        on_result: Callable[..., None] | None = None,
        on_progress: Callable[..., None] | None = None,
    ) -> Any:
        """Work to the end (blocking) and return the report. Ctrl-C cancels and re-raises."""
        self.start(on_result, on_progress)
        try:
            while not self.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.cancel()
            raise
        return self.report()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done_evt.wait(timeout)

    def _before_start(self) -> None:
        """Hook run on the caller's thread just before the work starts."""

    def _prepare(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def cancel(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def report(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError
