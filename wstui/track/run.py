"""A training run's checkpoints as one series: plan, compute (here or on a Ray cluster), assemble.

Why it looks like this:
- A tensor whose values are those of the previous step (a frozen layer of a fine-tune) is
  analyzed once: every tensor of every step gets a digest first (cached per file and tensor,
  so a rerun does not read the weights again), and a step's unchanged tensors take the
  previous step's results.
- The changed tensors of a step are scanned by the scan engine (its pool, its cache), then
  each is compared with the previous and the first step (`analyzers.compare`; rel_change
  always, the spectrum of ΔW with `delta` in the methods). Both results are cached, so a run
  cut short redoes nothing that finished.
- On a cluster (`cluster=ADDRESS`) the same digests, scans and compares run as Ray tasks that
  read the files themselves; their results are written into the local cache under the keys
  the local run uses, and the document is assembled from them by the same code.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzers.core import TensorResult
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef
from wstui.track import work
from wstui.track.series import Step, discover

Progress = Callable[[str], None]


@dataclass
class Plan:
    """The opened checkpoints of a run and the tensors followed through it."""

    steps: list[Step]
    ckpts: list[Checkpoint]
    names: list[str]  # analyzable tensors, layer-tree order of the first checkpoint
    refs: list[dict[str, TensorRef]] = field(default_factory=list)  # per step, by name

    def ref(self, i: int, name: str) -> TensorRef:
        return self.refs[i][name]


def open_plan(steps: Sequence[Step], stack: contextlib.ExitStack) -> Plan:
    """Open every checkpoint and check that they hold the same tensors with the same shapes."""
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import tree_order

    ckpts = [stack.enter_context(open_checkpoint(s.path)) for s in steps]
    first = ckpts[0]
    base = {t.name: t for t in first.tensors}
    for s, ck in zip(steps[1:], ckpts[1:]):
        here = {t.name: t for t in ck.tensors}
        missing = [n for n in base if n not in here]
        extra = [n for n in here if n not in base]
        if missing or extra:
            what = (f"lacks tensor {missing[0]!r}" if missing else f"has tensor {extra[0]!r}")
            more = len(missing) + len(extra) - 1
            raise CheckpointError(s.path, f"does not match {steps[0].path}: it {what}"
                                  + (f" (and {more} more differences)" if more else ""))
        for n, t in base.items():
            if tuple(here[n].shape) != tuple(t.shape):
                raise CheckpointError(s.path, f"does not match {steps[0].path}: tensor {n!r} "
                                      f"has shape {list(here[n].shape)} here, "
                                      f"{list(t.shape)} there")
    names = [t.name for t in tree_order(list(first.tensors))
             if t.analyzable and not t.tied_to]
    refs = [{t.name: t for t in ck.tensors} for ck in ckpts]
    return Plan(list(steps), ckpts, names, refs)


@dataclass
class Settings:
    scan_methods: list[str]
    delta: bool
    device: str
    workers: int
    use_cache: bool
    options: dict[str, Any]


@dataclass
class Outcome:
    """What the compute phase produced, by (step index, tensor name)."""

    digests: dict[tuple[int, str], str] = field(default_factory=dict)
    scans: dict[tuple[int, str], TensorResult] = field(default_factory=dict)
    compares: dict[tuple[int, str, str], dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def changed_sets(plan: Plan, digests: Mapping[tuple[int, str], str]) -> list[list[str]]:
    """Per step the tensors whose values differ from the previous step's (all at step 0)."""
    out = [list(plan.names)]
    for i in range(1, len(plan.steps)):
        out.append([n for n in plan.names if digests[(i, n)] != digests[(i - 1, n)]])
    return out


def compare_jobs(plan: Plan, changed: Sequence[Sequence[str]]) -> list[tuple[int, str, str]]:
    """(step, tensor, against) for every changed tensor after the first step: against the
    previous step ("prev") and the first ("first"; the same compare at step 1)."""
    jobs = []
    for i in range(1, len(plan.steps)):
        for n in changed[i]:
            jobs.append((i, n, "prev"))
            if i > 1:
                jobs.append((i, n, "first"))
    return jobs


def against(i: int, side: str) -> int:
    return i - 1 if side == "prev" else 0


