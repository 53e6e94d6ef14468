"""Shared types of the analyzers: results, findings, thresholds, the registry and `analyze`.

Importing this module must not import torch: the app reads these types before torch is
loaded (DESIGN §2). Everything torch-related is imported inside the functions that need it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


class Severity(str, Enum):
    """How bad a finding is; ordered info < warn < critical."""

    INFO = "info"
    WARN = "warn"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARN: 1, Severity.CRITICAL: 2}

#: Codes whose value is bad when it is *below* the threshold (all others: above).
LOWER_IS_WORSE = frozenset({"alpha_low", "int8_lossy", "low_rank"})

#: DESIGN §6 defaults. A `<code>.critical` key holds the second, critical level.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "ill_conditioned": 1e5,
    "ill_conditioned.critical": 1e8,
    "alpha_low": 2.0,
    "alpha_high": 6.0,
    "int8_lossy": 26.0,
    "int8_lossy.critical": 16.0,
    "outliers": 0.05,
    "outliers.critical": 0.12,
    "dead_units": 0.0,
    "dead_units.critical": 0.10,
    "low_rank": 0.1,
    "low_rank.min_design_rank": 64.0,
    "low_norm_tokens": 0.0,
    "large_change": 0.5,
}


@dataclass(frozen=True)
class Finding:
    """One rule of DESIGN §6 that a tensor broke."""

    analyzer: str
    code: str
    severity: Severity
    value: float | None
    threshold: float | None
    message: str

    def excess(self) -> float:
        """How far past its threshold the value is, as a log ratio (for ranking top issues)."""
        v, t = self.value, self.threshold
        if v is None or t is None or not math.isfinite(t):
            return math.inf
        if not math.isfinite(v):
            return math.inf
        if t > 0 and v > 0:
            r = math.log(v / t)
        else:
            r = v - t
        return -r if self.code in LOWER_IS_WORSE else r

    def to_dict(self) -> dict[str, Any]:
        return {
            "analyzer": self.analyzer,
            "code": self.code,
            "severity": self.severity.value,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        return cls(
            analyzer=d["analyzer"],
            code=d["code"],
            severity=Severity(d["severity"]),
            value=d.get("value"),
            threshold=d.get("threshold"),
            message=d.get("message", ""),
        )


def top_issue_key(finding: Finding) -> tuple[int, float]:
    """Sort key: critical before warn before info, then by how far past the threshold."""
    return (-finding.severity.rank, -finding.excess())


@dataclass
class TensorResult:
    """What the analyzers found for one tensor.

    `metrics[analyzer]` holds exactly the DESIGN §5 keys of that analyzer; `data[analyzer]`
    holds the arrays behind its plots (lists or numpy arrays); `skipped[analyzer]` says why an
    analyzer did not apply; `errors[analyzer]` records an analyzer that raised.
    """

    name: str
    kind: str | None = None
    shape: tuple[int, ...] = ()
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def worst_severity(self) -> Severity | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=lambda s: s.rank)

    def merge(self, other: TensorResult) -> TensorResult:
        """Fold a later partial result for the same tensor into this one (in place)."""
        for analyzer, values in other.metrics.items():
            self.metrics.setdefault(analyzer, {}).update(values)
        for analyzer, values in other.data.items():
            self.data.setdefault(analyzer, {}).update(values)
        seen = {(f.analyzer, f.code) for f in other.findings}
        self.findings = [f for f in self.findings if (f.analyzer, f.code) not in seen]
        self.findings.extend(other.findings)
        for analyzer in other.metrics:
            self.skipped.pop(analyzer, None)
            self.errors.pop(analyzer, None)
        self.skipped.update(other.skipped)
        self.errors.update(other.errors)
        self.timings.update(other.timings)
        self.elapsed_s += other.elapsed_s
        if other.kind and not self.kind:
            self.kind = other.kind
        if other.shape and not self.shape:
            self.shape = other.shape
        return self

    def to_dict(self, *, with_data: bool = True) -> dict[str, Any]:
        """A plain dict (numpy values turned into Python ones); non-finite floats kept as is."""
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "metrics": to_plain(self.metrics),
            "findings": [f.to_dict() for f in self.findings],
            "skipped": dict(self.skipped),
            "errors": dict(self.errors),
            "timings": dict(self.timings),
            "elapsed_s": self.elapsed_s,
        }
        if with_data:
            d["data"] = to_plain(self.data)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorResult:
        return cls(
            name=d["name"],
            kind=d.get("kind"),
            shape=tuple(d.get("shape", ())),
            metrics={k: dict(v) for k, v in d.get("metrics", {}).items()},
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            data={k: dict(v) for k, v in d.get("data", {}).items()},
            skipped=dict(d.get("skipped", {})),
            errors=dict(d.get("errors", {})),
            timings=dict(d.get("timings", {})),
            elapsed_s=float(d.get("elapsed_s", 0.0)),
        )


def to_plain(obj: Any) -> Any:
    """numpy/torch scalars and arrays -> Python floats, ints and lists (recursively)."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, Enum):
        return obj.value
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:
        return to_plain(tolist())
    item = getattr(obj, "item", None)
    if item is not None:
        return item()
    return obj


