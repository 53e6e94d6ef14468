"""The app's one bridge to the engine: jobs on daemon threads that report by message."""

from __future__ import annotations

import threading
from typing import Any

from wstui.app.bridge import EngineBridge, JobDone, JobFailed, JobProgress
from wstui.app.state import Inbox


class Progress:
    done, total, current, eta_s = 1, 2, "w", None


def test_a_job_posts_progress_then_its_document_and_is_no_longer_running() -> None:
    posted: list[Any] = []
    bridge = EngineBridge(lambda m: posted.append((m, bridge.running("study"))), Inbox(),
                          None)

    def study(x: int, *, on_progress: Any, engine_hook: Any) -> dict[str, int]:
        on_progress(Progress())
        return {"x": x}

    bridge.run("study", study, 3).thread.join(5)
    (progress, running_then), (done, running_at_done) = posted
    assert isinstance(progress, JobProgress) and progress.job == "study" and running_then
    assert isinstance(done, JobDone) and done.result == {"x": 3}
    assert not running_at_done  # the view that shows "running" must read done by then


def test_a_failing_job_says_why_and_cancel_reaches_its_engine() -> None:
    posted: list[Any] = []
    bridge = EngineBridge(posted.append, Inbox(), None)
    bridge.run("bad", lambda **_: 1 / 0).thread.join(5)
    assert isinstance(posted[0], JobFailed) and "ZeroDivisionError" in posted[0].error

    class Engine:
        cancelled = threading.Event()

        def cancel(self) -> None:
            self.cancelled.set()

    engine, started = Engine(), threading.Event()

    def held(*, on_progress: Any, engine_hook: Any) -> None:
        engine_hook(engine)
        started.set()
        engine.cancelled.wait(5)

    job = bridge.run("held", held)
    assert started.wait(5)
    bridge.cancel()
    job.thread.join(5)
    assert engine.cancelled.is_set() and len(posted) == 1  # a cancelled job posts nothing
