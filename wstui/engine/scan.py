"""The scan engine: one scheduler behind the app, `wstui scan` and `Scope` (DESIGN §7).

Why it looks like this:
- Cheap analyzers run for every tensor before any heavy one, so every tensor has numbers fast;
  `prioritize`/`request` put one tensor at the front for the app's current selection.
- Threads, not processes: torch and LAPACK release the GIL, and threads share the open mmaps.
- A small tensor takes one "slot" and runs single-threaded beside others; a big one takes every
  slot and all cores (torch's thread count is set per worker thread, before each task). That
  bounds memory to about one big tensor at a time, and a lone big matrix still uses every core.
- Each analyzer's result is merged, cached and delivered the moment it lands.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzers import core
from analyzers.core import Finding, TensorResult, top_issue_key
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef
from wstui.jobs import BackgroundJob

#: tensors with at least this many elements run alone, on every core (see module docstring)
BIG_NUMEL = 1 << 21

ResultCallback = Callable[[str, TensorResult], None]


def cpu_count() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def select_tensors(
    tensors: Sequence[TensorRef], patterns: str | Sequence[str] | None
) -> list[TensorRef]:
    """Tensors whose stored or HF name matches one of the globs (comma-separated in a string).

    A pattern without glob characters also matches as an exact name.
    """
    if patterns is None:
        return list(tensors)
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    pats = list(patterns)
    out = []
    for ref in tensors:
        names = [ref.name] + ([ref.hf_name] if ref.hf_name else [])
        if any(fnmatch.fnmatchcase(n, p) for n in names for p in pats):
            out.append(ref)
    return out


def validate_methods(methods: Sequence[str] | None) -> list[str]:
    """The methods to run, in scan order; raises ValueError naming an unknown one."""
    known = core.names()
    if methods is None:
        return core.default_methods()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(
            f"unknown analyzer {unknown[0]!r} (known: {', '.join(known)})"
        )
    order = {n: i for i, n in enumerate(known)}
    return sorted(dict.fromkeys(methods), key=order.__getitem__)


def copy_result(r: TensorResult) -> TensorResult:
    """A copy whose dicts and lists are the caller's own (arrays inside are shared, read-only)."""
    return TensorResult(
        name=r.name, kind=r.kind, shape=tuple(r.shape),
        metrics={k: dict(v) for k, v in r.metrics.items()},
        findings=list(r.findings),
        data={k: dict(v) for k, v in r.data.items()},
        skipped=dict(r.skipped), errors=dict(r.errors), timings=dict(r.timings),
        elapsed_s=r.elapsed_s,
    )


@dataclass(frozen=True)
class ScanProgress:
    """Where a scan stands; `done`/`total` count tasks (a tensor's cheap or heavy analysis)."""

    done: int
    total: int
    current: str | None
    phase: str  # "cache" | "cheap" | "heavy" | "request" | "done" | "cancelled"
    elapsed_s: float
    eta_s: float | None
    cached: int = 0  # tensors whose results all came from the cache
    n_tensors: int = 0


@dataclass
class Issue:
    """One finding of one tensor, as listed in the top issues."""

    ref: TensorRef
    finding: Finding

    @property
    def tensor(self) -> str:
        return self.ref.name

    def to_dict(self) -> dict[str, Any]:
        f = self.finding
        return {
            "tensor": self.ref.name, "analyzer": f.analyzer, "code": f.code,
            "severity": f.severity.value, "value": f.value, "threshold": f.threshold,
            "message": f.message,
        }


@dataclass
class ReportEntry:
    ref: TensorRef
    result: TensorResult