class SkipAnalyzer(Exception):
    """Raised by an analyzer that does not apply to a tensor; the message is the reason."""


def is_matrix_shape(shape: Sequence[int]) -> bool:
    """DESIGN §5: a matrix has two dims or more (`(shape[0], -1)` beyond two), at least two
    rows and at least two columns. The one rule, for tensors; `TensorRef.is_matrix` applies
    it to a checkpoint's tensors before they are loaded."""
    if len(shape) < 2 or int(shape[0]) < 2:
        return False
    n = 1
    for s in shape:
        n *= int(s)
    return n // int(shape[0]) >= 2


@dataclass
class Context:
    """What an analyzer function gets: the tensor as float32 plus everything known about it.

    `tensor` is a numpy array on the CPU (a CPU scan never imports torch) and a torch tensor
    on a GPU; `xp(ctx.tensor)` gives the numpy-named functions that work on either."""

    name: str
    tensor: Any  # float32, finite (unless the analyzer is `stats`): numpy, or torch on a GPU
    kind: str | None
    options: Mapping[str, Any]
    thresholds: Mapping[str, float]
    cache: dict[str, Any] = field(default_factory=dict)  # shared between analyzers of one call

    @property
    def is_matrix(self) -> bool:
        return is_matrix_shape(self.tensor.shape)

    @property
    def matrix_cols(self) -> int:
        t = self.tensor
        return int(numel(t) // t.shape[0]) if t.ndim >= 1 and t.shape[0] else 0

    def matrix(self) -> Any:
        """The tensor as a 2-D matrix: `(shape[0], -1)` for more than two dims (DESIGN §5)."""
        t = self.tensor
        return t if t.ndim == 2 else t.reshape(t.shape[0], math.prod(t.shape[1:]))


@dataclass
class Output:
    """What an analyzer function returns."""

    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    #: metrics to merge into *another* analyzer's section, e.g. quant_alpha -> quantization
    extra_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: plot data to merge into another analyzer's section, e.g. quantization_full -> quantization
    extra_data: dict[str, dict[str, Any]] = field(default_factory=dict)


AnalyzerFn = Callable[[Context], Output]


@dataclass(frozen=True)
class AnalyzerSpec:
    name: str
    fn: AnalyzerFn
    version: str
    heavy: bool  # heavy analyzers (eigen-decompositions) run after every cheap one (DESIGN §7)
    needs_finite: bool = True
    default: bool = True  # part of the default scan
    #: what it analyzes: "tensor" (fn(Context) -> Output, run by `analyze`), "pair" (two
    #: tensors: fn(a, b, *, name, kind, options) -> TensorResult), "model" (a whole model
    #: held on one worker; run by its own runner)
    scope: str = "tensor"


_REGISTRY: dict[str, AnalyzerSpec] = {}


SCOPES = ("tensor", "pair", "model")


def register(
    name: str, *, version: str, heavy: bool = False, needs_finite: bool = True,
    default: bool = True, scope: str = "tensor",
) -> Callable[[Any], Any]:
    """Decorator that adds an analyzer function to the registry under `name`."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")

    def deco(fn: Any) -> Any:
        _REGISTRY[name] = AnalyzerSpec(name, fn, version, heavy, needs_finite, default, scope)
        return fn

    return deco


def registry(scope: str | None = None) -> Mapping[str, AnalyzerSpec]:
    """The registered analyzers (of one scope, when given)."""
    _load_all()
    return {n: s for n, s in _REGISTRY.items() if scope is None or s.scope == scope}


def names(scope: str = "tensor") -> list[str]:
    """Every registered analyzer of `scope` (per-tensor by default), cheap ones first, in the
    order a scan runs them."""
    _load_all()
    own = [n for n, s in _REGISTRY.items() if s.scope == scope]
    return sorted(own, key=lambda n: (_REGISTRY[n].heavy, _ORDER.get(n, 99), n))


def default_methods() -> list[str]:
    return [n for n in names() if _REGISTRY[n].default]


_ORDER = {"stats": 0, "sparsity": 1, "quantization": 2, "embedding": 3, "spectral": 10}


#: Modules that register analyzers, imported for their @register side effects.
_MODULES = (
    "stats", "sparsity", "quantization", "embedding", "spectral", "quant_alpha", "quant_sweep",
    "compare",
)


def _load_all() -> None:
    """Import every analyzer module present in the package. A module that is not there (the
    package is built in pieces) is left out; one that is there but fails to import raises."""
    import importlib
    import importlib.util

    for mod in _MODULES:
        full = f"analyzers.{mod}"
        if importlib.util.find_spec(full) is not None:
            importlib.import_module(full)


def thresholds_from(options: Mapping[str, Any] | None) -> dict[str, float]:
    merged = dict(DEFAULT_THRESHOLDS)
    if options:
        merged.update({k: float(v) for k, v in (options.get("thresholds") or {}).items()})
    return merged


# --------------------------------------------------------------------------- arrays
# The analyzers compute on numpy arrays on the CPU and on torch tensors on a GPU, with one copy
# of each formula: they call numpy-named functions through `xp(x)`, which is numpy itself for
# a numpy array and `_TorchNumpy` (the same names over torch) for a torch tensor. numpy serves
# the CPU as fast as torch (ns a value, one thread: div/round/mul 0.22 vs 0.20, sub and two
# dots 0.23 vs 0.26, min/max 0.12 vs 0.13, bincount as fast, bf16 widening 0.17 vs 1.71), and
# a CPU scan then never pays the 1.2-1.7 s of `import torch`.


def loaded_torch() -> Any:
    """The torch module once some thread has finished importing it, else None. A CPU scan of
    safetensors never imports torch, but a diff's compare does, on one worker: while that
    import runs, `"torch" in sys.modules` is already true on the other workers, and the half
    built module has no `get_num_threads` yet (a worker died of it, and the diff waited for it
    forever)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or getattr(getattr(torch, "__spec__", None), "_initializing", False):
        return None
    return torch


def is_torch(x: Any) -> bool:
    """True for a torch tensor (or parameter), without importing torch."""
    return type(x).__module__.partition(".")[0] == "torch"


def numel(x: Any) -> int:
    return int(x.numel()) if is_torch(x) else int(x.size)


def xp(x: Any) -> Any:
    """numpy for a numpy array, the torch twin of its functions for a torch tensor."""
    return _TorchNumpy.get() if is_torch(x) else _numpy()


def _numpy() -> Any:
    import numpy

    return numpy


def to_numpy(x: Any) -> Any:
    """A host numpy array of `x` (no copy for a numpy array or a CPU tensor)."""
    if is_torch(x):
        return x.detach().cpu().numpy()
    import numpy as np

    return np.asarray(x)


class _TorchNumpy:
    """The numpy functions the analyzers use, over torch tensors (for the GPU path)."""

    _one: _TorchNumpy | None = None

    @classmethod
    def get(cls) -> _TorchNumpy:
        if cls._one is None:
            cls._one = cls()
        return cls._one

    def __init__(self) -> None:
        import torch

        self.t = torch
        self.float32, self.float64 = torch.float32, torch.float64
        self.int32, self.int64, self.bool_ = torch.int32, torch.int64, torch.bool
        for name, fn in (("abs", torch.abs), ("negative", torch.neg), ("sqrt", torch.sqrt),
                         ("square", torch.square), ("rint", torch.round),
                         ("isfinite", torch.isfinite), ("isnan", torch.isnan),
                         ("isinf", torch.isinf), ("exp", torch.exp), ("log", torch.log)):
            setattr(self, name, _unary(fn))
        for name, fn in (("add", torch.add), ("subtract", torch.sub), ("multiply", torch.mul),
                         ("divide", torch.div), ("maximum", torch.maximum),
                         ("minimum", torch.minimum)):
            setattr(self, name, _binary(fn, torch))

    def clip(self, a: Any, lo: float, hi: float, out: Any = None) -> Any:
        return self.t.clamp(a, lo, hi, out=out) if out is not None else self.t.clamp(a, lo, hi)

    def min(self, a: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return a.min() if axis is None else a.amin(dim=axis, keepdim=keepdims)

    def max(self, a: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return a.max() if axis is None else a.amax(dim=axis, keepdim=keepdims)

    def sum(self, a: Any, axis: int | None = None, dtype: Any = None) -> Any:
        if axis is None:
            return a.sum(dtype=dtype)
        return a.sum(dim=axis, dtype=dtype)

    def mean(self, a: Any, axis: int | None = None) -> Any:
        return a.mean() if axis is None else a.mean(dim=axis)

    def count_nonzero(self, a: Any) -> Any:
        return self.t.count_nonzero(a)

    def flatnonzero(self, a: Any) -> Any:
        return self.t.nonzero(a.reshape(-1)).reshape(-1)

    def bincount(self, a: Any, minlength: int = 0) -> Any:
        return self.t.bincount(a, minlength=minlength)

    def argmax(self, a: Any, axis: int | None = None) -> Any:
        return self.t.argmax(a, dim=axis)

    def astype(self, a: Any, dtype: Any) -> Any:
        return a.to(dtype)

    def empty(self, shape: Any, dtype: Any = None, like: Any = None) -> Any:
        device = like.device if like is not None else None
        return self.t.empty(shape, dtype=dtype or self.float32, device=device)

    def zeros(self, shape: Any, dtype: Any = None, like: Any = None) -> Any:
        device = like.device if like is not None else None
        return self.t.zeros(shape, dtype=dtype or self.float32, device=device)

    def empty_like(self, a: Any) -> Any:
        return self.t.empty_like(a)

    def arange(self, n: int, dtype: Any = None, like: Any = None) -> Any:
        device = like.device if like is not None else None
        return self.t.arange(n, dtype=dtype or self.int64, device=device)

    def take(self, a: Any, index: Any) -> Any:
        return a.index_select(0, index)

    def asarray(self, a: Any, like: Any = None) -> Any:
        import numpy as np

        device = like.device if like is not None else None
        return self.t.from_numpy(np.ascontiguousarray(a)).to(device)

    def vecdot(self, a: Any, b: Any) -> Any:
        return self.t.linalg.vecdot(a, b)

    def concatenate(self, parts: Any, axis: int = 0) -> Any:
        return self.t.cat(list(parts), dim=axis)


def _unary(fn: Any) -> Any:
    def f(a: Any, out: Any = None) -> Any:
        return fn(a) if out is None else fn(a, out=out)

    return f


def _binary(fn: Any, torch: Any) -> Any:
    def f(a: Any, b: Any, out: Any = None) -> Any:
        if not is_torch(a):
            a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
        if out is None:
            return fn(a, b)
        return fn(a, b, out=out)

    return f


def as_array(tensor: Any, device: str | None = None) -> Any:
    """Any tensor-like -> float32 for the analyzers: a numpy array on the CPU (torch is not
    imported for a numpy input), a torch tensor on another device. A CPU bfloat16 tensor is
    widened by `bf16_to_float32`."""
    import numpy as np

    if is_torch(tensor):
        import torch

        t = tensor.detach()  # an nn.Parameter must not drag autograd into the analyzers
        target = device or t.device.type
        if target == "cpu":
            if t.device.type != "cpu":
                t = t.cpu()
            if t.dtype == torch.bfloat16:
                return bf16_to_float32(t).numpy()
            if t.dtype != torch.float32:
                t = t.to(torch.float32)
            return t.numpy()
        return as_float32(t, device)
    arr = np.asarray(tensor)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if device is not None and device != "cpu":
        return as_float32(arr, device)
    return arr


def as_float32(tensor: Any, device: str | None = None) -> torch.Tensor:
    """Any tensor-like (torch of any float dtype incl. bf16/fp8, numpy, list) -> float32 torch."""
    import numpy as np
    import torch

    if isinstance(tensor, torch.Tensor):
        t = tensor.detach()  # an nn.Parameter must not drag autograd into the analyzers
    else:
        arr = np.asarray(tensor)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        elif not arr.flags.writeable:  # e.g. a memory map: torch would warn on sharing it
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if t.dtype == torch.bfloat16 and t.device.type == "cpu" and (device or "cpu") == "cpu":
        t = bf16_to_float32(t)
    elif t.dtype != torch.float32:
        t = t.to(torch.float32)
    if device is not None and str(t.device) != device:
        t = t.to(device)
    return t


def bf16_to_float32(t: torch.Tensor) -> torch.Tensor:
    """A CPU bfloat16 tensor as float32, exactly: bf16 is the top half of a float32, so its
    bits shifted left by 16 are the float32 bits. numpy's shift took 0.17 ns a value where
    torch's `.to(torch.float32)` took 1.7 (2^20 values, one thread)."""
    import numpy as np
    import torch

    bits = t.contiguous().view(torch.int16).numpy().view(np.uint16)
    out = np.left_shift(bits, 16, dtype=np.uint32)
    return torch.from_numpy(out.view(np.float32))


def pick_device(preference: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is present, else 'mps', else 'cpu'; other values pass through.
    Where no GPU can be present, 'cpu' comes without importing torch (1.2-1.7 s), so that a
    scan served from the cache never imports it."""
    if preference != "auto":
        return preference
    import sys

    if "torch" not in sys.modules and not _gpu_possible():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _gpu_possible() -> bool:
    """False only where torch certainly sees no GPU: Linux without NVIDIA, ROCm or WSL GPU
    device nodes, or a Mac that is not Apple silicon. Elsewhere torch is asked."""
    import glob
    import os
    import platform
    import sys

    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if sys.platform.startswith("linux"):
        return bool(glob.glob("/dev/nvidia[0-9]*")) or any(
            os.path.exists(p) for p in ("/dev/kfd", "/dev/dxg"))
    return True


def analyze(
    name: str,
    tensor: Any,
    *,
    kind: str | None = None,
    options: Mapping[str, Any] | None = None,
    methods: Sequence[str] | None = None,
) -> TensorResult:
    """Run `methods` (default: the default set) on one tensor. Never raises for bad values:
    a non-applicable analyzer lands in `skipped`, a failing one in `errors`."""
    t0 = time.perf_counter()
    result = TensorResult(name=name, kind=kind)
    for _, frag in _fragments(name, tensor, kind, options, methods, flags_each=False):
        result.shape = frag.shape or result.shape
        for analyzer, values in frag.metrics.items():
            result.metrics.setdefault(analyzer, {}).update(values)
        for analyzer, values in frag.data.items():
            result.data.setdefault(analyzer, {}).update(values)
        result.findings.extend(frag.findings)
        result.skipped.update(frag.skipped)
        result.errors.update(frag.errors)
        result.timings.update(frag.timings)
    result.elapsed_s = time.perf_counter() - t0
    return result


def analyze_each(
    name: str,
    tensor: Any,
    *,
    kind: str | None = None,
    options: Mapping[str, Any] | None = None,
    methods: Sequence[str] | None = None,
) -> Iterator[tuple[str | None, TensorResult]]:
    """`analyze`, one fragment per method as each lands: `(method, fragment)`.

    Every method of the call shares one `Context` (so `spectral` and `quant_alpha` compute the
    spectrum once); each fragment stands on its own (shape, the `nonfinite` finding), so it
    can be cached and merged alone. An input that cannot be read yields one `(None,
    fragment)` with `errors["input"]`. Stop iterating to stop between methods."""
    return _fragments(name, tensor, kind, options, methods, flags_each=True)


def _fragments(
    name: str, tensor: Any, kind: str | None, options: Mapping[str, Any] | None,
    methods: Sequence[str] | None, *, flags_each: bool,
) -> Iterator[tuple[str | None, TensorResult]]:
    """`flags_each`: every method's fragment carries the input's findings (`nonfinite`);
    else they come once, in a first `(None, fragment)`."""
    t0 = time.perf_counter()
    reg = registry()
    methods = list(methods) if methods is not None else default_methods()
    opts: Mapping[str, Any] = options or {}
    try:
        x = as_array(tensor, opts.get("device"))
    except Exception as exc:  # e.g. an unsupported dtype
        frag = TensorResult(name=name, kind=kind)
        frag.errors["input"] = f"{type(exc).__name__}: {exc}"
        frag.elapsed_s = time.perf_counter() - t0
        yield None, frag
        return
    shape = tuple(int(s) for s in x.shape)
    ctx = Context(name=name, tensor=x, kind=kind, options=opts, thresholds=thresholds_from(opts))
    flags = TensorResult(name=name, kind=kind, shape=shape)
    finite = _finite_or_flag(x, flags)
    if not flags_each or not methods:
        yield None, flags
    for i, m in enumerate(methods):
        ts = time.perf_counter()
        frag = TensorResult(name=name, kind=kind, shape=shape,
                            findings=list(flags.findings) if flags_each else [])
        spec = reg.get(m)
        if spec is None or spec.scope != "tensor":
            frag.errors[m] = f"unknown analyzer {m!r}"
        elif spec.needs_finite and not finite:
            frag.skipped[m] = "nonfinite"
        elif numel(x) == 0:
            frag.skipped[m] = "empty tensor"
        else:
            _run_one(spec, ctx, frag)
            frag.timings[m] = time.perf_counter() - ts
        frag.elapsed_s = time.perf_counter() - (t0 if i == 0 else ts)
        yield m, frag


def _run_one(spec: AnalyzerSpec, ctx: Context, result: TensorResult) -> None:
    m = spec.name
    try:
        out = spec.fn(ctx)
    except SkipAnalyzer as skip:
        result.skipped[m] = str(skip)
    except Exception as exc:
        result.errors[m] = f"{type(exc).__name__}: {exc}"
    else:
        if out.metrics:
            result.metrics.setdefault(m, {}).update(out.metrics)
        for other, values in out.extra_metrics.items():
            result.metrics.setdefault(other, {}).update(values)
        if out.data:
            result.data.setdefault(m, {}).update(out.data)
        for other, values in out.extra_data.items():
            result.data.setdefault(other, {}).update(values)
        result.findings.extend(out.findings)


def _finite_or_flag(x: Any, result: TensorResult) -> bool:
    import numpy as np

    # A finite sum proves every value finite (NaN and Inf propagate); only a non-finite sum
    # (or one that overflowed) needs the elementwise check, which is ten times slower.
    n = xp(x)
    with np.errstate(over="ignore", invalid="ignore"):
        if numel(x) == 0 or math.isfinite(float(x.sum())) or bool(n.isfinite(x).all()):
            return True
    n_nan = int(n.count_nonzero(n.isnan(x)))
    n_inf = int(n.count_nonzero(n.isinf(x)))
    result.findings.append(
        Finding(
            analyzer="stats",
            code="nonfinite",
            severity=Severity.CRITICAL,
            value=float(n_nan + n_inf),
            threshold=0.0,
            message=f"{n_nan} NaN and {n_inf} Inf values",
        )
    )
    return False


def finding(
    analyzer: str, code: str, severity: Severity, value: float | None, threshold: float | None,
    message: str,
) -> Finding:
    """Shorthand used by the analyzer modules."""
    return Finding(analyzer, code, severity, value, threshold, message)


def iter_findings(results: Iterable[TensorResult]) -> list[tuple[str, Finding]]:
    """Every finding of every result as (tensor name, finding), top issues first."""
    pairs = [(r.name, f) for r in results for f in r.findings]
    pairs.sort(key=lambda p: top_issue_key(p[1]))
    return pairs


#: Percentiles are exact up to this many values, over an evenly strided sample beyond (DESIGN §5).
EXACT_QUANTILE_LIMIT = 2**24


def strided_sample(flat: Any, limit: int = EXACT_QUANTILE_LIMIT) -> Any:
    """`flat` itself when it has at most `limit` values, else `limit` evenly spaced ones."""
    n = numel(flat)
    if n <= limit:
        return flat
    if n % limit == 0:
        return flat[:: n // limit]
    b = xp(flat)
    idx = b.arange(limit, dtype=b.float64, like=flat)
    idx *= n / limit
    return flat[b.astype(idx, b.int64)]


def quantiles(flat: Any, qs: Sequence[float], limit: int = EXACT_QUANTILE_LIMIT,
              *, overwrite: bool = False) -> list[float]:
    """Quantiles (linear interpolation, as numpy's default) of a 1-D float tensor, exact up to
    `limit` values and over `strided_sample(flat, limit)` beyond. Selection, not a full sort:
    numpy's introselect on the CPU, torch on other devices. `overwrite=True` lets it reorder
    a scratch tensor in place instead of copying it."""
    import numpy as np

    x = strided_sample(flat.reshape(-1), limit)
    if numel(x) == 0:
        return [math.nan for _ in qs]
    if not is_torch(x) or x.device.type == "cpu":
        a = to_numpy(x)
        if a.dtype == np.float32 and a.size >= _RADIX_MIN:
            return _radix_quantiles(a, qs)
        return [float(v) for v in np.quantile(a, list(qs), overwrite_input=overwrite)]
    return _sorted_quantiles(x, qs)


def _sorted_quantiles(x: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """Linear quantiles by a full sort on the tensor's device (GPUs sort fast); only the
    values at the wanted ranks come back to the host, in one transfer."""
    import torch

    srt = torch.sort(x.reshape(-1)).values
    n = srt.numel()
    pos = [q * (n - 1) for q in qs]
    lows = [math.floor(p) for p in pos]
    idx = torch.tensor([i for lo in lows for i in (lo, min(lo + 1, n - 1))], device=x.device)
    vals = srt[idx].cpu().tolist()
    out = []
    for j, (p, lo) in enumerate(zip(pos, lows)):
        a, b = vals[2 * j], vals[2 * j + 1]
        t = p - lo
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    return out


_RADIX_MIN = 1 << 16


def _rank_plan(qs: Sequence[float], n: int, ends: Any) -> tuple[Any, Any, Any, Any]:
    """For linear quantiles `qs` of n sorted values: the fractional positions, their floors,
    the ranks whose values are needed, and the bucket (by cumulative `ends`) of each rank."""
    import numpy as np

    pos = np.asarray(qs, dtype=np.float64) * (n - 1)
    lows = np.floor(pos).astype(np.int64)
    ranks = np.unique(np.concatenate([lows, np.minimum(lows + 1, n - 1)]))
    return pos, lows, ranks, np.searchsorted(ends, ranks, side="right")


def _lerp(value: dict[int, float], pos: Any, lows: Any, n: int) -> list[float]:
    """The quantiles from the values at their ranks, with numpy's lerp, including its form
    for t >= 0.5 (so results match `np.quantile` bit for bit)."""
    out = []
    for p, lo in zip(pos, lows):
        va, vb = value[int(lo)], value[min(int(lo) + 1, n - 1)]
        t = float(p - lo)
        out.append(vb - (vb - va) * (1 - t) if t >= 0.5 else va + (vb - va) * t)
    return out


def _radix_quantiles(a: Any, qs: Sequence[float]) -> list[float]:
    """numpy's linear quantiles of a finite float32 array, exactly, about twice as fast as
    `np.quantile` on large arrays: one pass buckets the values by the top 16 bits of an
    order-preserving integer key, then only the buckets holding the wanted ranks are
    partitioned."""
    import numpy as np

    n = a.size
    bits = a.view(np.int32)
    bucket = bits >> 31  # in place from here on: each step is one pass over the values
    bucket &= 0x7FFFFFFF
    bucket ^= bits  # a signed-int key whose order is the float order
    bucket >>= 16
    bucket += 32768
    counts = np.bincount(bucket, minlength=65536)
    ends = np.cumsum(counts)
    pos, lows, ranks, where = _rank_plan(qs, n, ends)
    value: dict[int, float] = {}
    for b in np.unique(where):
        start = int(ends[b] - counts[b])
        local = [int(r) - start for r, w in zip(ranks, where) if w == b]
        part = np.partition(a[bucket == b], local)
        for r in local:
            value[r + start] = float(part[r])
    return _lerp(value, pos, lows, n)


def abs_quantiles(a: Any, qs: Sequence[float], chunk: int = 1 << 18) -> list[float]:
    """numpy's linear quantiles of |a| for a finite 1-D float32 array, exactly, without
    writing |a| out for a full sort or select. Non-negative float32 values order as their bit
    patterns, so one chunked pass (chunks stay in cache) counts the values per top-16-bit
    bucket, and a second gathers only the buckets holding the wanted ranks (a few thousandths
    of the values for a bell-shaped tensor), which are then sorted. On 2^24 Gaussian values
    this took 9.4 ns a value where `quantiles` of |a| (abs, then `_radix_quantiles`) took
    20.2, in one run on 2 busy cores. Falls back to one `np.partition` when the wanted
    buckets hold over a quarter of the values (e.g. a constant tensor)."""
    import numpy as np

    n = a.size
    if n == 0:
        return [math.nan for _ in qs]
    cnt = np.zeros(1 << 15, dtype=np.int64)
    scratch = np.empty(min(chunk, n), dtype=np.float32)
    keys = np.empty(min(chunk, n), dtype=np.int32)
    for i in range(0, n, chunk):
        part = np.abs(a[i:i + chunk], out=scratch[: min(chunk, n - i)])
        k = np.right_shift(part.view(np.int32), 16, out=keys[: part.size])
        cnt += np.bincount(k, minlength=1 << 15)
    ends = np.cumsum(cnt)
    pos, lows, ranks, where = _rank_plan(qs, n, ends)
    wanted = np.unique(where)
    if cnt[wanted].sum() > n // 4:  # values bunched in few buckets: select from all of them
        part = np.partition(np.abs(a), ranks)
        value = {int(r): float(part[r]) for r in ranks}
    else:
        lut = np.zeros(1 << 15, dtype=bool)
        lut[wanted] = True
        picked = []
        for i in range(0, n, chunk):
            part = np.abs(a[i:i + chunk], out=scratch[: min(chunk, n - i)])
            k = np.right_shift(part.view(np.int32), 16, out=keys[: part.size])
            picked.append(part[lut[k]])
        vals = np.sort(np.concatenate(picked))
        # the sorted picks hold the wanted buckets back to back, in bucket order
        before = dict(zip(wanted.tolist(), (np.cumsum(cnt[wanted]) - cnt[wanted]).tolist()))
        value = {}
        for r, b in zip(ranks.tolist(), where.tolist()):
            start = int(ends[b] - cnt[b])
            value[r] = float(vals[before[b] + r - start])
    return _lerp(value, pos, lows, n)

