"""The one bridge between the app and the engine: the scan, the diff, long-running jobs (the
quantization study; next, sensitivity) and on-demand requests.

Every engine call that may block runs on a daemon thread: building an engine picks the device,
which imports torch; a request may read the SQLite cache; a study runs for minutes. Never in a
Textual thread worker: those run in asyncio's default executor, which `asyncio.run` joins at
exit, so `q` would wait for a LAPACK call (threads cannot be killed). From those threads the
bridge only parks results in the `Inbox` (tensor rate; the app drains it every 100 ms) or
posts messages (`post_message` is thread-safe); the app's handlers own every state change.

A new long-running engine job is one call: `bridge.run("name", fn, *args, **kw)` where `fn`
takes `on_progress` and `engine_hook` keywords (as `wstui.quant.run_study` does) and returns
its document; `JobProgress`, `JobDone` and `JobFailed` carry the job's name back, and quitting
cancels its engine.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from analyzers.core import TensorResult
from wstui.app.state import Inbox

EngineFactory = Callable[[], Any]
JobFn = Callable[..., Any]


# --- messages from the engine's threads ------------------------------------------------------


class JobProgress(Message):
    """Progress of a running job (a newer one of the same job replaces a queued older one)."""

    def __init__(self, job: str, done: int, total: int, current: str | None, elapsed_s: float,
                 eta_s: float | None) -> None:
        super().__init__()
        self.job, self.done, self.total, self.current = job, done, total, current
        self.elapsed_s, self.eta_s = elapsed_s, eta_s

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobProgress) and message.job == self.job


class JobDone(Message):
    """A job's document (for a study, `complete` is False when it was cancelled)."""

    def __init__(self, job: str, result: Any) -> None:
        super().__init__()
        self.job, self.result = job, result


class JobFailed(Message):
    def __init__(self, job: str, error: str) -> None:
        super().__init__()
        self.job, self.error = job, error


class RequestFailed(Message):
    """An on-demand request (`EngineBridge.request`) the engine refused, per analyzer."""

    def __init__(self, name: str, error: str) -> None:
        super().__init__()
        self.name, self.error = name, error


# --- diff mode: which tensors of A meet which of B ---------------------------------------------


@dataclass
class Pairing:
    """Tensors of A matched with B by HF name; what did not match is listed, never dropped."""

    pairs: dict[str, Any] = field(default_factory=dict)  # A's stored name -> B's TensorRef
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    matching: Any = None  # the wstui.diff.Matching behind it (resized vocabularies, tied heads)

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": len(self.pairs), "only_in_a": self.only_in_a,
                "only_in_b": self.only_in_b,
                "shape_mismatch": [{"name": n, "shape_a": a, "shape_b": b}
                                   for n, a, b in self.shape_mismatch]}


def match(refs_a: list[Any], refs_b: list[Any]) -> Pairing:
    """The headless diff's matching (wstui.diff.match_tensors), so the app pairs what
    `wstui scan A --diff B` pairs."""
    from wstui.engine.matching import Matching, match_tensors

    m = match_tensors(refs_a, refs_b)
    usable = [p for p in m.pairs if p.a.analyzable and p.b.analyzable]
    return Pairing(
        pairs={p.a.name: p.b for p in usable}, only_in_a=list(m.only_in_a),
        only_in_b=list(m.only_in_b),
        shape_mismatch=[(d["name"], d["shape_a"], d["shape_b"]) for d in m.shape_mismatch],
        matching=Matching(usable, m.only_in_a, m.only_in_b, m.shape_mismatch),
    )


# --- the engines --------------------------------------------------------------------------------