@dataclass
class ScanReport:
    """The results of one scan: what `wstui scan` prints and `--json` writes (DESIGN §8)."""

    checkpoint: dict[str, Any]
    methods: list[str]
    device: str
    elapsed_s: float
    entries: list[ReportEntry]
    complete: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    top_issues: list[Issue] = field(init=False)

    def __post_init__(self) -> None:
        issues = [Issue(e.ref, f) for e in self.entries for f in e.result.findings]
        issues.sort(key=lambda i: top_issue_key(i.finding))
        self.top_issues = issues

    @property
    def tensors(self) -> dict[str, TensorResult]:
        """Results by stored tensor name, in scan order."""
        return {e.ref.name: e.result for e in self.entries}

    def entry(self, name: str) -> ReportEntry:
        """By stored or HF name."""
        for e in self.entries:
            if name in (e.ref.name, e.ref.hf_name):
                return e
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        from wstui.export import scan_json

        return scan_json(self)

    def to_json(self, path: str | Path) -> Path:
        from wstui import jsonio

        return jsonio.dump(self.to_dict(), path)

    def to_records(self) -> list[dict[str, Any]]:
        from wstui.export import records

        return records(self)


@dataclass(eq=False)
class _Task:
    seq: int
    ref: TensorRef
    methods: tuple[str, ...]
    options: dict[str, Any]
    opts_hash: str
    phase: str  # "cheap" | "heavy" | "request"
    cost: float
    slots: int
    key: tuple[Any, ...] = ()
    state: str = "pending"  # pending | running | done | dropped


