"""The one worker pool behind every job: scans, diffs, the quantization study, model tasks.

Why it looks like this:
- One priority heap of tasks. A task works on one unit (a tensor, a pair, a whole model) and
  carries a cost (for the ETA), a number of slots and a function to run. The plans (scan.py,
  diff.py, study.py, model.py) decide which tasks there are and in what order; the pool only
  runs them, always the head of the heap once it has its slots.
- Threads, not processes: torch and LAPACK release the GIL, and threads share the open files.
- A small task takes one slot and runs single-threaded beside others. A task may also carry
  the bytes it holds while it runs (`mem`); a plan that sets a budget (`mem_budget`) gets
  tasks started only while their bytes fit in it. A task that takes every slot runs alone on
  all cores (torch's thread count is set per worker thread, before each task); every other
  task runs single-threaded. The scan (`tensor_slots`): on the CPU, big tensors run side by
  side single-threaded while their bytes fit the budget (a 0.5B checkpoint's spectral scan on
  2 cores: 14.2 s one at a time on both cores, 8.6 s two at a time, since LAPACK's eigvalsh
  gains little from a second thread), and alone on every core when one needs more than half
  the budget; on a GPU a big tensor runs alone (device memory).
  A model-scope task takes every slot: the whole model is resident on one worker, alone.
- `prioritize` moves a unit's pending tasks to the front (the app's selection); a plan may add
  tasks while running (a diff's spectral pass, `request`).
- `cancel` drops every pending task at once; running ones stop at their next check (between
  analyzers, between a model task's steps), so workers stop within a second.
- One progress type (`Progress`), its ETA learned per kind of task ("light" elementwise work,
  "heavy" spectra and model passes) at each kind's own measured rate.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from analyzers.core import TensorResult
from wstui.engine.jobs import BackgroundJob
from wstui.engine.placement import (
    BlasThreads,
    cpu_count,
    loaded_torch,
    matrix_sizes,
    set_threads,
)
from wstui.engine.progress import Progress

#: tensors with at least this many elements are big: on a GPU they run alone, on every core;
#: on the CPU they run side by side within the memory budget (see module docstring)
BIG_NUMEL = 1 << 21

KINDS = ("heavy", "light")


def task_cost(shape: tuple[int, ...], heavy: bool, n_methods: int = 1) -> float:
    """A task's cost in the ETA's units: a spectrum ~ small²·large + 4·small³ (the Gram and
    its eigendecomposition), elementwise work ~ 1000 per element and method."""
    sizes = matrix_sizes(shape)
    n = max(1, math.prod(int(s) for s in shape))
    if heavy and sizes is not None:
        _, small, large = sizes
        return float(small) * small * large + 4.0 * small**3 + n
    return 1000.0 * n * n_methods


def tensor_mem(shape: tuple[int, ...], heavy: bool) -> float:
    """Bytes a task on one tensor holds at its peak: the float32 copy, and for a spectrum the
    float64 row chunk (at most 2^23 values) and the Gram matrix with eigvalsh's workspace
    (about three small x small float64 matrices); for elementwise work its samples and
    scratch (a 2^24-value sample with its group index, a k-means sample), counted as the
    tensor's size again up to 200 MB."""
    sizes = matrix_sizes(shape)
    own = 4.0 * max(1, math.prod(int(s) for s in shape))
    if heavy and sizes is not None:
        n, small, _ = sizes
        return own + 8.0 * min(n, 1 << 23) + 3 * 8.0 * small * small
    return own + min(own, 200e6)


def tensor_slots(numel: int, mem: float, workers: int, device: str, budget: float) -> int:
    """Slots of a task on one tensor: 1, or every slot for a big tensor on a GPU, or for one
    that needs more than half the CPU memory budget (it runs alone, on all cores)."""
    if numel < BIG_NUMEL:
        return 1
    if device != "cpu" or 2 * mem > budget:
        return workers
    return 1


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


@dataclass(eq=False)
class Task:
    """One unit of work: `run(task)` on a worker thread once the task has its slots."""

    seq: int
    unit: str  # the tensor, pair or model it works on (prioritize and pending lists use it)
    label: str  # what progress shows as current
    phase: str  # "cheap" | "heavy" | "request" | "model"
    kind: str  # "light" | "heavy": the ETA's cost class
    cost: float
    slots: int
    run: Callable[[Task], None]
    payload: Any = None
    mem: float = 0.0  # bytes held while running, against the pool's `mem_budget`
    key: tuple[Any, ...] = ()
    state: str = "pending"  # pending | running | done | dropped


