"""The one module of `wstui track` that talks to the engine, the analyzers and the result cache.

Everything the run needs from them goes through here, so that re-pointing the track onto a
re-layered engine is a change of this file's imports:
- `scan_tensors`: a `ScanEngine` over some tensors of one checkpoint (its pool, its cache);
- `change_chain`: one tensor through every step, each read once: unchanged or not (bitwise),
  rel_change against the previous and the first step, and with `delta` the energy rank of ΔW
  (`analyzers.compare`);
- the cache rows of the chains, and `scan_cache_key`, where `ScanEngine` keeps a fragment
  (the cluster writes its results there, so a later local scan finds them);
- `run_task`: what a cluster worker runs (the same calls, on its own copy of the files).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from analyzers.core import TensorResult
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef

#: track's own cache rows (next to the scan's): one tensor's change chain through the run
CHANGE = "track_change"
#: the ΔW spectra ("delta" in --methods); the rest of the methods are scan analyzers
DELTA = "delta"
DEFAULT_METHODS = ("stats", "spectral")


# ------------------------------------------------------------------------------- methods
def split_methods(methods: Sequence[str] | None) -> tuple[list[str], bool]:
    """(scan analyzers in scan order, whether ΔW spectra are wanted); ValueError naming an
    unknown method."""
    from wstui.engine.scan import validate_methods

    wanted = list(methods) if methods is not None else list(DEFAULT_METHODS)
    delta = DELTA in wanted
    scan = [m for m in wanted if m != DELTA]
    try:
        return (validate_methods(scan) if scan else []), delta
    except ValueError as exc:
        raise ValueError(f"{exc}; or {DELTA!r} (the spectrum of ΔW)") from None


def resolve_device(device: str) -> str:
    """'auto' as the engine resolves it on this machine."""
    from analyzers.core import pick_device

    return pick_device(device)


def device_kind(device: str) -> str:
    return device.split(":")[0]


# ------------------------------------------------------------------------------- cache
def open_cache(use_cache: bool, path: str | Path | None = None) -> Any:
    """The result cache (None when not used or unusable: the run goes on without it)."""
    if not use_cache:
        return None
    try:
        from wstui.engine.cache import ResultCache

        return ResultCache(path)
    except Exception:
        return None


def file_key(path: str | Path) -> Any:
    from wstui.engine.cache import FileKey

    try:
        return FileKey.of(path)
    except OSError:
        return None


def _get(cache: Any, path: Path, name: str, analyzer: str, version: str,
         opts: str) -> TensorResult | None:
    if cache is None:
        return None
    fk = file_key(path)
    if fk is None:
        return None
    try:
        return cache.get(fk, name, analyzer, version, opts)
    except Exception:
        return None


def _put(cache: Any, path: Path, name: str, analyzer: str, version: str, opts: str,
         frag: TensorResult) -> None:
    if cache is None or frag.errors:
        return
    fk = file_key(path)
    if fk is None:
        return
    with contextlib.suppress(Exception):  # an unusable cache never stops a run
        cache.put(fk, name, analyzer, version, opts, frag)


def scan_cache_key(ref: TensorRef, method: str, options: Mapping[str, Any],
                   device: str) -> tuple[str, str]:
    """(analyzer version, options hash) under which `ScanEngine` caches `method` of `ref`."""
    from analyzers import core
    from wstui.engine.scan import options_key

    return core.registry()[method].version, options_key(options, device)


def cached_scan(cache: Any, ref: TensorRef, methods: Sequence[str], options: Mapping[str, Any],
                device: str) -> TensorResult | None:
    """The merged cached result of every method, or None when one is missing."""
    out = TensorResult(name=ref.name, kind=ref.kind, shape=tuple(ref.shape))
    for m in methods:
        version, h = scan_cache_key(ref, m, options, device)
        frag = _get(cache, ref.file, ref.name, m, version, h)
        if frag is None:
            return None
        out.merge(frag)
    return out


def put_scan(cache: Any, ref: TensorRef, fragments: Mapping[str, TensorResult],
             options: Mapping[str, Any], device: str) -> None:
    for m, frag in fragments.items():
        version, h = scan_cache_key(ref, m, options, device)
        _put(cache, ref.file, ref.name, m, version, h, frag)


def split_result(result: TensorResult, methods: Sequence[str]) -> dict[str, TensorResult]:
    """A merged result cut back into one fragment per analyzer (as the engine caches them)."""
    out = {}
    for m in methods:
        out[m] = TensorResult(
            name=result.name, kind=result.kind, shape=tuple(result.shape),
            metrics={m: result.metrics[m]} if m in result.metrics else {},
            findings=[f for f in result.findings if f.analyzer == m],
            data={m: result.data[m]} if m in result.data else {},
            skipped={m: result.skipped[m]} if m in result.skipped else {},
            errors={k: v for k, v in result.errors.items() if k in (m, "load", "engine")},
            timings={m: result.timings[m]} if m in result.timings else {},
        )
    return out


# ------------------------------------------------------------------------------- scan
def scan_tensors(ckpt: Checkpoint, refs: Sequence[TensorRef], *, methods: Sequence[str],
                 device: str, workers: int | None, use_cache: bool,
                 options: Mapping[str, Any]) -> tuple[dict[str, TensorResult], int]:
    """Scan `refs` of `ckpt` with the scan engine: (results by stored name, tensors served
    wholly from the cache)."""
    from wstui.engine.scan import ScanEngine

    if not refs or not methods:
        return {}, 0
    engine = ScanEngine(ckpt, methods=list(methods), device=device, workers=workers,
                        use_cache=use_cache, options=dict(options), tensors=list(refs))
    report = engine.run()
    if engine.error:
        raise RuntimeError(f"scan failed: {engine.error}")
    return {e.ref.name: e.result for e in report.entries}, engine.progress().cached


# ------------------------------------------------------------------------------- changes
def chain_key(refs: Sequence[TensorRef], delta: bool, options: Mapping[str, Any],
              device: str) -> str:
    """Options hash of one tensor's change chain: every step's file identity is in it."""
    from wstui.engine.cache import options_hash

    files = []
    for r in refs:
        fk = file_key(r.file)
        files.append([fk.path, fk.size, fk.mtime_ns] if fk is not None else str(r.file))
    opts = {k: v for k, v in options.items() if k != "device"}
    return options_hash({**opts, "files": files, "delta": delta, "device": device_kind(device)})


def cached_chain(cache: Any, refs: Sequence[TensorRef], *, delta: bool,
                 options: Mapping[str, Any], device: str) -> list[dict[str, Any]] | None:
    frag = _get(cache, refs[0].file, refs[0].name, CHANGE, change_version(),
                chain_key(refs, delta, options, device))
    return frag.data.get(CHANGE, {}).get("steps") if frag is not None else None


def put_chain(cache: Any, refs: Sequence[TensorRef], chain: Sequence[Mapping[str, Any]], *,
              delta: bool, options: Mapping[str, Any], device: str) -> None:
    if any("error" in c for c in chain):
        return
    frag = TensorResult(name=refs[0].name, data={CHANGE: {"steps": [dict(c) for c in chain]}})
    _put(cache, refs[0].file, refs[0].name, CHANGE, change_version(),
         chain_key(refs, delta, options, device), frag)


_VERSION: list[str] = []


def change_version() -> str:
    """A hash of this file and analyzers/compare.py: a change to either invalidates cached
    chains."""
    import importlib

    if not _VERSION:
        text = b""
        for mod in (importlib.import_module("analyzers.compare"),
                    importlib.import_module(__name__)):
            with contextlib.suppress(OSError, TypeError):
                text += Path(mod.__file__).read_bytes()
        _VERSION.append("1-" + hashlib.sha256(text).hexdigest()[:12])
    return _VERSION[0]


def _bits(t: Any) -> Any:
    """A float32 tensor's bits (NaN equals NaN, -0.0 differs from 0.0: equality of bytes)."""
    import torch

    return t.view(torch.int32) if t.dtype == torch.float32 else t


