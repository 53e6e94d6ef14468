"""`--cluster ADDRESS`: the per-(checkpoint, tensor) tasks of `wstui track` and `wstui scan` on
a Ray cluster. Imported only when a cluster is asked for: the local engine never imports Ray.

- Workers read the tensors themselves from storage shared by path (the task carries the path
  and the tensor names, never an array); they need wstui installed (`pip install wstui[ray]`).
- A task is one tensor of one checkpoint; small tensors of a checkpoint ride together (one
  task per about `BUNDLE_NUMEL` elements), so a norm vector does not cost a task of its own.
- Results come back as small documents (the engine's per-analyzer fragments, the compares,
  the digests) and go into the local result cache under the keys the local run reads: a task
  whose results are cached is never submitted again, so a run cut short resumes where it was.
- A task whose worker dies is retried by Ray (`MAX_RETRIES`); a task on a CUDA device asks for
  a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from analyzers.core import TensorResult
from wstui.track import work

EXTRA_HINT = "--cluster needs Ray, an optional extra: pip install 'wstui[ray]'"
MAX_RETRIES = 3
#: small tensors of one checkpoint are bundled into tasks of about this many elements
BUNDLE_NUMEL = 1 << 20
#: digest tasks read about this many bytes each
DIGEST_BYTES = 1 << 28


class ClusterError(ValueError):
    """The cluster cannot be used (no Ray, unreachable, a task failed); one line."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(EXTRA_HINT) from None
    return ray


