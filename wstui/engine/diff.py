"""Diff mode: match two checkpoints' tensors by HF name and compare every pair (DESIGN §5, §8).

Why it looks like this:
- Matching is by HF name, so a safetensors folder, a `.bin` and a GGUF of one model line up;
  both sides load with `hf_layout=True` so llama.cpp's q/k row order is undone. Nothing is
  dropped silently: unmatched names and shape mismatches are listed, a resized vocabulary is
  compared on its common rows with a note, and an lm_head tied to the embedding on one side is
  compared with that embedding.
- Like the scan engine: a pool of worker threads (torch and LAPACK release the GIL), each holding
  one pair at a time, so at most `workers` pairs are resident. Cheap elementwise metrics for
  every pair come first (a full ranking by `rel_change` exists before any spectrum), then the
  spectral part, most-changed pairs first. Results stream out through a callback; an error on
  one pair is recorded and the rest go on; `cancel()` stops before the next pair.
- Results are cached in the scan's result cache under A's file, with B's file identity in the
  options hash: a change to either file invalidates the entry.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzers.core import Finding, TensorResult, top_issue_key
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef
from wstui.jobs import BackgroundJob
from wstui.scan import (
    ScanProgress,
    _empty_cache,
    _is_oom,
    copy_result,
    cpu_count,
    select_tensors,
    warm_up_linalg,
)

#: rel_change above this counts a pair as "changed" in the summaries
CHANGED_REL = 1e-6
VOCAB_KINDS = frozenset({"embedding", "lm_head"})

ResultCallback = Callable[[str, TensorResult], None]


# --------------------------------------------------------------------------------- matching
@dataclass(eq=False)
class DiffPair:
    """Tensor `a` of checkpoint A and `b` of checkpoint B, compared as one.

    `rows` limits the comparison to the first rows (a resized vocabulary); `note` says why a
    pair is special (resized, tied on one side). `result` holds `metrics["compare"]`.
    """

    a: TensorRef
    b: TensorRef
    note: str | None = None
    rows: int | None = None
    result: TensorResult = field(default_factory=lambda: TensorResult(name=""))

    def __post_init__(self) -> None:
        if not self.result.name:
            self.result.name = self.a.name
            self.result.kind = self.a.kind
            self.result.shape = self.shape

    @property
    def name(self) -> str:
        return self.a.name

    @property
    def key(self) -> str:
        """The HF name both sides share (B's name when A's lm_head is its tied embedding)."""
        return self.a.display_name

    @property
    def shape(self) -> tuple[int, ...]:
        if self.rows is None:
            return tuple(int(s) for s in self.a.shape)
        return (self.rows, *(int(s) for s in self.a.shape[1:]))

    @property
    def compare(self) -> dict[str, Any]:
        return self.result.metrics.get("compare", {})

    @property
    def rel_change(self) -> float | None:
        v = self.compare.get("rel_change")
        return float(v) if v is not None else None


@dataclass
class Matching:
    pairs: list[DiffPair] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)


def _key(t: TensorRef) -> str:
    return t.hf_name or t.name


def _main_embedding(refs: Sequence[TensorRef]) -> TensorRef | None:
    embeds = [r for r in refs if r.kind == "embedding" and r.block is None and len(r.shape) == 2]
    return max(embeds, key=lambda r: r.numel) if embeds else None


def _vocab_resized(a: TensorRef, b: TensorRef) -> bool:
    return (a.kind in VOCAB_KINDS and b.kind in VOCAB_KINDS and len(a.shape) == 2
            and len(b.shape) == 2 and a.shape[1] == b.shape[1] and a.shape[0] != b.shape[0])


def _make_pair(a: TensorRef, b: TensorRef, note: str | None, m: Matching) -> None:
    if tuple(a.shape) == tuple(b.shape):
        m.pairs.append(DiffPair(a, b, note))
    elif _vocab_resized(a, b):
        rows = min(int(a.shape[0]), int(b.shape[0]))
        why = (f"vocabulary resized: A has {a.shape[0]} rows, B has {b.shape[0]}; "
               f"the first {rows} rows compared")
        m.pairs.append(DiffPair(a, b, f"{note}; {why}" if note else why, rows))
    else:
        m.shape_mismatch.append({"name": a.name, "name_b": b.name, "shape_a": list(a.shape),
                                 "shape_b": list(b.shape)})


def match_tensors(
    a: Checkpoint | Sequence[TensorRef], b: Checkpoint | Sequence[TensorRef]
) -> Matching:
    """Pair A's and B's tensors by HF name (A's order); list the rest (DESIGN §5 compare)."""
    refs_a = list(a.tensors if isinstance(a, Checkpoint) else a)
    refs_b = list(b.tensors if isinstance(b, Checkpoint) else b)
    by_b: dict[str, TensorRef] = {}
    for t in refs_b:
        by_b.setdefault(_key(t), t)
    m = Matching()
    used_b: set[int] = set()
    for ta in refs_a:
        tb = by_b.get(_key(ta))
        if tb is None or id(tb) in used_b:
            m.only_in_a.append(ta.name)
            continue
        used_b.add(id(tb))
        note = None
        if ta.tied_to and not tb.tied_to:
            note = f"tied to {ta.tied_to} in A, stored in B"
        elif tb.tied_to and not ta.tied_to:
            note = f"stored in A, tied to {tb.tied_to} in B"
        _make_pair(ta, tb, note, m)
    rest_b = [t for t in refs_b if id(t) not in used_b]
    # an lm_head stored on one side and tied to the embedding (so absent) on the other
    has_head = (any(t.kind == "lm_head" for t in refs_a), any(t.kind == "lm_head" for t in refs_b))
    emb_a, emb_b = _main_embedding(refs_a), _main_embedding(refs_b)
    for tb in list(rest_b):
        if tb.kind == "lm_head" and not has_head[0] and emb_a is not None:
            rest_b.remove(tb)
            _make_pair(emb_a, tb, f"lm_head tied to {emb_a.display_name} in A, stored in B", m)
    for name in list(m.only_in_a):
        ta = next(t for t in refs_a if t.name == name)
        if ta.kind == "lm_head" and not has_head[1] and emb_b is not None:
            m.only_in_a.remove(name)
            _make_pair(ta, emb_b, f"stored in A, lm_head tied to {emb_b.display_name} in B", m)
    m.only_in_b = [t.name for t in rest_b]
    return m


# --------------------------------------------------------------------------------- report
@dataclass
class DiffIssue:
    pair: DiffPair
    finding: Finding

    def to_dict(self) -> dict[str, Any]:
        f = self.finding
        return {"tensor": self.pair.name, "analyzer": f.analyzer, "code": f.code,
                "severity": f.severity.value, "value": f.value, "threshold": f.threshold,
                "message": f.message}


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _group_summary(pairs: Sequence[DiffPair]) -> dict[str, Any]:
    rel = [(p.rel_change, p) for p in pairs if p.rel_change is not None
           and math.isfinite(p.rel_change)]
    ranks = [float(p.compare["delta_energy_rank_90"]) for p in pairs
             if p.compare.get("delta_energy_rank_90") and (p.rel_change or 0) > CHANGED_REL]
    best = max(rel, key=lambda t: t[0]) if rel else None
    top = best[1].name if best is not None and best[0] > CHANGED_REL else None
    return {
        "n": len(pairs),
        "n_changed": sum(1 for r, _ in rel if r > CHANGED_REL),
        "mean_rel_change": sum(r for r, _ in rel) / len(rel) if rel else None,
        "max_rel_change": max((r for r, _ in rel), default=None),
        "median_delta_energy_rank_90": _median(ranks),
        "most_changed": top,
    }


def summarize(pairs: Sequence[DiffPair]) -> dict[str, list[dict[str, Any]]]:
    """Per module kind and per block: how many changed, mean/max rel_change, median
    `delta_energy_rank_90` of the changed ones (low: a LoRA of that rank holds the change).
    Each list is sorted by max rel_change, most moved first."""
    by_kind: dict[str, list[DiffPair]] = {}
    by_block: dict[int | None, list[DiffPair]] = {}
    for p in pairs:
        by_kind.setdefault(p.a.kind, []).append(p)
        by_block.setdefault(p.a.block, []).append(p)

    def order(row: dict[str, Any]) -> float:
        return -(row["max_rel_change"] or 0.0)

    kinds = sorted(({"kind": k, **_group_summary(v)} for k, v in by_kind.items()), key=order)
    blocks = sorted(({"block": k, **_group_summary(v)} for k, v in by_block.items()), key=order)
    return {"by_kind": kinds, "by_block": blocks}


def rank_key(p: DiffPair) -> tuple[int, float]:
    """Most changed first; pairs without a number last."""
    r = p.rel_change
    if r is None:
        return (1, 0.0)
    return (0, -r if math.isfinite(r) else -math.inf)


@dataclass
class DiffReport:
    """A finished (or cancelled) diff: what `wstui scan A --diff B` prints and writes."""

    a: dict[str, Any]
    b: dict[str, Any]
    pairs: list[DiffPair]
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    elapsed_s: float = 0.0
    complete: bool = True
    spectral: bool = True
    top_issues: list[DiffIssue] = field(init=False)

    def __post_init__(self) -> None:
        self.pairs = sorted(self.pairs, key=rank_key)
        issues = [DiffIssue(p, f) for p in self.pairs for f in p.result.findings]
        issues.sort(key=lambda i: top_issue_key(i.finding))
        self.top_issues = issues

    def summary(self) -> dict[str, list[dict[str, Any]]]:
        return summarize(self.pairs)

    def pair(self, name: str) -> DiffPair:
        """By A's or B's stored or HF name."""
        for p in self.pairs:
            if name in (p.a.name, p.a.hf_name, p.b.name, p.b.hf_name):
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return diff_json(self)

    def to_json(self, path: str | Path) -> Path:
        from wstui import jsonio

        return jsonio.dump(self.to_dict(), path)

    def to_records(self) -> list[dict[str, Any]]:
        return records(self)


# --------------------------------------------------------------------------------- engine
def _compare_version() -> str:
    """Cache version: a hash of analyzers/compare.py, so a change to it invalidates entries."""
    import importlib

    mod = importlib.import_module("analyzers.compare")  # `analyzers.compare` is the function
    try:
        text = Path(mod.__file__).read_bytes()
    except OSError:  # pragma: no cover
        return "1"
    return "1-" + hashlib.sha256(text).hexdigest()[:12]


@dataclass(eq=False)
class _Job:
    pair: DiffPair
    phase: str  # "cheap" | "heavy"


class DiffEngine(BackgroundJob):
    """Compares every matched pair of two open checkpoints on a pool of worker threads.

    `start(on_result, on_progress)` returns at once; `on_result(name, result)` is called from
    worker threads with A's tensor name and a copy of the pair's result each time a phase lands.
    `run()` blocks and returns the `DiffReport`.
    """

    verb = "comparing"  # the progress bar's word (wstui scan shows "scanning")
    _kind = "diff"

    def __init__(
        self,
        a: Checkpoint | None,
        b: Checkpoint | None,
        *,
        device: str = "auto",
        workers: int | None = None,
        use_cache: bool = True,
        options: Mapping[str, Any] | None = None,
        spectral: bool = True,
        tensors: str | Sequence[str] | None = None,
        cache_path: str | Path | None = None,
        matching: Matching | None = None,
        ranking_first: bool = True,
    ) -> None:
        """`matching` (from `match_tensors`) replaces the matching of `a` and `b`; then `a`
        and `b` may be None (the report's checkpoint blocks are empty).

        `ranking_first=True` (the app): the elementwise pass over every pair first, then the
        spectra, each pair loaded twice. False (headless, where nothing shows before the end):
        one load per pair, both passes from it."""
        from analyzers.core import pick_device

        self.a, self.b = a, b
        if matching is None:
            if a is None or b is None:
                raise ValueError("DiffEngine needs two checkpoints or a matching")
            matching = match_tensors(select_tensors(a.tensors, tensors),
                                     select_tensors(b.tensors, tensors))
        self.matching = matching
        self.pairs = self.matching.pairs
        self.device = pick_device(device)
        self.cores = cpu_count()
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = int(workers) if workers else self.cores
        self.use_cache = use_cache
        self.cache_path = cache_path
        self.options: dict[str, Any] = dict(options or {})
        self.options.pop("device", None)
        self.spectral = spectral
        self.ranking_first = ranking_first
        self.cache: Any = None
        self.cache_error: str | None = None
        self.callback_errors: list[str] = []
        self._version = _compare_version()
        self._lock = threading.Condition()
        self._cheap: list[_Job] = []
        self._cheap_left = 0
        self._heavy_done: set[int] = set()  # pairs whose spectra came from the cache
        self._heavy: list[_Job] = []
        self._running = 0
        self._n_tasks = 0
        self._n_done = 0
        self._n_cached = 0
        self._current: str | None = None
        self._phase = "cache"
        self._init_job()
        self._t_end: float | None = None
        self.t_cheap_done: float | None = None  # seconds from start to a full cheap ranking
        self._by_name = {p.a.name: p for p in self.pairs}
        for p in self.pairs:
            for n in (p.a.hf_name, p.b.name, p.b.hf_name):
                if n:
                    self._by_name.setdefault(n, p)

    # ------------------------------------------------------------- public API
    # start(on_result, on_progress), run(...) -> DiffReport, wait(timeout), done, cancelled:
    # see BackgroundJob.

    def cancel(self) -> None:
        """No new pair starts; pairs being compared finish. Returns at once."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            self._cheap.clear()
            self._heavy.clear()
            self._phase = "cancelled"
            self._lock.notify_all()
            self._maybe_done_locked()
        self._emit_progress()

    def prioritize(self, name: str) -> None:
        """Move this pair's pending work (A's or B's stored or HF name) to the front."""
        with self._lock:
            p = self._by_name.get(name)
            for queue in (self._cheap, self._heavy):
                for j in list(queue):
                    if j.pair is p:
                        queue.remove(j)
                        queue.insert(0, j)

    def snapshot(self) -> dict[str, TensorResult]:
        """Results so far by A's stored name (copies)."""
        with self._lock:
            return {p.a.name: copy_result(p.result) for p in self.pairs
                    if p.result.metrics or p.result.errors or p.result.skipped}

    def progress(self) -> ScanProgress:
        with self._lock:
            return self._progress_locked()

    def report(self) -> DiffReport:
        with self._lock:
            pairs = [DiffPair(p.a, p.b, p.note, p.rows, copy_result(p.result))
                     for p in self.pairs]
            end = self._t_end if self._t_end is not None else time.perf_counter()
            elapsed = end - self._t0 if self._started else 0.0
            complete = self.done and not self._cancelled
        return DiffReport(
            a=self.a.summary() if self.a is not None else {},
            b=self.b.summary() if self.b is not None else {}, pairs=pairs,
            only_in_a=list(self.matching.only_in_a), only_in_b=list(self.matching.only_in_b),
            shape_mismatch=list(self.matching.shape_mismatch), device=self.device,
            elapsed_s=elapsed, complete=complete, spectral=self.spectral,
        )

    # ------------------------------------------------------------- preparation
    def _skip_reason(self, p: DiffPair) -> str | None:
        for side, t in (("A", p.a), ("B", p.b)):
            if not t.analyzable:
                return f"{side}: {t.note or f'{t.dtype} tensors are not compared'}"
        if p.a.tied_to and p.b.tied_to:
            return f"tied to {p.a.tied_to} on both sides"
        return None

    def _wants_heavy(self, p: DiffPair) -> bool:
        """The spectral pass still to do for this pair (a matrix, not yet cached)."""
        return self.spectral and self._is_matrix(p) and id(p) not in self._heavy_done

    def _is_matrix(self, p: DiffPair) -> bool:
        shape = p.shape
        return len(shape) >= 2 and shape[0] >= 2 and math.prod(shape) // shape[0] >= 2

    def _cache_key(self, p: DiffPair, phase: str) -> tuple[Any, str, str] | None:
        """(A's FileKey, analyzer label, options hash with B's file identity) or None."""
        from wstui.cache import FileKey, options_hash

        try:
            fa, fb = FileKey.of(p.a.file), FileKey.of(p.b.file)
        except OSError:
            return None
        opts = {**self.options, "b_file": [fb.path, fb.size, fb.mtime_ns], "b_tensor": p.b.name,
                "rows": p.rows, "device": self.device.split(":")[0]}
        return fa, "compare" if phase == "heavy" else "compare_cheap", options_hash(opts)

    def _cached(self, p: DiffPair, phase: str) -> TensorResult | None:
        if self.cache is None:
            return None
        key = self._cache_key(p, phase)
        if key is None:
            return None
        try:
            return self.cache.get(key[0], p.a.name, key[1], self._version, key[2])
        except Exception:
            return None

    def _prepare(self) -> None:
        from wstui.scan import _BlasThreads

        # numpy/scipy's BLAS (the spectral path) keeps one thread count per process: every
        # worker wants cores // workers, so set it once here and restore it when done
        self._blas = _BlasThreads()
        self._blas.set(max(1, self.cores // self.workers))
        if self.device != "cpu":
            warm_up_linalg(self.device)
        try:
            if self.use_cache:
                try:
                    from wstui.cache import ResultCache

                    self.cache = ResultCache(self.cache_path)
                except Exception as exc:  # an unusable cache never stops a diff
                    self.cache_error = f"{type(exc).__name__}: {exc}"
            deliveries = []
            for p in self.pairs:
                reason = self._skip_reason(p)
                if reason is not None:
                    p.result.skipped["compare"] = reason
                    deliveries.append(p)
                    continue
                # the two passes are cached apart: elementwise ("cheap"), spectra ("heavy")
                want_heavy = self._wants_heavy(p)
                cheap_hit = self._cached(p, "cheap")
                heavy_hit = self._cached(p, "heavy") if want_heavy else None
                for hit in (cheap_hit, heavy_hit):
                    if hit is not None:
                        p.result.merge(hit)
                if heavy_hit is not None:
                    self._heavy_done.add(id(p))
                if cheap_hit is None:
                    self._cheap.append(_Job(p, "cheap"))
                elif want_heavy and heavy_hit is None:
                    self._heavy.append(_Job(p, "heavy"))
                else:
                    self._n_cached += 1
                if cheap_hit is not None or heavy_hit is not None:
                    deliveries.append(p)
            with self._lock:
                if self._cancelled:  # cancelled before the queues were filled
                    self._cheap.clear()
                    self._heavy.clear()
                else:
                    self._phase = "cheap"
                self._n_tasks = len(self._cheap) + len(self._heavy) + sum(
                    1 for j in self._cheap if self._wants_heavy(j.pair))
                self._cheap_left = len(self._cheap)
            for p in deliveries:
                self._deliver(p)
        finally:
            with self._lock:
                if not self._cheap and self.t_cheap_done is None:
                    self.t_cheap_done = time.perf_counter() - self._t0
                n = min(self.workers, len(self._cheap) + len(self._heavy))
                self._running_workers = n
                for i in range(n):
                    threading.Thread(target=self._worker, name=f"wstui-diff-{i + 1}",
                                     daemon=True).start()
                self._maybe_done_locked()
        self._emit_progress()

    # ------------------------------------------------------------- workers
    def _next_job_locked(self) -> _Job | None:
        while not self._cancelled:
            if self._cheap:
                return self._cheap.pop(0)
            if self._heavy:
                # most-changed pair first: the top of the ranking gets its spectra first
                best = min(range(len(self._heavy)), key=lambda i: rank_key(self._heavy[i].pair))
                return self._heavy.pop(best)
            if self._running == 0:
                return None
            self._lock.wait(0.2)  # a running cheap job may still add a heavy one
        return None

    def _worker(self) -> None:
        from wstui.scan import _set_threads

        threads = max(1, self.cores // self.workers)
        try:
            _set_threads(threads)
            while True:
                with self._lock:
                    job = self._next_job_locked()
                    if job is None:
                        return
                    self._running += 1
                    self._current = job.pair.key
                    self._phase = job.phase
                self._emit_progress()
                try:
                    self._execute(job)
                finally:
                    with self._lock:
                        self._running -= 1
                        self._n_done += 1
                        if job.phase == "cheap":
                            self._cheap_left -= 1
                            if self._cheap_left == 0 and self.t_cheap_done is None:
                                self.t_cheap_done = time.perf_counter() - self._t0
                        self._lock.notify_all()
                self._emit_progress()
        finally:
            with self._lock:
                self._running_workers -= 1
                self._maybe_done_locked()
            self._emit_progress()

    def _load(self, p: DiffPair) -> tuple[Any, Any]:
        ta = p.a.load("cpu", hf_layout=True)
        tb = p.b.load("cpu", hf_layout=True)
        if p.rows is not None:
            ta, tb = ta[: p.rows], tb[: p.rows]
        return ta, tb

    def _execute(self, job: _Job) -> None:
        p = job.pair
        heavy = job.phase == "heavy"
        try:
            ta, tb = self._load(p)
        except Exception as exc:
            msg = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            frag = TensorResult(name=p.a.name, kind=p.a.kind, shape=p.shape)
            frag.errors["load"] = msg
            self._land(p, job.phase, frag, cache=False)
            return
        frag = self._pass(p, ta, tb, heavy)
        self._land(p, job.phase, frag, cache=not frag.errors)
        if not heavy and self._wants_heavy(p):
            ok = "compare" in frag.metrics and not self._cancelled
            if ok and not self.ranking_first:  # the spectra now, from the tensors in hand
                frag = self._pass(p, ta, tb, True)
                self._land(p, "heavy", frag, cache=not frag.errors)
                with self._lock:
                    self._n_done += 1
            with self._lock:
                if ok and self.ranking_first:
                    self._heavy.append(_Job(p, "heavy"))
                    self._lock.notify_all()
                elif not ok:
                    self._n_tasks -= 1  # the heavy step counted for this pair will not run
        del ta, tb

    def _pass(self, p: DiffPair, ta: Any, tb: Any, heavy: bool) -> TensorResult:
        frag = self._compare(p, ta, tb, self.device, heavy)
        if self.device != "cpu" and _is_oom(frag.errors.get("compare")):
            _empty_cache()  # out of device memory: this pair on the CPU, the diff goes on
            frag = self._compare(p, ta, tb, "cpu", heavy)
        return frag

    def _scan_spectra(self, p: DiffPair) -> dict[str, Any] | None:
        """A's and B's σ picks and alphas from their `spectral` results in the scan cache
        (written by an earlier scan, or by the scans of this run when they finished first),
        or None. Not for a pair cut to common rows (a resized vocabulary): its spectra are
        not those of the whole tensors. The llama.cpp row permutation of a GGUF's q/k
        leaves σ unchanged. Reusing them makes the spectral pass one spectrum (ΔW), not
        three."""
        if self.cache is None or p.rows is not None:
            return None
        from analyzers import core
        from wstui.cache import FileKey, options_hash

        spec = core.registry().get("spectral")
        if spec is None:
            return None
        found = []
        h = options_hash({**self.options, "device": self.device.split(":")[0]})
        for t in (p.a, p.b):
            try:
                frag = self.cache.get(FileKey.of(t.file), t.name, "spectral", spec.version, h)
            except Exception:
                return None
            m = frag.metrics.get("spectral", {}) if frag is not None else {}
            d = frag.data.get("spectral", {}) if frag is not None else {}
            if "alpha" not in m or "spectrum" not in d or "spectrum_rank" not in d:
                return None
            found.append((m["alpha"], d["spectrum"], d["spectrum_rank"]))
        (alpha_a, spec_a, rank_a), (alpha_b, spec_b, rank_b) = found
        if rank_a != rank_b:
            return None
        return {"alpha_a": alpha_a, "alpha_b": alpha_b, "spectrum_a": spec_a,
                "spectrum_b": spec_b, "spectrum_rank": rank_a}

    def _compare(self, p: DiffPair, ta: Any, tb: Any, device: str, heavy: bool) -> TensorResult:
        import analyzers

        # first pass: elementwise only; second pass: the spectra only (nothing done twice)
        opts = {**self.options, "device": device, "compare_spectral": heavy,
                "compare_elementwise": not heavy}
        known = self._scan_spectra(p) if heavy else None
        if known is not None:
            opts["compare_known_spectra"] = known
        try:
            return analyzers.compare(ta, tb, name=p.a.name, kind=p.a.kind, options=opts)
        except Exception as exc:  # compare() should not raise; one pair never stops a diff
            frag = TensorResult(name=p.a.name, kind=p.a.kind, shape=p.shape)
            frag.errors["compare"] = f"{type(exc).__name__}: {exc}"
            return frag

    def _land(self, p: DiffPair, phase: str, frag: TensorResult, *, cache: bool) -> None:
        frag.name = p.a.name
        if cache and self.cache is not None:
            key = self._cache_key(p, phase)
            if key is not None:
                try:
                    self.cache.put(key[0], p.a.name, key[1], self._version, key[2], frag)
                except Exception as exc:
                    self.cache_error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            p.result.merge(frag)
        self._deliver(p)

    def _deliver(self, p: DiffPair) -> None:
        cb = self._on_result
        if cb is None:
            return
        with self._lock:
            snap = copy_result(p.result)
        try:
            cb(p.a.name, snap)
        except Exception as exc:  # a broken consumer must not stop the diff
            self.callback_errors.append(f"on_result: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------- progress
    def _maybe_done_locked(self) -> None:
        if getattr(self, "_running_workers", None) is None:
            return
        idle = self._running_workers == 0 or (self._cancelled and self._running == 0)
        if idle and not self._done_evt.is_set():
            self._t_end = time.perf_counter()
            if not self._cancelled:
                self._phase = "done"
            self._current = None
            blas = getattr(self, "_blas", None)
            if blas is not None:
                blas.restore()
            self._done_evt.set()
            self._lock.notify_all()

    def _progress_locked(self) -> ScanProgress:
        now = self._t_end if self._t_end is not None else time.perf_counter()
        elapsed = now - self._t0 if self._started else 0.0
        eta = None
        if self._n_done and self._n_done < self._n_tasks and not self._cancelled:
            eta = elapsed * (self._n_tasks - self._n_done) / self._n_done
        elif self.done:
            eta = 0.0
        return ScanProgress(done=self._n_done, total=self._n_tasks, current=self._current,
                            phase=self._phase, elapsed_s=elapsed, eta_s=eta,
                            cached=self._n_cached, n_tensors=len(self.pairs))

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


def diff_checkpoints(
    a: Checkpoint, b: Checkpoint, **kwargs: Any
) -> DiffReport:
    """Blocking convenience: `DiffEngine(a, b, **kwargs).run()`."""
    return DiffEngine(a, b, **kwargs).run()


# --------------------------------------------------------------------------------- export
DIFF_SCHEMA = "wstui.diff/1"
COMPARE_KEYS = ("l2_distance", "rel_change", "cosine", "max_abs_diff", "frac_changed",
                "delta_stable_rank", "delta_energy_rank_90", "alpha_a", "alpha_b", "delta_alpha")
CSV_COLUMNS = ("rank", "name", "name_b", "hf_name", "kind", "block", "shape", "dtype_a",
               "dtype_b", *COMPARE_KEYS, "findings", "note", "error")


def pair_json(p: DiffPair) -> dict[str, Any]:
    from analyzers.core import to_plain

    r = p.result
    return {
        "name": p.a.name, "name_b": p.b.name, "hf_name": p.a.hf_name, "kind": p.a.kind,
        "block": p.a.block, "shape": list(p.shape), "dtype_a": p.a.dtype, "dtype_b": p.b.dtype,
        "note": p.note, "metrics": {"compare": to_plain(r.metrics.get("compare", {}))},
        "findings": [f.to_dict() for f in r.findings],
        "errors": [{"analyzer": a, "message": m} for a, m in r.errors.items()],
        "skipped": dict(r.skipped),
    }


def diff_json(report: DiffReport) -> dict[str, Any]:
    """The `wstui.diff/1` document (strict: non-finite numbers are None)."""
    from wstui import jsonio
    from wstui._version import __version__

    return jsonio.strict({
        "schema": DIFF_SCHEMA, "wstui_version": __version__, "a": report.a, "b": report.b,
        "device": report.device, "elapsed_s": report.elapsed_s, "complete": report.complete,
        "spectral": report.spectral,
        "pairs": [pair_json(p) for p in report.pairs],
        "only_in_a": list(report.only_in_a), "only_in_b": list(report.only_in_b),
        "shape_mismatch": list(report.shape_mismatch),
        "summary": report.summary(),
        "top_issues": [i.to_dict() for i in report.top_issues],
    })


def records(report: DiffReport) -> list[dict[str, Any]]:
    """One flat row per pair, most changed first (the CSV rows)."""
    out = []
    for i, p in enumerate(report.pairs, 1):
        c = p.compare
        err = "; ".join(f"{a}: {m}" for a, m in {**p.result.errors}.items())
        out.append({
            "rank": i, "name": p.a.name, "name_b": p.b.name, "hf_name": p.a.hf_name,
            "kind": p.a.kind, "block": p.a.block, "shape": "x".join(str(s) for s in p.shape),
            "dtype_a": p.a.dtype, "dtype_b": p.b.dtype,
            **{k: c.get(k) for k in COMPARE_KEYS},
            "findings": ";".join(f.code for f in p.result.findings),
            "note": p.note or p.result.skipped.get("compare"), "error": err or None,
        })
    return out


def write_csv(report: DiffReport, path: str | Path) -> Path:
    """One row per pair; non-finite numbers are empty cells (as null in the JSON)."""
    from wstui import outfile

    rows = ({k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in r.items()} for r in records(report))
    return outfile.write_csv(path, rows, list(CSV_COLUMNS))
