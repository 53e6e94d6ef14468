"""Stand-ins for the engine tests: a safetensors checkpoint built in the test, and a reader
that counts loads in flight (to check the engine's bound on resident tensors)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from analyzers import core
from analyzers.core import Output, Severity, SkipAnalyzer, finding
from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef

_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32"}


class CountingReader:
    """Reads one safetensors file; counts tensors loaded and not yet released."""

    def __init__(self, path: Path, delay_s: float = 0.0, fail: set[str] | None = None) -> None:
        self.path = path
        self.delay_s = delay_s
        self.fail = fail or set()
        self.lock = threading.Lock()
        self.loads = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._fh = safe_open(str(path), framework="pt")

    def load(self, ref: TensorRef, *, device: str, dtype, hf_layout: bool) -> torch.Tensor:
        if ref.name in self.fail:
            raise CheckpointError(self.path, f"tensor {ref.name}: truncated data")
        with self.lock:
            self.loads += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        t = self._fh.get_tensor(ref.name).to(dtype=dtype, device=device)
        return _Tracked.wrap(t, self)

    def close(self) -> None:
        self._fh = None


class _Tracked:
    """Counts a tensor as resident until torch frees it (weakref finalizer)."""

    @staticmethod
    def wrap(t: torch.Tensor, reader: CountingReader) -> torch.Tensor:
        import weakref

        with reader.lock:
            reader.in_flight += 1
            reader.max_in_flight = max(reader.max_in_flight, reader.in_flight)

        def release() -> None:
            with reader.lock:
                reader.in_flight -= 1

        weakref.finalize(t, release)
        return t


def _kind(name: str) -> tuple[str, int | None]:
    import re

    m = re.search(r"layers\.(\d+)\.", name)
    block = int(m.group(1)) if m else None
    for key, kind in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
                      ("o_proj", "attn_o"), ("up_proj", "mlp_up"), ("down_proj", "mlp_down"),
                      ("embed", "embedding"), ("norm", "norm")):
        if key in name:
            return kind, block
    return "other", block


def make_checkpoint(
    tmp: Path,
    tensors: dict[str, torch.Tensor],
    *,
    delay_s: float = 0.0,
    fail: set[str] | None = None,
    file_name: str = "model.safetensors",
) -> Checkpoint:
    """Save `tensors` as one safetensors file and open it with CountingReader."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / file_name
    if not path.exists():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    reader = CountingReader(path, delay_s=delay_s, fail=fail)
    refs = []
    for name, t in tensors.items():
        kind, block = _kind(name)
        dtype = _DTYPES.get(t.dtype, "F32")
        refs.append(TensorRef(
            name=name, shape=tuple(t.shape), dtype=dtype,
            nbytes=t.numel() * t.element_size(), file=path, reader=reader, hf_name=name,
            kind=kind, block=block, analyzable=dtype in ("F32", "F16", "BF16"),
            note=None if dtype in ("F32", "F16", "BF16") else "integer tensor",
        ))
    return Checkpoint(path=path, format="safetensors", files=[path], tensors=refs,
                      readers=[reader])


def small_model(seed: int = 0, layers: int = 2, hidden: int = 48) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": torch.randn(100, hidden, generator=g),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = torch.randn(hidden, hidden, generator=g) / 7
        out[p + "self_attn.k_proj.weight"] = torch.randn(hidden, hidden, generator=g) / 7
        out[p + "mlp.up_proj.weight"] = torch.randn(2 * hidden, hidden, generator=g) / 7
        out[p + "mlp.down_proj.weight"] = torch.randn(hidden, 2 * hidden, generator=g) / 7
        out[p + "input_layernorm.weight"] = torch.ones(hidden)
    out["model.norm.weight"] = torch.ones(hidden)
    out["position_ids"] = torch.arange(16, dtype=torch.int64)
    return out


CALLS: list[tuple[str, str]] = []
_calls_lock = threading.Lock()


def _log(analyzer: str, name: str) -> None:
    with _calls_lock:
        CALLS.append((analyzer, name))


def install_fakes(monkeypatch) -> None:
    """A private registry with cheap `fstats`, `fquant` and heavy `fspec`, `fboom`, `fslow`
    (the last two not default); every call is logged in CALLS."""
    monkeypatch.setattr(core, "_REGISTRY", {})
    monkeypatch.setattr(core, "_load_all", lambda: None)
    CALLS.clear()

    @core.register("fstats", version="1")
    def fstats(ctx):
        _log("fstats", ctx.name)
        t = ctx.tensor  # numpy on the CPU (torch on a GPU)
        return Output(metrics={"mean": float(t.mean()), "numel": int(core.numel(t))})

    @core.register("fquant", version="1")
    def fquant(ctx):
        _log("fquant", ctx.name)
        if ctx.tensor.ndim < 2:
            raise SkipAnalyzer("1-D tensor")
        return Output(metrics={"schemes": [
            {"bits": 8, "granularity": "tensor", "scheme": "sym", "sqnr_db": 40.0},
            {"bits": 4, "granularity": "channel", "scheme": "asym", "sqnr_db": 20.0},
        ]})

    @core.register("fspec", version="1", heavy=True)
    def fspec(ctx):
        _log("fspec", ctx.name)
        if not ctx.is_matrix:
            raise SkipAnalyzer("not a matrix")
        s = torch.linalg.svdvals(torch.as_tensor(ctx.matrix()).double())
        cond = float(s[0] / s[-1]) if s[-1] > 0 else float("inf")
        out = Output(metrics={"condition_number": cond, "sv_max": float(s[0])},
                     data={"spectrum": s.tolist()})
        if cond > ctx.thresholds.get("ill_conditioned", 1e5):
            out.findings.append(finding("fspec", "ill_conditioned", Severity.WARN, cond, 1e5,
                                        "ill conditioned"))
        return out

    @core.register("fboom", version="1", heavy=True, default=False)
    def fboom(ctx):
        _log("fboom", ctx.name)
        if "q_proj" in ctx.name:
            raise RuntimeError("kaboom")
        return Output(metrics={"ok": True})

    @core.register("fslow", version="1", heavy=True, default=False)
    def fslow(ctx):
        _log("fslow", ctx.name)
        time.sleep(0.3)
        return Output(metrics={"ok": True})