class ScanEngine(BackgroundJob):
    """Schedules analyzers over a checkpoint's tensors on a pool of worker threads."""

    _kind = "scan"

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        methods: Sequence[str] | None = None,
        device: str = "auto",
        workers: int | None = None,
        use_cache: bool = True,
        options: Mapping[str, Any] | None = None,
        tensors: Sequence[TensorRef] | None = None,
        cache_path: str | Path | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.methods = validate_methods(methods)
        self._specs = core.registry()
        self.device = core.pick_device(device)
        _check_device(self.device)
        self.cores = cpu_count()
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = int(workers) if workers else self.cores
        self.use_cache = use_cache
        self.cache_path = cache_path
        self.options: dict[str, Any] = dict(options or {})
        self.options.pop("device", None)
        self.refs: list[TensorRef] = list(tensors) if tensors is not None else list(
            checkpoint.tensors
        )
        self._by_name = {r.name: r for r in self.refs}
        for r in checkpoint.tensors:  # request() may name a tensor outside the selection
            self._by_name.setdefault(r.name, r)
        self.cache = None
        self.cache_error: str | None = None
        self.callback_errors: list[str] = []
        self.error: str | None = None  # set when the scan could not even be prepared

        self._lock = threading.Condition()
        self._results: dict[str, TensorResult] = {}
        self._computed: dict[str, set[tuple[str, str]]] = {}  # name -> {(analyzer, opts hash)}
        self._heap: list[tuple[tuple[Any, ...], int, _Task]] = []
        self._pending: dict[str, list[_Task]] = {}
        self._seq = itertools.count()
        self._bump = itertools.count(1)
        self._early: list[tuple[str, str, tuple[str, ...] | None, dict[str, Any] | None]] = []
        self._free_slots = self.workers
        self._alive = 0
        self._running: dict[int, _Task] = {}
        self._n_tasks = 0
        self._n_done = 0
        self._cost_total = 0.0
        self._cost_done = 0.0
        # per kind of task ("heavy": a spectrum; "light": elementwise): cost units queued and
        # done, and the task-seconds the done ones took, so that the ETA learns each kind's
        # own rate (one cost model for both was off by 2x on the MiniLM: issue 15.12)
        self._kind_cost = {"heavy": 0.0, "light": 0.0}
        self._kind_done = {"heavy": 0.0, "light": 0.0}
        self._kind_secs = {"heavy": 0.0, "light": 0.0}
        self._n_cached = 0
        self._current: str | None = None
        self._phase = "cache"
        self._prepared = False
        self._init_job()
        self._t_end: float | None = None
        self._fkeys: dict[Path, Any] = {}
        self._loads_in_flight = 0
        self.max_loads_in_flight = 0
        self._blas = _BlasThreads()
        self._torch_threads0 = 0

    # ----------------------------------------------------------------- public API
    # start(on_result, on_progress), run(...) -> ScanReport, wait(timeout), done, cancelled:
    # see BackgroundJob.

    def _before_start(self) -> None:
        # Without a cache database nothing can come from the cache: load torch now, before
        # the database file appears (as a scan always did). With one, a scan served wholly
        # from it never imports torch: the first worker, if any, does.
        if not self.use_cache or not self._cache_file().exists():
            import torch  # noqa: F401
        # torch's thread count, to put back at the end (else the first worker records it)
        self._note_torch_threads()

    def _cache_file(self) -> Path:
        from wstui.cache import default_path

        return Path(self.cache_path) if self.cache_path is not None else default_path()

    def _note_torch_threads(self) -> None:
        import sys

        if not self._torch_threads0 and "torch" in sys.modules:
            self._torch_threads0 = sys.modules["torch"].get_num_threads()

    def stream(
        self, on_progress: Callable[[ScanProgress], None] | None = None
    ) -> Iterator[tuple[str, TensorResult]]:
        """Start the scan and yield (tensor name, merged result so far) as each analyzer's
        result lands, cached ones first. Leaving the loop early cancels the scan."""
        q: queue.SimpleQueue[tuple[str, TensorResult]] = queue.SimpleQueue()
        self.start(on_result=lambda n, r: q.put((n, r)), on_progress=on_progress)
        try:
            while True:
                try:
                    yield q.get(timeout=0.1)
                except queue.Empty:
                    if self.done and q.empty():
                        return
        finally:
            if not self.done:
                self.cancel()

    def cancel(self) -> None:
        """No new task starts; running analyzers finish their current method. Returns at once."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            for tasks in self._pending.values():
                for t in tasks:
                    t.state = "dropped"
            self._pending.clear()
            self._heap.clear()
            self._phase = "cancelled"
            self._lock.notify_all()
            self._maybe_done_locked()
        self._emit_progress()

    def prioritize(self, name: str) -> None:
        """Move every pending task of this tensor (stored name or HF name) to the front."""
        with self._lock:
            ref = self._resolve(name)
            if ref is None:
                return
            if not self._prepared:
                self._early.append(("prioritize", ref.name, None, None))
                return
            bump = next(self._bump)
            for t in self._pending.get(ref.name, []):
                self._push_locked(t, (0, -bump, 0 if t.phase == "cheap" else 1, t.seq))
            self._lock.notify_all()

    def request(
        self, name: str, methods: Sequence[str], options: Mapping[str, Any] | None = None
    ) -> None:
        """Run `methods` on one tensor at the front of the queue (e.g. the full quantization
        sweep for the tensor shown). Methods already computed with these options only
        re-deliver the merged result through `on_result`."""
        methods = validate_methods(methods)
        with self._lock:
            if self._cancelled:
                return
            ref = self._resolve(name)
            if ref is None:
                raise KeyError(name)
            if not self._prepared:
                self._early.append(("request", ref.name, tuple(methods), dict(options or {})))
                return
        self._request_now(ref, tuple(methods), dict(options or {}))

    def snapshot(self) -> dict[str, TensorResult]:
        """Merged results so far, by stored tensor name (copies)."""
        with self._lock:
            return {n: copy_result(r) for n, r in self._results.items()}

    def result(self, name: str) -> TensorResult | None:
        with self._lock:
            ref = self._resolve(name)
            r = self._results.get(ref.name) if ref else None
            return copy_result(r) if r else None

    def progress(self) -> ScanProgress:
        with self._lock:
            return self._progress_locked()

    def report(self) -> ScanReport:
        """The report of what is done so far (complete once `done` and not cancelled)."""
        with self._lock:
            entries = [
                ReportEntry(r, copy_result(self._results[r.name]))
                for r in self.refs if r.name in self._results
            ]
            end = self._t_end if self._t_end is not None else time.perf_counter()
            elapsed = end - self._t0 if self._started else 0.0
            complete = self.done and not self._cancelled
        return ScanReport(
            checkpoint=self.checkpoint.summary(), methods=list(self.methods), device=self.device,
            elapsed_s=elapsed, entries=entries, complete=complete, options=dict(self.options),
        )

    # ----------------------------------------------------------------- preparation
    def _resolve(self, name: str) -> TensorRef | None:
        ref = self._by_name.get(name)
        if ref is None:
            for r in self._by_name.values():
                if r.hf_name == name:
                    return r
        return ref

    def _task_options(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        opts = dict(self.options)
        if extra:
            opts.update(extra)
        opts.pop("device", None)
        return opts

    def _hash(self, opts: Mapping[str, Any]) -> str:
        from wstui.cache import options_hash

        # The device kind is part of the key: a GPU's float32 Gram is not bit-equal to the CPU's.
        return options_hash({**opts, "device": self.device.split(":")[0]})

    def _fkey(self, ref: TensorRef) -> Any:
        from wstui.cache import FileKey

        if ref.file not in self._fkeys:
            try:
                self._fkeys[ref.file] = FileKey.of(ref.file)
            except OSError:
                self._fkeys[ref.file] = None
        return self._fkeys[ref.file]

    def _open_cache(self) -> None:
        if not self.use_cache:
            return
        try:
            from wstui.cache import ResultCache

            self.cache = ResultCache(self.cache_path)
        except Exception as exc:  # an unusable cache never stops a scan
            self.cache = None
            self.cache_error = f"{type(exc).__name__}: {exc}"

    def _skip_reason(self, ref: TensorRef) -> str | None:
        if not ref.analyzable:
            return ref.note or f"{ref.dtype} tensors are not analyzed"
        if ref.tied_to:
            return f"tied to {ref.tied_to}"
        return None

    def _prepare(self) -> None:
        try:
            self._prepare_inner()
        except Exception as exc:  # never leave waiters hanging
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
                self._prepared = True
                self._maybe_done_locked()

    def _prepare_inner(self) -> None:
        if self.device != "cpu":
            warm_up_linalg(self.device)
        self._open_cache()
        opts = self._task_options()
        h = self._hash(opts)
        wanted = {(m, self._specs[m].version, h) for m in self.methods}
        cached: dict[tuple[str, str], TensorResult] = {}
        if self.cache is not None:
            files = {r.file for r in self.refs if self._skip_reason(r) is None}
            for f in sorted(files, key=str):
                fk = self._fkey_of_file(f)
                if fk is not None:
                    try:
                        cached.update(self.cache.lookup_file(fk, wanted))
                    except Exception as exc:  # unusable cache: compute everything
                        self.cache_error = f"{type(exc).__name__}: {exc}"

        deliveries: list[str] = []
        order = _scan_order(self.refs)
        with self._lock:
            for ref in self.refs:
                reason = self._skip_reason(ref)
                if reason is not None:
                    r = self._result_locked(ref)
                    for m in self.methods:
                        r.skipped[m] = reason
                    deliveries.append(ref.name)
                    continue
                hits = [m for m in self.methods if (ref.name, m) in cached]
                for m in hits:
                    self._result_locked(ref).merge(cached[(ref.name, m)])
                    self._computed.setdefault(ref.name, set()).add((m, h))
                if hits:
                    deliveries.append(ref.name)
                missing = [m for m in self.methods if m not in hits]
                if not missing:
                    self._n_cached += 1
                cheap = tuple(m for m in missing if not self._specs[m].heavy)
                heavy = tuple(m for m in missing if self._specs[m].heavy)
                pos = order.get(ref.name, 0)
                if cheap:
                    self._add_task_locked(ref, cheap, opts, h, "cheap", (1, 0, pos))
                if heavy:
                    self._add_task_locked(ref, heavy, opts, h, "heavy", (1, 1, pos))
            self._phase = "cheap"
        for name in deliveries:
            self._deliver(name)
        with self._lock:
            self._prepared = True
            early, self._early = self._early, []
        for what, name, methods, options in early:
            if what == "prioritize":
                self.prioritize(name)
            elif methods is not None:
                self._request_now(self._by_name[name], methods, options or {})
        self._emit_progress()
        with self._lock:
            self._spawn_workers_locked()
            self._maybe_done_locked()

    def _fkey_of_file(self, f: Path) -> Any:
        for r in self.refs:
            if r.file == f:
                return self._fkey(r)
        return None

    def _result_locked(self, ref: TensorRef) -> TensorResult:
        r = self._results.get(ref.name)
        if r is None:
            r = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
            self._results[ref.name] = r
        return r

    def _cost(self, ref: TensorRef, methods: Sequence[str], heavy: bool) -> float:
        shape = [int(s) for s in ref.shape] or [1]
        n = max(1, ref.numel)
        if heavy and len(shape) >= 2:
            rows, cols = shape[0], n // max(1, shape[0])
            small, large = min(rows, cols), max(rows, cols)
            return float(small) * small * large + 4.0 * small**3 + n
        return 1000.0 * n * len(methods)

    def _add_task_locked(
        self, ref: TensorRef, methods: tuple[str, ...], opts: dict[str, Any], h: str, phase: str,
        key: tuple[Any, ...],
    ) -> _Task:
        heavy = any(self._specs[m].heavy for m in methods)
        slots = self.workers if ref.numel >= BIG_NUMEL else 1
        t = _Task(next(self._seq), ref, methods, opts, h, phase,
                  self._cost(ref, methods, heavy), slots)
        self._pending.setdefault(ref.name, []).append(t)
        self._push_locked(t, (*key, t.seq))
        self._n_tasks += 1
        self._cost_total += t.cost
        self._kind_cost[_kind(heavy)] += t.cost
        return t

    def _push_locked(self, t: _Task, key: tuple[Any, ...]) -> None:
        t.key = key
        heapq.heappush(self._heap, (key, t.seq, t))

    def _request_now(self, ref: TensorRef, methods: tuple[str, ...], extra: dict[str, Any]) -> None:
        opts = self._task_options(extra)
        h = self._hash(opts)
        with self._lock:
            if self._cancelled:
                return
            have = self._computed.get(ref.name, set())
            pending_same = {
                m for t in self._pending.get(ref.name, []) if t.opts_hash == h for m in t.methods
            }
            todo = [m for m in methods if (m, h) not in have and m not in pending_same]
        if todo and self.cache is not None and self._skip_reason(ref) is None:
            fk = self._fkey(ref)
            for m in list(todo):
                frag = None
                if fk is not None:
                    try:
                        frag = self.cache.get(fk, ref.name, m, self._specs[m].version, h)
                    except Exception:
                        frag = None
                if frag is not None:
                    with self._lock:
                        self._result_locked(ref).merge(frag)
                        self._computed.setdefault(ref.name, set()).add((m, h))
                    todo.remove(m)
        reason = self._skip_reason(ref)
        with self._lock:
            if reason is not None:
                r = self._result_locked(ref)
                for m in todo:
                    r.skipped[m] = reason
                todo = []
            if todo:
                bump = next(self._bump)
                self._add_task_locked(ref, tuple(todo), opts, h, "request", (0, -bump, 0))
                self._done_evt.clear()
                self._spawn_workers_locked()
                self._lock.notify_all()
        if not todo:
            self._deliver(ref.name)
        self._emit_progress()

    # ----------------------------------------------------------------- workers
    def _spawn_workers_locked(self) -> None:
        want = min(self.workers, sum(len(v) for v in self._pending.values()))
        while self._alive < want:
            self._alive += 1
            threading.Thread(target=self._worker, name=f"wstui-scan-{self._alive}",
                             daemon=True).start()

    def _next_task_locked(self) -> _Task | None:
        """The head pending task once it has its slots; None when there is nothing left."""
        while True:
            if self._cancelled:
                return None
            while self._heap:
                key, _, t = self._heap[0]
                if t.state != "pending" or t.key != key:
                    heapq.heappop(self._heap)
                    continue
                break
            if not self._heap:
                return None
            t = self._heap[0][2]
            need = min(t.slots, self.workers)
            if self._free_slots >= need:
                heapq.heappop(self._heap)
                t.state = "running"
                self._free_slots -= need
                # numpy/scipy's BLAS keeps one thread count for the whole process. Safe to
                # switch here: a big task runs alone, and small tasks all want the same count.
                self._blas.set(self._threads_for(t))
                self._pending[t.ref.name].remove(t)
                if not self._pending[t.ref.name]:
                    del self._pending[t.ref.name]
                self._running[t.seq] = t
                self._current = t.ref.display_name
                if t.phase != "request":
                    self._phase = t.phase
                return t
            self._lock.wait(0.5)

    def _worker(self) -> None:
        threads_now = 0
        import torch  # noqa: F401  (loaded here, not at start: a cached scan needs no torch)

        with self._lock:
            self._note_torch_threads()
        try:
            while True:
                with self._lock:
                    task = self._next_task_locked()
                    if task is None:
                        return
                self._emit_progress()
                want = self._threads_for(task)
                if want != threads_now:
                    _set_threads(want)
                    threads_now = want
                t_task = time.perf_counter()
                try:
                    self._execute(task)
                finally:
                    with self._lock:
                        task.state = "done"
                        self._free_slots += min(task.slots, self.workers)
                        self._running.pop(task.seq, None)
                        self._n_done += 1
                        self._cost_done += task.cost
                        kind = _kind(any(self._specs[m].heavy for m in task.methods))
                        self._kind_done[kind] += task.cost
                        self._kind_secs[kind] += time.perf_counter() - t_task
                        self._lock.notify_all()
                self._emit_progress()
        finally:
            with self._lock:
                self._alive -= 1
                self._maybe_done_locked()
            self._emit_progress()

    def _threads_for(self, task: _Task) -> int:
        if task.slots >= self.workers:
            return self.cores
        return max(1, self.cores // self.workers)

    def _maybe_done_locked(self) -> None:
        if not self._prepared:
            return
        idle = not self._running and (self._cancelled or not self._pending)
        if idle and not self._done_evt.is_set():
            self._blas.restore()
            if self._torch_threads0:
                # torch keeps one global default that threads read on their first parallel
                # call (e.g. the app's): put back what it was before the workers changed it.
                _set_threads(self._torch_threads0)
            if self._t_end is None:
                self._t_end = time.perf_counter()
            if self.cache is not None:
                # writes queued behind another process's lock get their last try now, so
                # that what reads the cache after `done` (a diff reusing these spectra, a
                # rescan) finds them; nothing queued costs nothing
                self.cache.flush()
            if not self._cancelled:
                self._phase = "done"
            self._current = None
            self._done_evt.set()
            self._lock.notify_all()

    # ----------------------------------------------------------------- one task
    def _execute(self, task: _Task) -> None:
        ref = task.ref
        with self._lock:
            self._loads_in_flight += 1
            self.max_loads_in_flight = max(self.max_loads_in_flight, self._loads_in_flight)
        try:
            try:
                x = _load(ref)
            except Exception as exc:
                msg = str(exc) if isinstance(exc, CheckpointError) else (
                    f"{type(exc).__name__}: {exc}")
                frag = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
                frag.errors["load"] = msg
                self._land(task, None, frag)
                return
            device = self.device
            try:
                if device != "cpu":
                    x, device = _to_device(x, device)
                for m in task.methods:
                    if self._cancelled:
                        break
                    frag = self._analyze(ref, x, m, task.options, device)
                    if device != "cpu" and _is_oom(frag.errors.get(m)):
                        x, device = _to_cpu(x)
                        frag = self._analyze(ref, x, m, task.options, "cpu")
                    self._land(task, m, frag)
            except Exception as exc:  # a bug outside the analyzers: record it, go on
                frag = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
                frag.errors["engine"] = f"{type(exc).__name__}: {exc}"
                self._land(task, None, frag)
            del x
        finally:
            with self._lock:
                self._loads_in_flight -= 1

    def _analyze(
        self, ref: TensorRef, x: Any, method: str, options: Mapping[str, Any], device: str
    ) -> TensorResult:
        opts = {**options, "device": device}
        try:
            return core.analyze(ref.name, x, kind=ref.kind, options=opts, methods=[method])
        except Exception as exc:  # analyze() should not raise; never let one tensor stop a scan
            frag = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
            frag.errors[method] = f"{type(exc).__name__}: {exc}"
            return frag

    def _land(self, task: _Task, method: str | None, frag: TensorResult) -> None:
        """Merge one analyzer's fragment, deliver the merged result, then cache the fragment
        (the consumer does not wait for the disk). Fragments with errors are not cached: the
        next scan tries again."""
        ref = task.ref
        frag.name = ref.name
        with self._lock:
            self._result_locked(ref).merge(frag)
            if method is not None and not frag.errors:
                self._computed.setdefault(ref.name, set()).add((method, task.opts_hash))
        self._deliver(ref.name)
        if method is not None and not frag.errors and self.cache is not None:
            fk = self._fkey(ref)
            if fk is not None:
                try:
                    spec = self._specs[method]
                    self.cache.put(fk, ref.name, method, spec.version, task.opts_hash, frag)
                except Exception as exc:
                    self.cache_error = f"{type(exc).__name__}: {exc}"

    def _deliver(self, name: str) -> None:
        cb = self._on_result
        if cb is None:
            return
        with self._lock:
            r = self._results.get(name)
            snap = copy_result(r) if r is not None else None
        if snap is None:
            return
        try:
            cb(name, snap)
        except Exception as exc:  # a broken consumer must not stop the scan
            self.callback_errors.append(f"on_result: {type(exc).__name__}: {exc}")

    # ----------------------------------------------------------------- progress
    def _eta_locked(self, elapsed: float) -> float:
        """Seconds left: each kind's remaining cost at that kind's own measured rate (task-
        seconds per cost unit; a kind with nothing done yet borrows the other's), scaled from
        task-seconds to wall seconds by what the run has shown so far (parallel workers)."""
        rates = {k: self._kind_secs[k] / self._kind_done[k]
                 for k in self._kind_done if self._kind_done[k] > 0 and self._kind_secs[k] > 0}
        spent = sum(self._kind_secs.values())
        if not rates or spent <= 0:
            return elapsed * (self._cost_total - self._cost_done) / self._cost_done
        fallback = spent / self._cost_done  # a kind not seen yet: the run's overall rate
        left = sum(max(0.0, self._kind_cost[k] - self._kind_done[k]) * rates.get(k, fallback)
                   for k in self._kind_cost)
        return left * elapsed / spent

    def _progress_locked(self) -> ScanProgress:
        now = self._t_end if self._t_end is not None else time.perf_counter()
        elapsed = now - self._t0 if self._started else 0.0
        eta = None
        if self._cost_done > 0 and self._n_done < self._n_tasks and not self._cancelled:
            eta = self._eta_locked(elapsed)
        elif self._n_done >= self._n_tasks and self._prepared:
            eta = 0.0
        return ScanProgress(
            done=self._n_done, total=self._n_tasks, current=self._current, phase=self._phase,
            elapsed_s=elapsed, eta_s=eta, cached=self._n_cached, n_tensors=len(self.refs),
        )

    def _emit_progress(self) -> None:
        cb = self._on_progress
        if cb is None:
            return
        with self._lock:
            p = self._progress_locked()
        try:
            cb(p)
        except Exception as exc:
            self.callback_errors.append(f"on_progress: {type(exc).__name__}: {exc}")


def _load(ref: TensorRef) -> Any:
    """The tensor for the analyzers, float32 on the CPU. A safetensors BF16 tensor is read as
    stored and widened by `core.bf16_to_float32` (a bit shift in numpy, ten times faster
    than torch's conversion), once for all the analyzers of the task."""
    if ref.dtype == "BF16":
        from wstui.checkpoint.safetensors import SafetensorsReader

        if isinstance(ref.reader, SafetensorsReader):
            import torch

            return core.bf16_to_float32(ref.load("cpu", dtype=torch.bfloat16))
    return ref.load("cpu")


def _kind(heavy: bool) -> str:
    return "heavy" if heavy else "light"


def _scan_order(refs: Sequence[TensorRef]) -> dict[str, int]:
    """Position of each tensor in layer-tree order (checkpoint order when naming is absent)."""
    try:
        from wstui.checkpoint.naming import tree_order

        ordered = tree_order(list(refs))
    except Exception:
        ordered = list(refs)
    pos = {r.name: i for i, r in enumerate(ordered)}
    for r in refs:
        pos.setdefault(r.name, len(pos))
    return pos


def _check_device(device: str) -> None:
    """Refuse a device this torch cannot use (one line, before any work starts)."""
    kind = device.split(":")[0]
    if kind == "cpu":
        return  # every torch has it: no import (a scan served from the cache needs no torch)
    import torch

    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available to this torch")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r}: MPS is not available to this torch")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda or mps)")


