"""Series mode: the app on a training run (`wstui CKPT1 CKPT2 …`, `wstui RUN_DIR --series`,
`wstui track … --app`).

`SeriesRun` is what the launcher hands the app: the run's checkpoints in step order (opened,
headers only, and checked to hold the same tensors before the app starts), how to build the
scan engine of one of them, and how to compute the run's `wstui.track/1` document. The app
shows one checkpoint at a time (the step cursor picks it, the latest first); the Series tab
plots the document.

`track_job` turns the track, whose progress is a line of text per phase, into a job of the
bridge (`EngineBridge.run`): progress as `JobProgress`, and a cancel that stops it at the next
phase (quitting never waits for it: its thread is a daemon).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the bridge's name of the track job
TRACK = "track"

#: `track(progress)`: the run's wstui.track/1 document, calling `progress(line)` per phase
TrackFn = Callable[[Callable[[str], None]], dict[str, Any]]


@dataclass
class SeriesRun:
    """A training run as the app opens it."""

    steps: list[int]  # the step numbers (each series' x), in run order
    checkpoints: list[Any]  # one opened `Checkpoint` per step
    scan_factory: Callable[[int], Any]  # the scan engine of step i (called on a thread)
    track: TrackFn

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.checkpoints) or len(self.steps) < 2:
            raise ValueError("a run needs one checkpoint per step, at least two")

    @property
    def latest(self) -> int:
        return len(self.steps) - 1

    def where(self, index: int) -> str:
        """The cursor as the header says it: `step 300 (3 of 4)`."""
        return f"step {self.steps[index]} ({index + 1} of {len(self.steps)})"

    def name(self, index: int) -> str:
        """The checkpoint's file or folder name (raw: the caller makes it visible)."""
        return Path(str(getattr(self.checkpoints[index], "path", ""))).name or f"step {index}"


class TrackCancelled(Exception):
    """The app quit (or started another track) while the track ran."""


@dataclass(frozen=True)
class TrackProgress:
    """What `JobProgress` reads: `done` of `total` phases (following the tensors, then one
    scan per step), the phase's own line in `current`."""

    done: int
    total: int
    current: str | None
    eta_s: float | None = None


class _Stop:
    """The "engine" the bridge cancels: a flag the progress callback checks."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def cancel(self) -> None:
        self.event.set()


def track_job(track: TrackFn, n_steps: int) -> Callable[..., dict[str, Any]]:
    """A bridge job (`fn(on_progress=, engine_hook=)`) that runs `track`."""

    def job(*, on_progress: Callable[[Any], None], engine_hook: Callable[[Any], None]
            ) -> dict[str, Any]:
        stop = _Stop()
        engine_hook(stop)
        done = [0]

        def progress(line: str) -> None:
            if stop.event.is_set():
                raise TrackCancelled(line)
            on_progress(TrackProgress(done[0], n_steps + 1, line))
            done[0] += 1

        return track(progress)

    return job