class Pool(BackgroundJob):
    """The scheduler; a plan subclasses it and supplies `_plan` (queue the first tasks) and
    `report`. `start`/`run`/`wait`/`done`/`cancelled` come from BackgroundJob."""

    _kind = "job"

    def _init_pool(self, *, device: str, workers: int | None) -> None:
        self.device = device
        self.cores = cpu_count()
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = int(workers) if workers else self.cores
        self.callback_errors: list[str] = []
        self.task_errors: list[str] = []  # a bug outside the analyzers, per task
        self.error: str | None = None  # set when the job could not even be prepared
        self._lock = threading.Condition()
        self._heap: list[tuple[tuple[Any, ...], int, Task]] = []
        self._pending: dict[str, list[Task]] = {}
        self._seq = itertools.count()
        self._bump = itertools.count(1)
        self._early: list[Callable[[], None]] = []
        self._free_slots = self.workers
        self.mem_budget: float | None = None  # bytes for running tasks' `mem`; None: no limit
        self._mem_used = 0.0
        self._alive = 0
        self._running: dict[int, Task] = {}
        self._n_tasks = 0
        self._n_done = 0
        self._cost_total = 0.0
        self._cost_done = 0.0
        # per kind of task: cost units queued and done, and the task-seconds the done ones
        # took, so that the ETA learns each kind's own rate (one cost model for both was off
        # by 2x on the MiniLM: issue 15.12)
        self._kind_cost = dict.fromkeys(KINDS, 0.0)
        self._kind_done = dict.fromkeys(KINDS, 0.0)
        self._kind_secs = dict.fromkeys(KINDS, 0.0)
        self._n_cached = 0
        self._current: str | None = None
        self._phase = "cache"
        self._prepared = False
        self._init_job()
        self._t_end: float | None = None
        self._loads_in_flight = 0
        self.max_loads_in_flight = 0
        self._blas = BlasThreads()
        self._torch_threads0 = 0

    # ----------------------------------------------------------------- for the plans
    def _plan(self) -> None:  # pragma: no cover - abstract
        """Queue the first tasks (on the prepare thread; may deliver cached results)."""
        raise NotImplementedError

    def _n_units(self) -> int:
        """How many tensors (pairs, ...) the job covers, for `Progress.n_tensors`."""
        return 0

    def _on_idle_locked(self) -> None:
        """Hook: every task is done or dropped (e.g. flush the cache)."""

    def _add_task_locked(
        self, unit: str, run: Callable[[Task], None], *, label: str, phase: str, kind: str,
        cost: float, slots: int, prio: tuple[Any, ...], payload: Any = None,
        counted: bool = False, mem: float = 0.0,
    ) -> Task:
        """Queue a task at priority `prio` (lower first). `counted`: its place in the totals
        was reserved earlier (`_reserve_locked`). `mem`: the bytes it holds while running."""
        t = Task(next(self._seq), unit, label, phase, kind, cost, slots, run, payload, mem)
        self._pending.setdefault(unit, []).append(t)
        self._push_locked(t, (*prio, t.seq))
        if not counted:
            self._reserve_locked(cost, kind)
        return t

    def _reserve_locked(self, cost: float, kind: str) -> None:
        """Count a task that will be queued later (progress totals are known up front)."""
        self._n_tasks += 1
        self._cost_total += cost
        self._kind_cost[kind] += cost

    def _unreserve_locked(self, cost: float, kind: str) -> None:
        """A reserved task will not run after all."""
        self._n_tasks -= 1
        self._cost_total -= cost
        self._kind_cost[kind] -= cost

    def _count_done_locked(self, cost: float, kind: str, seconds: float) -> None:
        """A reserved step done inside another task (no task of its own ran)."""
        self._n_done += 1
        self._cost_done += cost
        self._kind_done[kind] += cost
        self._kind_secs[kind] += seconds

    def _push_locked(self, t: Task, key: tuple[Any, ...]) -> None:
        t.key = key
        heapq.heappush(self._heap, (key, t.seq, t))

    def _prioritize_unit(self, unit: str) -> None:
        """Every pending task of `unit` to the front, cheap before heavy; before the plan is
        queued, remembered and done right after."""
        with self._lock:
            if not self._prepared:
                self._early.append(lambda: self._prioritize_unit(unit))
                return
            bump = next(self._bump)
            for t in self._pending.get(unit, []):
                self._push_locked(t, (0, -bump, 0 if t.phase == "cheap" else 1, t.seq))
            self._lock.notify_all()

    def _wake_locked(self) -> None:
        """Tasks were added after the start: make sure workers run them."""
        self._done_evt.clear()
        self._spawn_workers_locked()
        self._lock.notify_all()

    @contextlib.contextmanager
    def resident(self) -> Iterator[None]:
        """Around a task's loaded tensors: counts them (at most one task's per worker)."""
        with self._lock:
            self._loads_in_flight += 1
            self.max_loads_in_flight = max(self.max_loads_in_flight, self._loads_in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._loads_in_flight -= 1

    def _deliver(self, name: str, snapshot: TensorResult | None) -> None:
        """Hand a result to the consumer; a broken consumer never stops the job."""
        cb = self._on_result
        if cb is None or snapshot is None:
            return
        try:
            cb(name, snapshot)
        except Exception as exc:
            self.callback_errors.append(f"on_result: {type(exc).__name__}: {exc}")

    def _set_step(self, label: str | None) -> None:
        """What a running model-scope task is doing now (shown as `current`)."""
        with self._lock:
            self._current = label
        self._emit_progress()

    # ----------------------------------------------------------------- lifecycle
    def _note_torch_threads(self) -> None:
        torch = loaded_torch()
        if not self._torch_threads0 and torch is not None:
            self._torch_threads0 = torch.get_num_threads()

    def _before_start(self) -> None:
        self._note_torch_threads()

    def _prepare(self) -> None:
        try:
            self._plan()
        except Exception as exc:  # never leave waiters hanging
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
                self._prepared = True
                self._maybe_done_locked()
            return
        with self._lock:
            self._prepared = True
            early, self._early = self._early, []
        for action in early:
            action()
        self._emit_progress()
        with self._lock:
            self._spawn_workers_locked()
            self._maybe_done_locked()

    def cancel(self) -> None:
        """No new task starts; running ones stop at their next check. Returns at once."""
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

    def progress(self) -> Progress:
        with self._lock:
            return self._progress_locked()

    # ----------------------------------------------------------------- workers
    def _spawn_workers_locked(self) -> None:
        want = min(self.workers, sum(len(v) for v in self._pending.values()))
        while self._alive < want:
            self._alive += 1
            threading.Thread(target=self._worker, name=f"wstui-{self._kind}-{self._alive}",
                             daemon=True).start()

    def _next_task_locked(self) -> Task | None:
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
            if self._free_slots >= need and self._mem_fits_locked(t):
                heapq.heappop(self._heap)
                t.state = "running"
                self._free_slots -= need
                self._mem_used += t.mem
                # numpy/scipy's BLAS keeps one thread count for the whole process. Safe to
                # switch here: a task with every slot runs alone, and all others want the same
                # count (one thread each when there are as many workers as cores).
                self._blas.set(self._threads_for(t))
                self._pending[t.unit].remove(t)
                if not self._pending[t.unit]:
                    del self._pending[t.unit]
                self._running[t.seq] = t
                self._current = t.label
                if t.phase != "request":
                    self._phase = t.phase
                return t
            self._lock.wait(0.5)

    def _mem_fits_locked(self, t: Task) -> bool:
        """Whether `t`'s bytes fit beside the running tasks' (a task alone always fits)."""
        if self.mem_budget is None or not t.mem or not self._running:
            return True
        return self._mem_used + t.mem <= self.mem_budget

    def _worker(self) -> None:
        threads_now = 0
        torch_was = False
        try:  # whatever goes wrong, the finally below counts this worker out
            with self._lock:
                self._note_torch_threads()
            while True:
                with self._lock:
                    task = self._next_task_locked()
                    if task is None:
                        return
                self._emit_progress()
                want = self._threads_for(task)
                torch_now = loaded_torch() is not None  # a CPU scan of safetensors: never
                if want != threads_now or torch_now != torch_was:
                    if torch_now and not torch_was:
                        with self._lock:
                            self._note_torch_threads()
                    set_threads(want)
                    threads_now, torch_was = want, torch_now
                t_task = time.perf_counter()
                try:
                    task.run(task)
                except Exception as exc:  # a bug in a plan: record it, the job goes on
                    self.task_errors.append(f"{task.label}: {type(exc).__name__}: {exc}")
                finally:
                    with self._lock:
                        task.state = "done"
                        self._free_slots += min(task.slots, self.workers)
                        self._mem_used -= task.mem
                        self._running.pop(task.seq, None)
                        self._count_done_locked(task.cost, task.kind,
                                                time.perf_counter() - t_task)
                        self._lock.notify_all()
                self._emit_progress()
        finally:
            with self._lock:
                self._alive -= 1
                # a task queued while this worker was on its way out found it still counted
                # as alive and started no other: start one now
                self._spawn_workers_locked()
                self._maybe_done_locked()
            self._emit_progress()

    def _threads_for(self, task: Task) -> int:
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
                set_threads(self._torch_threads0)
            if self._t_end is None:
                self._t_end = time.perf_counter()
            self._on_idle_locked()
            if not self._cancelled:
                self._phase = "done"
            self._current = None
            self._done_evt.set()
            self._lock.notify_all()

    # ----------------------------------------------------------------- progress
    def _elapsed_locked(self) -> float:
        end = self._t_end if self._t_end is not None else time.perf_counter()
        return end - self._t0 if self._started else 0.0

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

    def _progress_locked(self) -> Progress:
        elapsed = self._elapsed_locked()
        eta = None
        if self._cost_done > 0 and self._n_done < self._n_tasks and not self._cancelled:
            eta = self._eta_locked(elapsed)
        elif self._n_done >= self._n_tasks and self._prepared:
            eta = 0.0
        return Progress(
            done=self._n_done, total=self._n_tasks, current=self._current, phase=self._phase,
            elapsed_s=elapsed, eta_s=eta, cached=self._n_cached, n_tensors=self._n_units(),
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