class EngineHandle:
    """One engine built on a daemon thread and driven from the event loop: calls before it
    exists are remembered (the newest priority) or dropped; `cancel()` never waits."""

    def __init__(self, build: Callable[[], Any], start: Callable[[Any], None],
                 on_error: Callable[[str], None], name: str) -> None:
        self._build, self._start, self._on_error, self.name = build, start, on_error, name
        self._engine: Any = None
        self._wanted: str | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    @property
    def engine(self) -> Any:
        with self._lock:
            return self._engine

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"wstui-{self.name}-start", daemon=True).start()

    def _run(self) -> None:
        try:
            engine = self._build()
            with self._lock:
                self._engine = engine
                if self._cancelled.is_set():
                    return
                wanted = self._wanted
            if wanted:
                engine.prioritize(wanted)
            self._start(engine)
            if self._cancelled.is_set():
                engine.cancel()
        except Exception as exc:  # shown by the app; the tree stays usable
            self._on_error(f"{self.name} failed to start: {type(exc).__name__}: {exc}")

    def call(self, method: str, *args: Any) -> bool:
        """Call the engine if it exists (False if not yet); an error becomes a notification."""
        engine = self.engine
        if engine is None:
            return False
        try:
            getattr(engine, method)(*args)
        except Exception as exc:
            self._on_error(f"{self.name} engine: {method} failed: {exc}")
        return True

    def prioritize(self, name: str) -> None:
        with self._lock:
            self._wanted = name
        self.call("prioritize", name)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            engine = self._engine
        if engine is not None:
            with contextlib.suppress(Exception):  # a failing cancel must not block quitting
                engine.cancel()

    @property
    def done(self) -> bool:
        engine = self.engine
        return bool(engine is not None and getattr(engine, "done", False))


