"""The scan: every selected tensor's per-tensor analyzers, as a plan on the pool (DESIGN §7).

Why it looks like this:
- Cheap analyzers run for every tensor before any heavy one, so every tensor has numbers fast;
  `prioritize`/`request` put one tensor at the front for the app's current selection.
- One task is one tensor and one group of methods (its cheap ones, or its heavy ones), loaded
  once; all its methods run in one `analyzers.core.analyze_each` call on one context (so the
  spectrum `spectral` computes serves `quant_alpha` too), and each method's result is merged,
  delivered and cached the moment it lands.
- Results already in the cache are delivered before any task runs.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzers import core
from analyzers.core import Finding, TensorResult, top_issue_key
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef
from wstui.checkpoint.select import select_tensors
from wstui.engine import placement
from wstui.engine.placement import check_device, cpu_count, warm_up_linalg
from wstui.engine.pool import (
    BIG_NUMEL,
    Pool,
    Task,
    copy_result,
    task_cost,
    tensor_mem,
    tensor_slots,
)
from wstui.engine.progress import Progress, ScanProgress, describe_eta

__all__ = ["BIG_NUMEL", "Issue", "Progress", "ReportEntry", "ScanEngine", "ScanProgress",
           "ScanReport", "copy_result", "cpu_count", "describe_eta", "select_tensors",
           "validate_methods"]

ResultCallback = Callable[[str, TensorResult], None]


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

    # the documents live in wstui.documents.scan; these are the Python API's shortcuts
    def to_dict(self) -> dict[str, Any]:
        from wstui.documents.scan import scan_json

        return scan_json(self)

    def to_json(self, path: str | Path) -> Path:
        from wstui.documents.scan import write_json

        return write_json(self, path)

    def to_records(self) -> list[dict[str, Any]]:
        from wstui.documents.scan import records

        return records(self)


@dataclass(frozen=True)
class _Work:
    """What a tensor task runs: these methods with these options (and their cache hash)."""

    ref: TensorRef
    methods: tuple[str, ...]
    options: dict[str, Any]
    opts_hash: str


def options_key(options: Mapping[str, Any], device: str) -> str:
    """The options part of a scan result's cache key: the options without `device`, plus the
    device kind (a GPU's float32 Gram is not bit-equal to the CPU's). Whoever writes scan
    results into the cache from elsewhere (a Ray cluster) uses this key, so that a local scan
    finds them."""
    from wstui.engine.cache import options_hash

    opts = {k: v for k, v in options.items() if k != "device"}
    return options_hash({**opts, "device": device.split(":")[0]})


class ScanEngine(Pool):
    """Schedules analyzers over a checkpoint's tensors on the pool's worker threads."""

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
        self._specs = core.registry("tensor")
        dev = core.pick_device(device)
        check_device(dev)
        self._init_pool(device=dev, workers=workers)
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
        self.cache: Any = None
        self.cache_error: str | None = None
        self._results: dict[str, TensorResult] = {}
        self._computed: dict[str, set[tuple[str, str]]] = {}  # name -> {(analyzer, opts hash)}
        self._fkeys: dict[Path, Any] = {}

    # ----------------------------------------------------------------- public API
    # start(on_result, on_progress), run(...) -> ScanReport, wait(timeout), done, cancelled,
    # cancel(), progress(): see Pool and BackgroundJob.

    def _before_start(self) -> None:
        # torch is loaded only where it is needed: a GPU, a `.bin`/`.pt` tensor, FP8. A CPU
        # scan of safetensors or GGUF reads numpy arrays and never imports it.
        if self.device != "cpu":
            import torch  # noqa: F401
        super()._before_start()

    def _cache_file(self) -> Path:
        from wstui.engine.cache import default_path

        return Path(self.cache_path) if self.cache_path is not None else default_path()

    def stream(
        self, on_progress: Callable[[Progress], None] | None = None
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

    def prioritize(self, name: str) -> None:
        """Move every pending task of this tensor (stored name or HF name) to the front."""
        ref = self._resolve(name)
        if ref is not None:
            self._prioritize_unit(ref.name)

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
                wanted, extra = tuple(methods), dict(options or {})
                self._early.append(lambda: self._request_now(ref, wanted, extra))
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

    def report(self) -> ScanReport:
        """The report of what is done so far (complete once `done` and not cancelled)."""
        with self._lock:
            entries = [
                ReportEntry(r, copy_result(self._results[r.name]))
                for r in self.refs if r.name in self._results
            ]
            elapsed = self._elapsed_locked()
            complete = self.done and not self._cancelled
        return ScanReport(
            checkpoint=self.checkpoint.summary(), methods=list(self.methods), device=self.device,
            elapsed_s=elapsed, entries=entries, complete=complete, options=dict(self.options),
        )

    def extend(self, refs: Sequence[TensorRef]) -> None:
        """Add tensors to the scan (the default methods, after what is queued); they are in
        the report. For a plan that learns what to scan while it runs (a model task)."""
        with self._lock:
            new = [r for r in refs if r.name not in {x.name for x in self.refs}]
            self.refs.extend(new)
        for r in new:
            self._by_name.setdefault(r.name, r)
            self._request_now(r, tuple(self.methods), {}, front=False)

    # ----------------------------------------------------------------- preparation
    def _n_units(self) -> int:
        return len(self.refs)

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
        return options_key(opts, self.device)

    def _fkey(self, ref: TensorRef) -> Any:
        from wstui.engine.cache import FileKey

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
            from wstui.engine.cache import ResultCache

            self.cache = ResultCache(self.cache_path)
        except Exception as exc:  # an unusable cache never stops a scan
            self.cache = None
            self.cache_error = f"{type(exc).__name__}: {exc}"

    def _on_idle_locked(self) -> None:
        if self.cache is not None:
            # writes queued behind another process's lock get their last try now, so that
            # what reads the cache after `done` (a diff reusing these spectra, a rescan)
            # finds them; nothing queued costs nothing
            self.cache.flush()

    def _skip_reason(self, ref: TensorRef) -> str | None:
        if not ref.analyzable:
            return ref.note or f"{ref.dtype} tensors are not analyzed"
        if ref.tied_to:
            return f"tied to {ref.tied_to}"
        return None

    def _plan(self) -> None:
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
        spectra: list[tuple[int, ...]] = []  # shapes whose heavy methods will be computed
        order = scan_order(self.refs)
        with self._lock:
            self._fit_budget_locked(self.refs)
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
                    self._add_tensor_task_locked(ref, cheap, opts, h, "cheap", (1, 0, pos))
                if heavy:
                    self._add_tensor_task_locked(ref, heavy, opts, h, "heavy", (1, 1, pos))
                    spectra.append(tuple(ref.shape))
            self._phase = "cheap"
        if self.device == "cpu" and spectra:  # before the workers start (see placement)
            placement.import_torch_for_eigvalsh(spectra)
        for name in deliveries:
            self._deliver_result(name)

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

    def _add_tensor_task_locked(
        self, ref: TensorRef, methods: tuple[str, ...], opts: dict[str, Any], h: str, phase: str,
        prio: tuple[Any, ...],
    ) -> Task:
        heavy = any(self._specs[m].heavy for m in methods)
        mem = tensor_mem(tuple(ref.shape), heavy)
        self._fit_budget_locked([ref])
        return self._add_task_locked(
            ref.name, self._run_tensor, label=ref.display_name, phase=phase,
            kind="heavy" if heavy else "light", cost=task_cost(ref.shape, heavy, len(methods)),
            slots=tensor_slots(ref.numel, mem, self.workers, self.device, self.mem_budget),
            prio=prio, payload=_Work(ref, methods, opts, h), mem=mem,
        )

    def _fit_budget_locked(self, refs: Sequence[TensorRef]) -> None:
        """The memory budget of running tasks: 4x the largest tensor in float32, the peak
        bound the benchmarks hold a scan to (300 MB + 4x the largest tensor; DESIGN §7: peak
        memory grows with the largest tensor, never with the model) less its 300 MB."""
        big = max((r.numel for r in refs), default=0)
        self.mem_budget = max(self.mem_budget or 0.0, 16.0 * big)

    def _request_now(self, ref: TensorRef, methods: tuple[str, ...], extra: dict[str, Any],
                     *, front: bool = True) -> None:
        opts = self._task_options(extra)
        h = self._hash(opts)
        with self._lock:
            if self._cancelled:
                return
            have = self._computed.get(ref.name, set())
            pending_same = {
                m for t in self._pending.get(ref.name, []) if t.payload.opts_hash == h
                for m in t.payload.methods
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
                if front:
                    self._add_tensor_task_locked(ref, tuple(todo), opts, h, "request",
                                                 (0, -next(self._bump), 0))
                else:
                    for phase, group in (("cheap", [m for m in todo
                                                     if not self._specs[m].heavy]),
                                         ("heavy", [m for m in todo if self._specs[m].heavy])):
                        if group:
                            self._add_tensor_task_locked(
                                ref, tuple(group), opts, h, phase,
                                (2, int(phase == "heavy"), next(self._seq)))
                self._wake_locked()
        if not todo:
            self._deliver_result(ref.name)
        self._emit_progress()

    # ----------------------------------------------------------------- one task
    def _run_tensor(self, task: Task) -> None:
        work: _Work = task.payload
        ref = work.ref
        with self.resident():
            try:
                x = placement.load_tensor(ref)
            except Exception as exc:
                msg = str(exc) if isinstance(exc, CheckpointError) else (
                    f"{type(exc).__name__}: {exc}")
                frag = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
                frag.errors["load"] = msg
                self._land(work, None, frag)
                return
            try:
                self._analyze_all(work, x)
            except Exception as exc:  # a bug outside the analyzers: record it, go on
                frag = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
                frag.errors["engine"] = f"{type(exc).__name__}: {exc}"
                self._land(work, None, frag)
            del x

    def _analyze_all(self, work: _Work, x: Any) -> None:
        """Every method of the task on one context, each result landing as it comes; on a
        device out of memory the tensor goes to the CPU and the rest run there."""
        device = self.device
        if device != "cpu":
            x, device = placement.to_device(x, device)
        todo = list(work.methods)
        while todo and not self._cancelled:
            fallback = False
            frags = self._fragments(work, x, todo, device)
            for m, frag in frags:
                if self._cancelled:
                    break
                if m is None:  # the input could not be read: record it once
                    self._land(work, None, frag)
                    return
                if device != "cpu" and placement.is_oom(frag.errors.get(m)):
                    frags.close()
                    x, device = placement.to_cpu(x)
                    fallback = True
                    break
                self._land(work, m, frag)
                todo.remove(m)
            if not fallback:
                return

    def _fragments(self, work: _Work, x: Any, methods: list[str], device: str
                   ) -> Iterator[tuple[str | None, TensorResult]]:
        opts = {**work.options, "device": device}
        ref = work.ref
        try:
            yield from core.analyze_each(ref.name, x, kind=ref.kind, options=opts,
                                         methods=methods)
        except Exception as exc:  # analyze_each should not raise; one tensor never stops a scan
            for m in methods:
                frag = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
                frag.errors[m] = f"{type(exc).__name__}: {exc}"
                yield m, frag

    def _land(self, work: _Work, method: str | None, frag: TensorResult) -> None:
        """Merge one analyzer's fragment, deliver the merged result, then cache the fragment
        (the consumer does not wait for the disk). Fragments with errors are not cached: the
        next scan tries again."""
        ref = work.ref
        frag.name = ref.name
        with self._lock:
            self._result_locked(ref).merge(frag)
            if method is not None and not frag.errors:
                self._computed.setdefault(ref.name, set()).add((method, work.opts_hash))
        self._deliver_result(ref.name)
        if method is not None and not frag.errors and self.cache is not None:
            fk = self._fkey(ref)
            if fk is not None:
                try:
                    spec = self._specs[method]
                    self.cache.put(fk, ref.name, method, spec.version, work.opts_hash, frag)
                except Exception as exc:
                    self.cache_error = f"{type(exc).__name__}: {exc}"

    def _deliver_result(self, name: str) -> None:
        if self._on_result is None:
            return
        with self._lock:
            r = self._results.get(name)
            snap = copy_result(r) if r is not None else None
        self._deliver(name, snap)


def scan_order(refs: Sequence[TensorRef]) -> dict[str, int]:
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
