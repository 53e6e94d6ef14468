"""`--cluster ADDRESS`: the per-(checkpoint, tensor) tasks of `wstui track` and `wstui scan` on
a Ray cluster. Imported only when a cluster is asked for: the local engine never imports Ray.

- Workers read the tensors themselves from storage shared by path (the task carries the path
  and the tensor names, never an array); they need wstui installed (`pip install wstui[ray]`).
- A change task is one tensor through every step (one CPU; small tensors ride together, one
  task per about `BUNDLE_NUMEL` elements). A scan task is tensors of one checkpoint (a big
  one alone, small ones together up to `SCAN_BUNDLE_NUMEL` elements) and asks for a node's
  CPUs: the scan engine inside sizes its threads to the cores it sees (a lone big matrix
  uses all of them), so a task that asked for one CPU ran 2 threads beside another such task
  on 2 cores, and spin-waiting OpenMP threads made the run 7x slower than local.
- Results come back as small documents (the engine's per-analyzer fragments, the change
  chains) and go into the local result cache under the keys the local run reads: a task
  whose results are cached is never submitted again, so a run cut short resumes where it was.
- A task whose worker dies is retried by Ray (`MAX_RETRIES`); a task on a CUDA device asks for
  a GPU.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analyzers.core import TensorResult
from wstui.engine import track_work as work

EXTRA_HINT = "--cluster needs Ray, an optional extra: pip install 'wstui[ray]'"
MAX_RETRIES = 3
#: small tensors of one checkpoint are bundled into tasks of about this many elements
BUNDLE_NUMEL = 1 << 20
#: scan tasks: tensors of one checkpoint up to this many elements
SCAN_BUNDLE_NUMEL = 1 << 24


@dataclass
class _Settings:
    scan_methods: list[str]
    options: dict[str, Any]
    device: str


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
        fn = task or work.run_task
        if not inspect.isfunction(fn):  # e.g. a functools.partial: Ray wants a function
            def call(spec: Mapping[str, Any], _fn: Callable[..., Any] = fn) -> Any:
                return _fn(spec)

            fn = call
        self._remote = ray.remote(max_retries=max_retries, retry_exceptions=False)(fn)
        self.submitted = 0
        alive = [n for n in ray.nodes() if n.get("Alive")]
        #: what a scan task asks for: the CPUs of the smallest node
        self.node_cpus = max(1, min((int(n["Resources"].get("CPU", 1)) for n in alive),
                                    default=1))

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
            scan = spec["kind"] == "analyze"
            gpu = scan and str(spec.get("device", "")).startswith("cuda")
            ref = self._remote.options(num_cpus=self.node_cpus if scan else 1,
                                       num_gpus=1 if gpu else 0).remote(dict(spec))
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


def land(cache: Any, ref: Any, frag_dicts: Mapping[str, Any], st: Any) -> TensorResult:
    """A task's fragments: into the local cache (under the scan engine's keys), merged."""
    frags = {m: TensorResult.from_dict(d) for m, d in frag_dicts.items()}
    work.put_scan(cache, ref, frags, st.options, st.device)
    merged = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
    for f in frags.values():
        merged.merge(f)
    return merged


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
              "options": dict(options), "device": device}
             for names in bundles(todo, SCAN_BUNDLE_NUMEL)]
    st = _Settings(list(methods), dict(options), device)

    def done(spec: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        for n, frag_dicts in result["results"].items():
            results[n] = land(cache, ckpt.tensor(n), frag_dicts, st)

    executor.map(specs, done)
    if cache is not None:
        cache.flush()
    return results, n_cached