class DiffHandle(EngineHandle):
    """Diff mode's engine (`wstui.diff.DiffEngine`): elementwise metrics of every pair first
    (the ranking), then spectra; cached on both files; the selected pair first."""

    def __init__(self, pairing: Pairing, on_result: Callable[[str, TensorResult], None],
                 options: Mapping[str, Any], on_error: Callable[[str], None],
                 **engine_kw: Any) -> None:
        self.pairing = pairing
        self.options = dict(options)
        self.engine_kw = {"workers": None, **engine_kw}
        super().__init__(self._build_engine, lambda e: e.start(on_result), on_error, "diff")

    def _build_engine(self) -> Any:
        from wstui.engine.diff import DiffEngine
        from wstui.engine.placement import cpu_count

        kw = dict(self.engine_kw)
        kw["workers"] = kw["workers"] or max(1, cpu_count() // 2)  # the scan runs beside it
        return DiffEngine(None, None, matching=self.pairing.matching, options=self.options,
                          **kw)

    @property
    def total(self) -> int:
        return len(self.pairing.pairs)

    @property
    def done(self) -> bool:
        engine = self.engine
        return engine is not None and engine.done and not engine.cancelled

    def report(self) -> Any:
        """The diff so far as a `DiffReport` (what `E` writes beside the scan), or None
        before the engine is built."""
        engine = self.engine
        return engine.report() if engine is not None else None


class Job:
    """One long-running engine job on a daemon thread; `cancel()` stops its engine (handed over
    through `engine_hook`) within a second, never waiting for a running analyzer."""

    def __init__(self, name: str, post: Callable[[Message], Any], fn: JobFn,
                 args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        self.name, self.post, self.fn = name, post, fn
        self.args, self.kwargs = args, dict(kwargs)
        self.cancelled = threading.Event()
        self.finished = threading.Event()  # set before its last message is posted
        self.engine: Any = None
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.started_at = 0.0

    @property
    def running(self) -> bool:
        """Started and not finished (its thread may still be returning: done all the same)."""
        return (self.thread is not None and self.thread.is_alive()
                and not self.finished.is_set())

    def start(self) -> Job:
        self.started_at = time.perf_counter()
        self.thread = threading.Thread(target=self._run, name=f"wstui-{self.name}",
                                       daemon=True)
        self.thread.start()
        return self

    def _hook(self, engine: Any) -> None:
        with self._lock:
            self.engine = engine
        if self.cancelled.is_set():
            engine.cancel()

    def _progress(self, p: Any) -> None:
        if not self.cancelled.is_set():
            self.post(JobProgress(self.name, p.done, p.total, p.current,
                                  time.perf_counter() - self.started_at,
                                  getattr(p, "eta_s", None)))

    def _run(self) -> None:
        try:
            result = self.fn(*self.args, on_progress=self._progress, engine_hook=self._hook,
                             **self.kwargs)
        except Exception as exc:  # shown as a notification; the app stays usable
            self.finished.set()
            if not self.cancelled.is_set():
                self.post(JobFailed(self.name, f"{type(exc).__name__}: {exc}"))
            return
        self.finished.set()
        if not self.cancelled.is_set():
            self.post(JobDone(self.name, result))

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            engine = self.engine
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.cancel()


class EngineBridge:
    """What the app asks of the engine, in one place: `start()` after the first paint, then
    `prioritize`, `request`, `run` (a job), the reports for `E`, and `cancel()` on quit."""

    def __init__(self, post: Callable[[Message], Any], inbox: Inbox,
                 scan_factory: EngineFactory | None, *, pairing: Pairing | None = None,
                 diff_options: Mapping[str, Any] | None = None,
                 diff_kw: Mapping[str, Any] | None = None) -> None:
        self.post = post
        self.inbox = inbox
        self.quitting = threading.Event()
        self.scan = EngineHandle(scan_factory, self._start_scan, self._error,
                                 "scan") if scan_factory is not None else None
        self.diff = DiffHandle(pairing, inbox.on_compare, diff_options or {}, self._error,
                               **(diff_kw or {})) if pairing is not None else None
        self.jobs: dict[str, Job] = {}
        self.started = False

    def _error(self, message: str) -> None:
        if not self.quitting.is_set():
            self.inbox.on_error(message)

    def _start_scan(self, engine: Any) -> None:
        engine.start(on_result=self.inbox.on_result, on_progress=self.inbox.on_progress)

    def start(self) -> None:
        """Build and start the scan and the diff (each on its own thread)."""
        self.started = True
        for handle in (self.scan, self.diff):
            if handle is not None:
                handle.start()

    def restart_scan(self, factory: EngineFactory) -> Inbox:
        """Series mode: scan another checkpoint. The scan before is cancelled (never waited
        for) and its late results land in the old inbox, which nobody drains; the new scan
        gets a new one (returned: the app drains it from now on)."""
        if self.scan is not None:
            self.scan.cancel()
        self.inbox = Inbox()
        self.scan = EngineHandle(factory, self._start_scan, self._error, "scan")
        if self.started:
            self.scan.start()
        return self.inbox

    @property
    def engine(self) -> Any:
        """The scan engine once built (None before, or without one)."""
        return self.scan.engine if self.scan is not None else None

    @property
    def scan_done(self) -> bool:
        return self.scan is not None and self.scan.done

    @property
    def diff_done(self) -> bool:
        return self.diff is not None and self.diff.done

    def prioritize(self, name: str) -> None:
        """The tensor the user looks at jumps both queues (remembered until they exist)."""
        for handle in (self.scan, self.diff):
            if handle is not None:
                handle.prioritize(name)

    def request(self, name: str, methods: tuple[str, ...]) -> bool:
        """Ask the scan engine for extra analyzers on one tensor, off the event loop (a request
        may read the SQLite cache). False if there is no engine yet; a refusal arrives later as
        `RequestFailed` (asked again per analyzer first: one may be unknown to this engine)."""
        engine = self.engine
        if engine is None:
            return False

        def send() -> None:
            try:
                engine.request(name, list(methods))
                return
            except Exception:
                errors = []
                for m in methods:
                    try:
                        engine.request(name, [m])
                    except Exception as exc:
                        errors.append(f"{m}: {exc}")
            if errors and not self.quitting.is_set():
                self.post(RequestFailed(name, "; ".join(errors)))

        threading.Thread(target=send, name="wstui-request", daemon=True).start()
        return True

    def run(self, name: str, fn: JobFn, *args: Any, **kwargs: Any) -> Job:
        """Start job `name` (one at a time per name: the caller checks `running(name)`)."""
        job = Job(name, self.post, fn, args, kwargs)
        self.jobs[name] = job
        return job.start()

    def job(self, name: str) -> Job | None:
        return self.jobs.get(name)

    def running(self, name: str) -> bool:
        job = self.jobs.get(name)
        return job is not None and job.running

    def cancel(self) -> None:
        """On quit: cancel every engine and job; never waits for a running analyzer."""
        self.quitting.set()
        for handle in (self.scan, self.diff):
            if handle is not None:
                handle.cancel()
        for job in self.jobs.values():
            job.cancel()