# ----------------------------------------------------------------------------- local compute
def compute_local(plan: Plan, st: Settings, progress: Progress) -> Outcome:
    out = Outcome()
    cache = work.open_cache(st.use_cache)
    # digests: from the cache, else read and hashed on the workers' threads
    todo = []
    for i in range(len(plan.steps)):
        for n in plan.names:
            d = work.cached_digest(cache, plan.ref(i, n))
            if d is None:
                todo.append((i, n))
            else:
                out.digests[(i, n)] = d
    progress(f"hashing {len(todo)} tensors" if todo else "digests from the cache")

    def hash_one(job: tuple[int, str]) -> str:
        return work.digest(plan.ref(*job))

    for job, d in zip(todo, work.thread_map(hash_one, todo, st.workers)):
        out.digests[job] = d
        work.put_digest(cache, plan.ref(*job), d)
    changed = changed_sets(plan, out.digests)

    cached = 0
    for i, names in enumerate(changed):
        if not names or not st.scan_methods:
            continue
        progress(f"step {plan.steps[i].step}: scanning {len(names)} tensors")
        refs = [plan.ref(i, n) for n in names]
        results, n_cached = work.scan_tensors(
            plan.ckpts[i], refs, methods=st.scan_methods, device=st.device,
            workers=st.workers, use_cache=st.use_cache, options=st.options)
        cached += n_cached
        for n, r in results.items():
            out.scans[(i, n)] = r

    jobs = compare_jobs(plan, changed)
    need = []
    for job in jobs:
        i, n, side = job
        hit = work.cached_compare(cache, plan.ref(against(i, side), n), plan.ref(i, n),
                                  delta=st.delta, options=st.options, device=st.device)
        if hit is None:
            need.append(job)
        else:
            out.compares[job] = hit
    if need:
        progress(f"comparing {len(need)} tensors with earlier steps")

    def compare_one(job: tuple[int, str, str]) -> dict[str, Any]:
        i, n, side = job
        return work.compare_tensors(plan.ref(against(i, side), n), plan.ref(i, n),
                                    delta=st.delta, options=st.options, device=st.device)

    with _compare_threads(st.workers):
        for job, m in zip(need, work.thread_map(compare_one, need, st.workers)):
            out.compares[job] = m
            i, n, side = job
            work.put_compare(cache, plan.ref(against(i, side), n), plan.ref(i, n), m,
                             delta=st.delta, options=st.options, device=st.device)
    if cache is not None:
        cache.flush()
    out.counts = {"hashed": len(todo), "scans_cached": cached,
                  "compares_computed": len(need)}
    return out


@contextlib.contextmanager
def _compare_threads(workers: int) -> Any:
    """torch's threads for the compares: cores shared among the workers (put back after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, work.cpu_count() // max(1, workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- the run
def settings(methods: Sequence[str] | None, device: str, workers: int | None, use_cache: bool,
             options: Mapping[str, Any] | None) -> Settings:
    scan_methods, delta = work.split_methods(methods)
    return Settings(scan_methods, delta, device, int(workers or work.cpu_count()), use_cache,
                    dict(options or {}))


def track(
    paths: Sequence[str | Path], *, order: str = "step", methods: Sequence[str] | None = None,
    device: str = "auto", workers: int | None = None, use_cache: bool = True,
    options: Mapping[str, Any] | None = None, cluster: str | None = None,
    progress: Progress | None = None, executor: Any = None,
) -> dict[str, Any]:
    """The `wstui.track/1` document of a run (see docs/schemas/track.md).

    `cluster`: a Ray address (`executor`: an already made `RayExecutor`, e.g. in tests).
    Raises CheckpointError (bad input, one line) or ValueError (bad option, one line)."""
    from wstui.track.document import build

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    steps = discover(list(paths), order)
    with contextlib.ExitStack() as stack:
        plan = open_plan(steps, stack)
        if cluster is not None or executor is not None:
            from wstui.track.ray_exec import RayExecutor, compute_cluster

            if executor is None:
                executor = stack.enter_context(RayExecutor.connect(cluster))
            st = settings(methods, executor.resolve_device(device), workers, use_cache,
                          options)
            out = compute_cluster(plan, st, executor, say)
            where = {"executor": "ray", "address": executor.address}
        else:
            st = settings(methods, work.resolve_device(device), workers, use_cache, options)
            out = compute_local(plan, st, say)
            where = {"executor": "local"}
        doc = build(plan, st, out)
    doc["run"] = {**where, "elapsed_s": time.perf_counter() - t0, **out.counts}
    return doc


def median(values: Sequence[Any]) -> float | None:
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
          and math.isfinite(v)]
    return statistics.median(xs) if xs else None
