"""The one module of `wstui.track` that talks to the engine, the analyzers and the result cache.

Everything the run needs from them goes through here, so that re-pointing the track onto a
re-layered engine is a change of this file's imports:
- `scan_tensors`: a `ScanEngine` over some tensors of one checkpoint (its pool, its cache);
- `compare_tensors`: `analyzers.compare` of one tensor against the same tensor of an earlier
  checkpoint (rel_change always; the spectrum of ΔW only with `delta`);
- `digest`: a hash of a tensor's values, to find the tensors a step did not change;
- the cache entries of digests and compares, and `scan_cache_key`, where `ScanEngine` keeps a
  fragment (the cluster writes its results there, so a later local scan finds them);
- `run_task`: what a cluster worker runs (the same calls, on its own copy of the files).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from analyzers.core import TensorResult
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef

#: track's own cache rows (next to the scan's): a tensor's digest, a compare against an earlier step
DIGEST = "track_digest"
COMPARE = "track_compare"
DIGEST_VERSION = "1"
#: the ΔW spectra ("delta" in --methods); the rest of the methods are scan analyzers
DELTA = "delta"
DEFAULT_METHODS = ("stats", "spectral")
COMPARE_KEYS = ("rel_change", "cosine", "l2_distance", "delta_stable_rank",
                "delta_energy_rank_90")


# ------------------------------------------------------------------------------- methods
def split_methods(methods: Sequence[str] | None) -> tuple[list[str], bool]:
    """(scan analyzers in scan order, whether ΔW spectra are wanted); ValueError naming an
    unknown method."""
    from wstui.scan import validate_methods

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
        from wstui.cache import ResultCache

        return ResultCache(path)
    except Exception:
        return None


def file_key(path: str | Path) -> Any:
    from wstui.cache import FileKey

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
    """(analyzer version, options hash) under which `ScanEngine` caches `method` of `ref`
    (mirrors ScanEngine._hash: the options without `device`, plus the device kind)."""
    from analyzers import core
    from wstui.cache import options_hash

    opts = {k: v for k, v in options.items() if k != "device"}
    return core.registry()[method].version, options_hash({**opts, "device": device_kind(device)})


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
    from wstui.scan import ScanEngine

    if not refs or not methods:
        return {}, 0
    engine = ScanEngine(ckpt, methods=list(methods), device=device, workers=workers,
                        use_cache=use_cache, options=dict(options), tensors=list(refs))
    report = engine.run()
    if engine.error:
        raise RuntimeError(f"scan failed: {engine.error}")
    return {e.ref.name: e.result for e in report.entries}, engine.progress().cached


# ------------------------------------------------------------------------------- digests
_TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def digest(ref: TensorRef) -> str:
    """blake2b of the tensor's values as stored (F32/F16/BF16/F64; other types as float32)."""
    import torch

    dtype = getattr(torch, _TORCH_DTYPES.get(ref.dtype, "float32"))
    t = ref.load("cpu", dtype=dtype).contiguous().reshape(-1)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((ref.dtype, tuple(ref.shape))).encode())
    h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def cached_digest(cache: Any, ref: TensorRef) -> str | None:
    frag = _get(cache, ref.file, ref.name, DIGEST, DIGEST_VERSION, "")
    return frag.metrics.get(DIGEST, {}).get("blake2b") if frag is not None else None


def put_digest(cache: Any, ref: TensorRef, value: str) -> None:
    frag = TensorResult(name=ref.name, metrics={DIGEST: {"blake2b": value}})
    _put(cache, ref.file, ref.name, DIGEST, DIGEST_VERSION, "", frag)


# ------------------------------------------------------------------------------- compares
def compare_version() -> str:
    """A hash of analyzers/compare.py: a change to it invalidates cached compares."""
    import importlib

    mod = importlib.import_module("analyzers.compare")
    try:
        return "1-" + hashlib.sha256(Path(mod.__file__).read_bytes()).hexdigest()[:12]
    except OSError:  # pragma: no cover
        return "1"


def _compare_opts(a: TensorRef, delta: bool, options: Mapping[str, Any], device: str) -> str:
    from wstui.cache import options_hash

    fk = file_key(a.file)
    other = [fk.path, fk.size, fk.mtime_ns] if fk is not None else str(a.file)
    opts = {k: v for k, v in options.items() if k != "device"}
    return options_hash({**opts, "against": other, "against_tensor": a.name, "delta": delta,
                         "device": device_kind(device)})


