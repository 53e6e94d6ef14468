"""Diff mode: every matched pair of two checkpoints compared, as a plan on the pool (DESIGN §5).

Why it looks like this:
- Pairs come from `matching.match_tensors` (by HF name); both sides load with
  `hf_layout=True` so llama.cpp's q/k row order is undone.
- One task is one pair and one pass of the `compare` pair analyzer, each worker holding one pair
  at a time. Cheap elementwise metrics for every pair come first (a full ranking by
  `rel_change` exists before any spectrum), then the spectral pass, most-changed pairs first.
  Results stream out through a callback; an error on one pair is recorded and the rest go on.
- Results are cached in the scan's result cache under A's file, with B's file identity in the
  options hash: a change to either file invalidates the entry. The spectral pass takes A's and
  B's spectra from their scans' cached `spectral` results when there (issue 14): ΔW's spectrum
  is then the only one computed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzers import core
from analyzers.core import Finding, TensorResult, top_issue_key
from wstui.checkpoint.base import Checkpoint, CheckpointError
from wstui.checkpoint.select import select_tensors
from wstui.engine import placement
from wstui.engine.matching import DiffPair, Matching, match_tensors
from wstui.engine.placement import warm_up_linalg
from wstui.engine.pool import Pool, Task, copy_result, task_cost

__all__ = ["DiffEngine", "DiffIssue", "DiffPair", "DiffReport", "Matching", "diff_checkpoints",
           "match_tensors", "rank_key"]

ResultCallback = Callable[[str, TensorResult], None]


def rank_key(p: DiffPair) -> tuple[int, float]:
    """Most changed first; pairs without a number last."""
    r = p.rel_change
    if r is None:
        return (1, 0.0)
    return (0, -r if math.isfinite(r) else -math.inf)


@dataclass
class DiffIssue:
    pair: DiffPair
    finding: Finding

    def to_dict(self) -> dict[str, Any]:
        f = self.finding
        return {"tensor": self.pair.name, "analyzer": f.analyzer, "code": f.code,
                "severity": f.severity.value, "value": f.value, "threshold": f.threshold,
                "message": f.message}


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

    def pair(self, name: str) -> DiffPair:
        """By A's or B's stored or HF name."""
        for p in self.pairs:
            if name in (p.a.name, p.a.hf_name, p.b.name, p.b.hf_name):
                return p
        raise KeyError(name)

    # the documents live in wstui.documents.diff; these are the Python API's shortcuts
    def summary(self) -> dict[str, list[dict[str, Any]]]:
        from wstui.documents.diff import summarize

        return summarize(self.pairs)

    def to_dict(self) -> dict[str, Any]:
        from wstui.documents.diff import diff_json

        return diff_json(self)

    def to_json(self, path: str | Path) -> Path:
        from wstui.documents.diff import write_json

        return write_json(self, path)

    def to_records(self) -> list[dict[str, Any]]:
        from wstui.documents.diff import records

        return records(self)


class DiffEngine(Pool):
    """Compares every matched pair of two open checkpoints on the pool's worker threads.

    `start(on_result, on_progress)` returns at once; `on_result(name, result)` is called from
    worker threads with A's tensor name and a copy of the pair's result each time a pass lands.
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
        self.a, self.b = a, b
        if matching is None:
            if a is None or b is None:
                raise ValueError("DiffEngine needs two checkpoints or a matching")
            matching = match_tensors(select_tensors(a.tensors, tensors),
                                     select_tensors(b.tensors, tensors))
        self.matching = matching
        self.pairs = self.matching.pairs
        self._init_pool(device=core.pick_device(device), workers=workers)
        self.use_cache = use_cache
        self.cache_path = cache_path
        self.options: dict[str, Any] = dict(options or {})
        self.options.pop("device", None)
        self.spectral = spectral
        self.ranking_first = ranking_first
        self.cache: Any = None
        self.cache_error: str | None = None
        spec = core.registry("pair")["compare"]
        self._compare_fn, self._version = spec.fn, spec.version
        self._heavy_done: set[int] = set()  # pairs whose spectra came from the cache
        self._cheap_left = 0
        self.t_cheap_done: float | None = None  # seconds from start to a full cheap ranking
        self._by_name = {p.a.name: p for p in self.pairs}
        for p in self.pairs:
            for n in (p.a.hf_name, p.b.name, p.b.hf_name):
                if n:
                    self._by_name.setdefault(n, p)

    # ------------------------------------------------------------- public API
    # start(on_result, on_progress), run(...) -> DiffReport, wait(timeout), done, cancelled,
    # cancel(), progress(): see Pool and BackgroundJob.

    def prioritize(self, name: str) -> None:
        """Move this pair's pending work (A's or B's stored or HF name) to the front."""
        p = self._by_name.get(name)
        if p is not None:
            self._prioritize_unit(p.a.name)

    def snapshot(self) -> dict[str, TensorResult]:
        """Results so far by A's stored name (copies)."""
        with self._lock:
            return {p.a.name: copy_result(p.result) for p in self.pairs
                    if p.result.metrics or p.result.errors or p.result.skipped}

    def report(self) -> DiffReport:
        with self._lock:
            pairs = [DiffPair(p.a, p.b, p.note, p.rows, copy_result(p.result))
                     for p in self.pairs]
            elapsed = self._elapsed_locked()
            complete = self.done and not self._cancelled
        return DiffReport(
            a=self.a.summary() if self.a is not None else {},
            b=self.b.summary() if self.b is not None else {}, pairs=pairs,
            only_in_a=list(self.matching.only_in_a), only_in_b=list(self.matching.only_in_b),
            shape_mismatch=list(self.matching.shape_mismatch), device=self.device,
            elapsed_s=elapsed, complete=complete, spectral=self.spectral,
        )

    # ------------------------------------------------------------- preparation
    def _n_units(self) -> int:
        return len(self.pairs)

    def _skip_reason(self, p: DiffPair) -> str | None:
        for side, t in (("A", p.a), ("B", p.b)):
            if not t.analyzable:
                return f"{side}: {t.note or f'{t.dtype} tensors are not compared'}"
        if p.a.tied_to and p.b.tied_to:
            return f"tied to {p.a.tied_to} on both sides"
        return None

    def _wants_heavy(self, p: DiffPair) -> bool:
        """The spectral pass still to do for this pair (a matrix, not yet cached)."""
        return self.spectral and p.is_matrix and id(p) not in self._heavy_done

    def _cache_key(self, p: DiffPair, phase: str) -> tuple[Any, str, str] | None:
        """(A's FileKey, analyzer label, options hash with B's file identity) or None."""
        from wstui.engine.cache import FileKey, options_hash

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

    def _on_idle_locked(self) -> None:
        if self.cache is not None:
            self.cache.flush()

    def _plan(self) -> None:
        if self.device != "cpu":
            warm_up_linalg(self.device)
        if self.use_cache:
            try:
                from wstui.engine.cache import ResultCache

                self.cache = ResultCache(self.cache_path)
            except Exception as exc:  # an unusable cache never stops a diff
                self.cache_error = f"{type(exc).__name__}: {exc}"
        deliveries = []
        with self._lock:
            for pos, p in enumerate(self.pairs):
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
                    self._add_pair_task_locked(p, "cheap", (1, 0, pos))
                    self._cheap_left += 1
                    if self._wants_heavy(p):  # queued once its ranking is known
                        self._reserve_locked(self._cost(p, True), "heavy")
                elif want_heavy and heavy_hit is None:
                    self._add_pair_task_locked(p, "heavy", (1, 1, *rank_key(p)))
                else:
                    self._n_cached += 1
                if cheap_hit is not None or heavy_hit is not None:
                    deliveries.append(p)
            if not self._cancelled:
                self._phase = "cheap"
            if not self._cheap_left:
                self.t_cheap_done = time.perf_counter() - self._t0
        for p in deliveries:
            self._deliver_pair(p)

    def _cost(self, p: DiffPair, heavy: bool) -> float:
        return 2 * task_cost(p.shape, heavy)

    def _add_pair_task_locked(self, p: DiffPair, phase: str, prio: tuple[Any, ...],
                              counted: bool = False) -> Task:
        heavy = phase == "heavy"
        return self._add_task_locked(
            p.a.name, self._run_pair, label=p.key, phase=phase,
            kind="heavy" if heavy else "light", cost=self._cost(p, heavy), slots=1, prio=prio,
            payload=p, counted=counted,
        )

    # ------------------------------------------------------------- one task
    def _load(self, p: DiffPair) -> tuple[Any, Any]:
        ta = p.a.load("cpu", hf_layout=True)
        tb = p.b.load("cpu", hf_layout=True)
        if p.rows is not None:
            ta, tb = ta[: p.rows], tb[: p.rows]
        return ta, tb

    def _run_pair(self, task: Task) -> None:
        try:
            with self.resident():
                self._execute(task.payload, task.phase)
        finally:
            if task.phase == "cheap":
                with self._lock:
                    self._cheap_left -= 1
                    if self._cheap_left == 0 and self.t_cheap_done is None:
                        self.t_cheap_done = time.perf_counter() - self._t0

    def _execute(self, p: DiffPair, phase: str) -> None:
        heavy = phase == "heavy"
        try:
            ta, tb = self._load(p)
        except Exception as exc:
            msg = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            frag = TensorResult(name=p.a.name, kind=p.a.kind, shape=p.shape)
            frag.errors["load"] = msg
            self._land(p, phase, frag, cache=False)
            if not heavy and self._wants_heavy(p):
                with self._lock:
                    self._unreserve_locked(self._cost(p, True), "heavy")
            return
        frag = self._pass(p, ta, tb, heavy)
        self._land(p, phase, frag, cache=not frag.errors)
        if not heavy and self._wants_heavy(p):
            ok = "compare" in frag.metrics and not self._cancelled
            if ok and not self.ranking_first:  # the spectra now, from the tensors in hand
                t0 = time.perf_counter()
                frag = self._pass(p, ta, tb, True)
                self._land(p, "heavy", frag, cache=not frag.errors)
                with self._lock:
                    self._count_done_locked(self._cost(p, True), "heavy",
                                            time.perf_counter() - t0)
            with self._lock:
                if ok and self.ranking_first:
                    # most-changed pair first: the top of the ranking gets its spectra first
                    self._add_pair_task_locked(p, "heavy", (1, 1, *rank_key(p)), counted=True)
                    self._wake_locked()
                elif not ok:
                    self._unreserve_locked(self._cost(p, True), "heavy")
        del ta, tb

    def _pass(self, p: DiffPair, ta: Any, tb: Any, heavy: bool) -> TensorResult:
        frag = self._compare(p, ta, tb, self.device, heavy)
        if self.device != "cpu" and placement.is_oom(frag.errors.get("compare")):
            placement.empty_cache()  # out of device memory: this pair on the CPU, the diff goes on
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
        from wstui.engine.cache import FileKey, options_hash

        spec = core.registry("tensor").get("spectral")
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
        # first pass: elementwise only; second pass: the spectra only (nothing done twice)
        opts = {**self.options, "device": device, "compare_spectral": heavy,
                "compare_elementwise": not heavy}
        known = self._scan_spectra(p) if heavy else None
        if known is not None:
            opts["compare_known_spectra"] = known
        try:
            return self._compare_fn(ta, tb, name=p.a.name, kind=p.a.kind, options=opts)
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
        self._deliver_pair(p)

    def _deliver_pair(self, p: DiffPair) -> None:
        if self._on_result is None:
            return
        with self._lock:
            snap = copy_result(p.result)
        self._deliver(p.a.name, snap)


def diff_checkpoints(
    a: Checkpoint, b: Checkpoint, **kwargs: Any
) -> DiffReport:
    """Blocking convenience: `DiffEngine(a, b, **kwargs).run()`."""
    return DiffEngine(a, b, **kwargs).run()