class _BlasThreads:
    """The thread count of the BLAS library numpy brings (OpenBLAS: one pool per process, unlike
    torch's per-thread setting), switched with threadpoolctl and restored when the scan ends.
    Without threadpoolctl it does nothing. (No analyzer calls scipy's BLAS: importing
    scipy.linalg only to reach it cost 0.15 s of every fresh `wstui scan`.)"""

    def __init__(self) -> None:
        self._controller: Any = None
        self._original: Any = None
        self._current: int | None = None

    def set(self, n: int) -> None:
        if n == self._current:
            return
        try:
            if self._controller is None:
                import numpy  # noqa: F401  (loads its BLAS, so the controller sees it)
                from threadpoolctl import ThreadpoolController

                self._controller = ThreadpoolController()
                self._original = self._controller.info()
            self._controller.limit(limits=n, user_api="blas")
        except Exception:  # no threadpoolctl, or a BLAS it cannot drive: leave BLAS alone
            self._controller = False
        self._current = n

    def restore(self) -> None:
        if not self._controller or self._original is None or self._current is None:
            return
        try:
            for lib, info in zip(self._controller.lib_controllers, self._original):
                if info.get("user_api") == "blas":
                    lib.set_num_threads(info["num_threads"])
        except Exception:
            pass
        self._current = None


def warm_up_linalg(device: str) -> None:
    """Load torch's GPU linear-algebra backend once, from one thread: its lazy loader raises
    "lazy wrapper should be called at most once" when worker threads race to the first call
    (seen on an H200: 15 of 57 demo tensors failed their spectral analysis in a fresh process)."""
    try:
        import torch

        eye = torch.eye(2, device=device)
        torch.linalg.eigvalsh(eye)
        torch.linalg.svdvals(eye)
    except Exception:  # no usable device: the workers report it per tensor
        pass


def _set_threads(n: int) -> None:
    """torch's intra-op threads for the calling thread (OpenMP/MKL keep them per thread)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _is_oom(message: str | None) -> bool:
    if not message:
        return False
    low = message.lower()
    return "outofmemory" in low or "out of memory" in low


def _to_device(x: Any, device: str) -> tuple[Any, str]:
    try:
        return x.to(device), device
    except Exception as exc:
        if _is_oom(f"{type(exc).__name__}: {exc}"):
            _empty_cache()
            return x, "cpu"
        raise


def _to_cpu(x: Any) -> tuple[Any, str]:
    y = x.to("cpu")
    del x
    _empty_cache()
    return y, "cpu"


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"