def cached_compare(cache: Any, a: TensorRef, b: TensorRef, *, delta: bool,
                   options: Mapping[str, Any], device: str) -> dict[str, Any] | None:
    frag = _get(cache, b.file, b.name, COMPARE, compare_version(),
                _compare_opts(a, delta, options, device))
    return dict(frag.metrics.get(COMPARE, {})) if frag is not None else None


def put_compare(cache: Any, a: TensorRef, b: TensorRef, metrics: Mapping[str, Any], *,
                delta: bool, options: Mapping[str, Any], device: str) -> None:
    if "error" in metrics:
        return
    frag = TensorResult(name=b.name, metrics={COMPARE: dict(metrics)})
    _put(cache, b.file, b.name, COMPARE, compare_version(),
         _compare_opts(a, delta, options, device), frag)


#: only ΔW's spectrum: the alphas and spectra of A and B are the scan's (issue 17)
_NO_AB_SPECTRA = {"alpha_a": None, "alpha_b": None, "spectrum_a": [], "spectrum_b": [],
                  "spectrum_rank": []}


def compare_tensors(a: TensorRef, b: TensorRef, *, delta: bool, options: Mapping[str, Any],
                    device: str, tb: Any = None) -> dict[str, Any]:
    """B against A (an earlier step): the `COMPARE_KEYS` of `analyzers.compare`, or
    `{"error": ...}`. `tb`: B already loaded."""
    import analyzers

    try:
        ta = a.load("cpu")
        if tb is None:
            tb = b.load("cpu")
    except Exception as exc:
        return {"error": str(exc) if isinstance(exc, CheckpointError) else
                f"{type(exc).__name__}: {exc}"}
    opts: dict[str, Any] = {k: v for k, v in options.items() if k != "device"}
    opts["device"] = device
    if delta:
        opts["compare_known_spectra"] = _NO_AB_SPECTRA
    else:
        opts["compare_spectral"] = False
    r = analyzers.compare(ta, tb, name=b.name, kind=b.kind, options=opts)
    if "compare" in r.errors:
        return {"error": r.errors["compare"]}
    m = r.metrics.get("compare", {})
    if not m and "compare" in r.skipped:
        return {"skipped": r.skipped["compare"]}
    return {k: m[k] for k in COMPARE_KEYS if k in m}


# ------------------------------------------------------------------------------- threads
def thread_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """`fn` over `items` on `workers` threads (torch, LAPACK and hashlib release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wstui-track") as pool:
        return list(pool.map(fn, items))


def cpu_count() -> int:
    from wstui.scan import cpu_count as engine_cpu_count

    return engine_cpu_count()


# ------------------------------------------------------------------------------- cluster task
_open_lock = threading.Lock()
_opened: OrderedDict[str, tuple[Any, Checkpoint]] = OrderedDict()
_MAX_OPEN = 4


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
            _opened.popitem(last=False)[1].close()
        return ckpt


def run_task(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One cluster task: tensors of one checkpoint, read by the worker from the shared path.

    `spec["kind"]`: "digest" -> `{"digests": {name: hex}}`; "analyze" -> `{"results": {name:
    {"fragments": {method: TensorResult dict}, "prev": compare, "first": compare}}}`, with
    the compares only where `prev`/`first` (checkpoint paths) are given. Plain values only:
    small documents, never arrays."""
    ckpt = _checkpoint(spec["path"])
    refs = [ckpt.tensor(n) for n in spec["names"]]
    info = {"host": os.uname().nodename, "pid": os.getpid()}
    if spec["kind"] == "digest":
        return {**info, "digests": {r.name: digest(r) for r in refs}}
    methods, options, device = spec["methods"], spec["options"], spec["device"]
    results, _ = scan_tensors(ckpt, refs, methods=methods, device=device, workers=1,
                              use_cache=False, options=options)
    out: dict[str, Any] = {}
    for ref in refs:
        entry: dict[str, Any] = {"fragments": {}}
        if ref.name in results:
            entry["fragments"] = {m: f.to_dict(with_data=True) for m, f in
                                  split_result(results[ref.name], methods).items()}
        for side in ("prev", "first"):
            if spec.get(side):
                a = _checkpoint(spec[side]).tensor(ref.name)
                entry[side] = compare_tensors(a, ref, delta=spec["delta"], options=options,
                                              device=device)
        out[ref.name] = entry
    return {**info, "results": out}


def fragment_from_dict(d: Mapping[str, Any]) -> TensorResult:
    return TensorResult.from_dict(d)