class RayExecutor:
    """Runs task specs (see `work.run_task`) on a Ray cluster and hands each result back as
    it lands. `task` replaces `work.run_task` (tests)."""

    def __init__(self, ray: Any, address: str | None, *, task: Callable[..., Any] | None = None,
                 max_retries: int = MAX_RETRIES) -> None:
        self.ray = ray
        self.address = address or "(this process's Ray)"
        self._remote = ray.remote(max_retries=max_retries, retry_exceptions=False)(
            task or work.run_task)
        self.submitted = 0

    @classmethod
    @contextlib.contextmanager
    def connect(cls, address: str | None, **kwargs: Any) -> Iterator[RayExecutor]:
        """Join the cluster at `address` (`RAY_ADDRESS` when None); leave it afterwards. A Ray
        already initialized in this process is used as it is, and left running."""
        ray = import_ray()
        owned = not ray.is_initialized()
        if owned:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR)
            except Exception as exc:
                msg = " ".join(str(exc).split())[:300]
                raise ClusterError(f"cannot join the Ray cluster at {address}: {msg}") from None
        try:
            yield cls(ray, address, **kwargs)
        finally:
            if owned:
                ray.shutdown()

    def resolve_device(self, device: str) -> str:
        gpus = float(self.ray.cluster_resources().get("GPU", 0))
        kind = device.split(":")[0]
        if kind == "auto":
            return "cuda" if gpus > 0 else "cpu"
        if kind == "cuda" and gpus <= 0:
            raise ClusterError(f"--device {device}: the Ray cluster at {self.address} has no GPU")
        if kind not in ("cpu", "cuda"):
            raise ClusterError(f"--device {device} is not available on a Ray cluster "
                               "(use auto, cpu or cuda)")
        return device

    def map(self, specs: Sequence[Mapping[str, Any]],
            on_done: Callable[[Mapping[str, Any], Mapping[str, Any]], None]) -> None:
        """Submit every spec, call `on_done(spec, result)` as each lands. Ctrl-C cancels the
        tasks still out; a task that fails after its retries is one line (ClusterError)."""
        ray = self.ray
        pending: dict[Any, Mapping[str, Any]] = {}
        for spec in specs:
            gpu = spec["kind"] == "analyze" and str(spec.get("device", "")).startswith("cuda")
            ref = self._remote.options(num_cpus=1, num_gpus=1 if gpu else 0).remote(dict(spec))
            pending[ref] = spec
        self.submitted += len(pending)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    spec = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:
                        where = f"{spec['path']} ({', '.join(spec['names'][:2])}"
                        where += ", ...)" if len(spec["names"]) > 2 else ")"
                        raise ClusterError(f"a cluster task failed on {where}: "
                                           f"{_one_line(exc)}") from None
                    on_done(spec, result)
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def _one_line(exc: BaseException) -> str:
    """The last line of a task's error (Ray wraps the worker's traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def bundles(refs: Sequence[Any], limit: int = BUNDLE_NUMEL) -> list[list[str]]:
    """Tensor names in tasks: a big tensor alone, small ones together up to `limit` elements."""
    out: list[list[str]] = []
    group: list[str] = []
    size = 0
    for r in refs:
        if r.numel >= limit:
            out.append([r.name])
            continue
        if group and size + r.numel > limit:
            out.append(group)
            group, size = [], 0
        group.append(r.name)
        size += r.numel
    if group:
        out.append(group)
    return out


def _digest_groups(refs: Sequence[Any]) -> list[list[str]]:
    out: list[list[str]] = []
    group: list[str] = []
    size = 0
    for r in refs:
        if group and size + r.nbytes > DIGEST_BYTES:
            out.append(group)
            group, size = [], 0
        group.append(r.name)
        size += r.nbytes
    if group:
        out.append(group)
    return out


# ----------------------------------------------------------------------------- wstui track
def compute_cluster(plan: Any, st: Any, executor: RayExecutor,
                    progress: Callable[[str], None]) -> Any:
    """The `Outcome` of a run (see `wstui.track.run`), computed by cluster tasks."""
    from wstui.track.run import Outcome, against, changed_sets

    out = Outcome()
    cache = work.open_cache(st.use_cache)
    t0 = time.perf_counter()
    n_before = executor.submitted
    specs = []
    for i, step in enumerate(plan.steps):
        missing = []
        for n in plan.names:
            d = work.cached_digest(cache, plan.ref(i, n))
            if d is None:
                missing.append(plan.ref(i, n))
            else:
                out.digests[(i, n)] = d
        specs += [{"kind": "digest", "path": str(step.path), "step": i, "names": g}
                  for g in _digest_groups(missing)]

    def digest_done(spec: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        i = spec["step"]
        for n, d in result["digests"].items():
            out.digests[(i, n)] = d
            work.put_digest(cache, plan.ref(i, n), d)

    if specs:
        progress(f"hashing on the cluster: {len(specs)} tasks")
    executor.map(specs, digest_done)
    changed = changed_sets(plan, out.digests)

    specs = []
    n_cached = 0
    for i, names in enumerate(changed):
        todo = []
        for n in names:
            ref = plan.ref(i, n)
            hit = work.cached_scan(cache, ref, st.scan_methods, st.options, st.device)
            sides = [] if i == 0 else ["prev"] if i == 1 else ["prev", "first"]
            cmps = {s: work.cached_compare(cache, plan.ref(against(i, s), n), ref,
                                           delta=st.delta, options=st.options, device=st.device)
                    for s in sides}
            if hit is None or any(c is None for c in cmps.values()):
                todo.append(ref)
                continue
            n_cached += 1
            out.scans[(i, n)] = hit
            for s, c in cmps.items():
                out.compares[(i, n, s)] = c
        for names_ in bundles(todo):
            specs.append({
                "kind": "analyze", "path": str(plan.steps[i].path), "step": i, "names": names_,
                "methods": st.scan_methods, "options": st.options, "device": st.device,
                "delta": st.delta,
                "prev": str(plan.steps[i - 1].path) if i >= 1 else None,
                "first": str(plan.steps[0].path) if i >= 2 else None,
            })

    def analyze_done(spec: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        i = spec["step"]
        for n, entry in result["results"].items():
            ref = plan.ref(i, n)
            frags = {m: TensorResult.from_dict(d) for m, d in entry["fragments"].items()}
            merged = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
            for f in frags.values():
                merged.merge(f)
            out.scans[(i, n)] = merged
            work.put_scan(cache, ref, frags, st.options, st.device)
            for side in ("prev", "first"):
                if side in entry:
                    out.compares[(i, n, side)] = entry[side]
                    work.put_compare(cache, plan.ref(against(i, side), n), ref, entry[side],
                                     delta=st.delta, options=st.options, device=st.device)

    if specs:
        progress(f"analyzing on the cluster: {len(specs)} tasks")
    executor.map(specs, analyze_done)
    if cache is not None:
        cache.flush()
    out.counts = {"tasks": executor.submitted - n_before, "tensor_steps_cached": n_cached,
                  "cluster_s": time.perf_counter() - t0}
    return out


# ----------------------------------------------------------------------------- wstui scan
def scan_cluster(ckpt: Any, refs: Sequence[Any], *, methods: Sequence[str],
                 options: Mapping[str, Any], device: str, use_cache: bool,
                 executor: RayExecutor) -> tuple[dict[str, TensorResult], int]:
    """One checkpoint's tensors scanned by cluster tasks: (results by name, tensors whose
    results were all in the cache)."""
    cache = work.open_cache(use_cache)
    results: dict[str, TensorResult] = {}
    todo = []
    for ref in refs:
        hit = work.cached_scan(cache, ref, methods, options, device)
        if hit is None:
            todo.append(ref)
        else:
            results[ref.name] = hit
    n_cached = len(results)
    specs = [{"kind": "analyze", "path": str(ckpt.path), "names": names, "methods": list(methods),
              "options": dict(options), "device": device, "delta": False}
             for names in bundles(todo)]

    def done(spec: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        for n, entry in result["results"].items():
            ref = ckpt.tensor(n)
            frags = {m: TensorResult.from_dict(d) for m, d in entry["fragments"].items()}
            merged = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
            for f in frags.values():
                merged.merge(f)
            results[n] = merged
            work.put_scan(cache, ref, frags, options, device)

    executor.map(specs, done)
    if cache is not None:
        cache.flush()
    return results, n_cached
