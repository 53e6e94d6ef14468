"""A training run's checkpoints as one series: plan, compute (here or on a Ray cluster), assemble.

Why it looks like this:
- A tensor whose values are those of the previous step (a frozen layer of a fine-tune) is
  analyzed once. First each tensor is followed through the run, each step read once
  (`work.change_chain`): equal to the previous step or not (bitwise), and the change against
  the previous and the first step, from the tensors in hand. A hash per tensor and step cost
  more than the scans of the changed tensors on the MiniLM run (bench/bench_track.py).
- Then the changed tensors of each step are scanned by the scan engine (its pool, its cache);
  a step's unchanged tensors take the previous step's results. Chains and scans are cached,
  so a run cut short redoes nothing that finished.
- On a cluster (`cluster=ADDRESS`) the same chains and scans run as Ray tasks that read the
  files themselves; their results go into the local cache under the keys the local run uses,
  and the document is assembled from them by the same code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzers.core import TensorResult
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef
from wstui.checkpoint.series import Step, discover
from wstui.engine import track_work as work
from wstui.engine.placement import cpu_count

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
    """What the compute phase produced: per tensor its change chain (one entry per step, see
    `work.change_chain`), per (step index, tensor) the scan result of the changed ones."""

    chains: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scans: dict[tuple[int, str], TensorResult] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def changed_sets(plan: Plan, chains: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[list[str]]:
    """Per step the tensors to analyze: those whose values differ from the previous step's
    (all at step 0; a step that could not be read is not analyzed)."""
    return [[n for n in plan.names if not chains[n][i].get("same") and "error" not in chains[n][i]]
            for i in range(len(plan.steps))]


def chain_refs(plan: Plan, name: str) -> list[TensorRef]:
    return [plan.ref(i, name) for i in range(len(plan.steps))]


# ----------------------------------------------------------------------------- local compute
def compute_local(plan: Plan, st: Settings, progress: Progress) -> Outcome:
    out = Outcome()
    cache = work.open_cache(st.use_cache)
    todo = []
    for n in plan.names:
        hit = work.cached_chain(cache, chain_refs(plan, n), delta=st.delta, options=st.options,
                                device=st.device)
        if hit is None:
            todo.append(n)
        else:
            out.chains[n] = hit
    if todo:
        progress(f"following {len(todo)} tensors through {len(plan.steps)} steps")

    threads = max(1, cpu_count() // max(1, st.workers))

    def chain_one(name: str) -> list[dict[str, Any]]:
        work.set_threads(threads)
        refs = chain_refs(plan, name)
        chain = work.change_chain(refs, delta=st.delta, options=st.options, device=st.device)
        work.put_chain(cache, refs, chain, delta=st.delta, options=st.options, device=st.device)
        return chain

    with _torch_threads(threads):
        for n, chain in zip(todo, work.thread_map(chain_one, todo, st.workers)):
            out.chains[n] = chain
    cached = 0
    for i, names in enumerate(changed_sets(plan, out.chains)):
        if not names or not st.scan_methods:
            continue
        progress(f"step {plan.steps[i].step}: scanning {len(names)} tensors")
        results, n_cached = work.scan_tensors(
            plan.ckpts[i], [plan.ref(i, n) for n in names], methods=st.scan_methods,
            device=st.device, workers=st.workers, use_cache=st.use_cache, options=st.options)
        cached += n_cached
        for n, r in results.items():
            out.scans[(i, n)] = r
    if cache is not None:
        cache.flush()
    out.counts = {"chains_computed": len(todo), "scans_cached": cached}
    return out


@contextlib.contextmanager
def _torch_threads(threads: int) -> Any:
    """torch's threads while the chains run (put back after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- the run
def settings(methods: Sequence[str] | None, device: str, workers: int | None, use_cache: bool,
             options: Mapping[str, Any] | None) -> Settings:
    scan_methods, delta = work.split_methods(methods)
    return Settings(scan_methods, delta, device, int(workers or cpu_count()), use_cache,
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
    from wstui.documents.track import build

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    steps = discover(list(paths), order)
    with contextlib.ExitStack() as stack:
        plan = open_plan(steps, stack)
        if cluster is not None or executor is not None:
            from wstui.engine.ray_exec import RayExecutor

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


def compute_cluster(plan: Any, st: Any, executor: Any,
                    progress: Callable[[str], None]) -> Any:
    """The `Outcome` of a run (see `wstui.engine.track`), computed by cluster tasks: the change
    chains (tensors bundled), then the scans of each step's changed tensors."""
    from wstui.engine.ray_exec import SCAN_BUNDLE_NUMEL, bundles, land

    out = Outcome()
    cache = work.open_cache(st.use_cache)
    t0 = time.perf_counter()
    n_before = executor.submitted
    todo = []
    for n in plan.names:
        hit = work.cached_chain(cache, chain_refs(plan, n), delta=st.delta, options=st.options,
                                device=st.device)
        if hit is None:
            todo.append(plan.ref(0, n))
        else:
            out.chains[n] = hit
    paths = [str(s.path) for s in plan.steps]
    specs = [{"kind": "changes", "paths": paths, "path": paths[0], "names": names,
              "delta": st.delta, "options": st.options, "device": st.device}
             for names in bundles(todo)]

    def chains_done(spec: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        for n, chain in result["chains"].items():
            out.chains[n] = chain
            work.put_chain(cache, chain_refs(plan, n), chain, delta=st.delta,
                           options=st.options, device=st.device)

    if specs:
        progress(f"following {len(todo)} tensors on the cluster: {len(specs)} tasks")
    executor.map(specs, chains_done)

    specs = []
    n_cached = 0
    for i, names in enumerate(changed_sets(plan, out.chains)):
        if not st.scan_methods:
            break
        refs = []
        for n in names:
            hit = work.cached_scan(cache, plan.ref(i, n), st.scan_methods, st.options,
                                   st.device)
            if hit is None:
                refs.append(plan.ref(i, n))
            else:
                n_cached += 1
                out.scans[(i, n)] = hit
        specs += [{"kind": "analyze", "path": str(plan.steps[i].path), "step": i,
                   "names": names_, "methods": st.scan_methods, "options": st.options,
                   "device": st.device} for names_ in bundles(refs, SCAN_BUNDLE_NUMEL)]

    def analyze_done(spec: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        i = spec["step"]
        for n, frag_dicts in result["results"].items():
            out.scans[(i, n)] = land(cache, plan.ref(i, n), frag_dicts, st)

    if specs:
        progress(f"scanning on the cluster: {len(specs)} tasks")
    executor.map(specs, analyze_done)
    if cache is not None:
        cache.flush()
    out.counts = {"tasks": executor.submitted - n_before, "chains_computed": len(todo),
                  "scans_cached": n_cached, "cluster_s": time.perf_counter() - t0}
    return out