def _rel(d_norm: float, a_norm: float) -> float:
    if a_norm > 0:
        return d_norm / a_norm
    return 0.0 if d_norm == 0 else math.inf


#: only ΔW's spectrum: the alphas and spectra of A and B are the scan's (issue 17)
_NO_AB_SPECTRA = {"alpha_a": None, "alpha_b": None, "spectrum_a": [], "spectrum_b": [],
                  "spectrum_rank": []}


def _delta_rank(a: Any, b: Any, options: Mapping[str, Any], device: str) -> Any:
    """`delta_energy_rank_90` of B - A from `analyzers.compare` (its spectrum of ΔW only)."""
    import analyzers

    opts = {**{k: v for k, v in options.items() if k != "device"}, "device": device,
            "compare_known_spectra": _NO_AB_SPECTRA}
    r = analyzers.compare(a, b, options=opts)
    if "compare" in r.errors:
        raise RuntimeError(r.errors["compare"])
    return r.metrics.get("compare", {}).get("delta_energy_rank_90")


def change_chain(refs: Sequence[TensorRef], *, delta: bool, options: Mapping[str, Any],
                 device: str) -> list[dict[str, Any]]:
    """One tensor through the run (`refs`: the tensor at each step, in order), each step read
    once: per step `same` (values bitwise equal to the previous step's), `rel_change_prev`,
    `rel_change_first` (‖B-A‖_F/‖A‖_F, the definition of `analyzers.compare`), and with
    `delta` the energy rank of ΔW against the previous and the first step (`analyzers.compare`,
    matrices only). An unreadable step is `{"error": ...}`, and so is every step after it."""
    import torch

    with_delta = delta and refs[0].is_matrix
    out: list[dict[str, Any]] = []
    first = prev = None
    first_norm = prev_norm = 0.0
    for i, ref in enumerate(refs):
        try:
            w = ref.load("cpu")
        except Exception as exc:
            msg = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            out.extend({"error": msg} for _ in refs[i:])
            return out
        if i == 0:
            first = prev = w
            first_norm = prev_norm = float(torch.linalg.vector_norm(w))
            out.append({"same": False, "rel_change_prev": None, "rel_change_first": 0.0,
                        **({"delta_energy_rank_first": 0} if with_delta else {})})
            continue
        if w.shape == prev.shape and torch.equal(_bits(w), _bits(prev)):
            step = dict(out[-1])
            step.update(same=True, rel_change_prev=0.0)
            if with_delta:
                step["delta_energy_rank_prev"] = 0
            out.append(step)
            continue
        step = {"same": False,
                "rel_change_prev": _rel(float(torch.linalg.vector_norm(w - prev)), prev_norm)}
        step["rel_change_first"] = step["rel_change_prev"] if i == 1 else _rel(
            float(torch.linalg.vector_norm(w - first)), first_norm)
        if with_delta:
            try:
                step["delta_energy_rank_prev"] = _delta_rank(prev, w, options, device)
                step["delta_energy_rank_first"] = (
                    step["delta_energy_rank_prev"] if i == 1 else
                    _delta_rank(first, w, options, device))
            except Exception as exc:
                step["error"] = f"delta: {type(exc).__name__}: {exc}"
        out.append(step)
        prev, prev_norm = w, float(torch.linalg.vector_norm(w))
    return out


# ------------------------------------------------------------------------------- threads
def thread_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """`fn` over `items` on `workers` threads (torch, LAPACK and hashlib release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wstui-track") as pool:
        return list(pool.map(fn, items))


def set_threads(n: int) -> None:
    """torch's intra-op threads for the calling thread."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


# ------------------------------------------------------------------------------- cluster task
_open_lock = threading.Lock()
_opened: OrderedDict[str, tuple[Any, Checkpoint]] = OrderedDict()
_MAX_OPEN = 64


def _checkpoint(path: str) -> Checkpoint:
    """An open checkpoint for a worker, kept across its tasks while the files are unchanged."""
    from wstui.checkpoint import open_checkpoint

    sig = tuple(file_key(f) for f in _opened[path][1].files) if path in _opened else None
    with _open_lock:
        if path in _opened and _opened[path][0] == sig:
            _opened.move_to_end(path)
            return _opened[path][1]
        if path in _opened:
            _opened.pop(path)[1].close()
        ckpt = open_checkpoint(path)
        _opened[path] = (tuple(file_key(f) for f in ckpt.files), ckpt)
        while len(_opened) > _MAX_OPEN:
            _opened.popitem(last=False)[1][1].close()
        return ckpt


def run_task(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One cluster task; the worker reads the tensors from the shared paths. Plain values
    back, small documents, never arrays:
    - "changes": `spec["paths"]` (every step), `names` -> `{"chains": {name: change_chain}}`;
    - "analyze": `spec["path"]`, `names` -> `{"results": {name: {method: fragment dict}}}`,
      the scan engine's fragments, as it caches them."""
    import time

    t0 = time.perf_counter()
    out = _run_task(spec)
    return {**out, "host": os.uname().nodename, "pid": os.getpid(),
            "task_s": time.perf_counter() - t0}


def _run_task(spec: Mapping[str, Any]) -> dict[str, Any]:
    options, device = spec["options"], spec["device"]
    if spec["kind"] == "changes":
        set_threads(1)  # a change task asks for one CPU
        ckpts = [_checkpoint(p) for p in spec["paths"]]
        return {"chains": {
            n: change_chain([ck.tensor(n) for ck in ckpts], delta=spec["delta"],
                            options=options, device=device) for n in spec["names"]}}
    ckpt = _checkpoint(spec["path"])
    refs = [ckpt.tensor(n) for n in spec["names"]]
    methods = spec["methods"]
    results, _ = scan_tensors(ckpt, refs, methods=methods, device=device, workers=None,
                              use_cache=False, options=options)
    return {"results": {
        n: {m: f.to_dict(with_data=True) for m, f in split_result(r, methods).items()}
        for n, r in results.items()}}


def fragment_from_dict(d: Mapping[str, Any]) -> TensorResult:
    return TensorResult.from_dict(d)
