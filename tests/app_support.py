"""Stand-ins for the app tests: a tiny Llama-shaped checkpoint (no files, no weights) and a
scan engine that feeds fixed, deterministic results from its own thread.

The fake engine honours `prioritize` (the named tensor is delivered next), records
`request`/`cancel`, and can sleep per tensor to play a slow analyzer.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyzers.core import Finding, Severity, TensorResult
from wstui import jsonio
from wstui.checkpoint.base import Checkpoint, TensorRef
from wstui.checkpoint.naming import build_tree, kind_and_block


def llama_refs(blocks: int = 2, hidden: int = 64, inter: int = 128, vocab: int = 256
               ) -> list[TensorRef]:
    names: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for b in range(blocks):
        p = f"model.layers.{b}"
        names += [
            (f"{p}.self_attn.q_proj.weight", (hidden, hidden)),
            (f"{p}.self_attn.k_proj.weight", (hidden // 2, hidden)),
            (f"{p}.self_attn.v_proj.weight", (hidden // 2, hidden)),
            (f"{p}.self_attn.o_proj.weight", (hidden, hidden)),
            (f"{p}.mlp.gate_proj.weight", (inter, hidden)),
            (f"{p}.mlp.up_proj.weight", (inter, hidden)),
            (f"{p}.mlp.down_proj.weight", (hidden, inter)),
            (f"{p}.input_layernorm.weight", (hidden,)),
            (f"{p}.post_attention_layernorm.weight", (hidden,)),
        ]
    names += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    refs = []
    for name, shape in names:
        kind, block = kind_and_block(name)
        numel = math.prod(shape)
        refs.append(TensorRef(name=name, shape=shape, dtype="F32", nbytes=4 * numel,
                              file=Path("model.safetensors"), hf_name=name, kind=kind,
                              block=block))
    return refs


def fake_checkpoint(blocks: int = 2) -> Checkpoint:
    refs = llama_refs(blocks)
    return Checkpoint(path=Path("/fixture/tiny-llama"), format="safetensors",
                      files=[Path("/fixture/tiny-llama/model.safetensors")], tensors=refs)


def fixed_result(ref: TensorRef, i: int) -> TensorResult:
    """A deterministic result with every data block the app plots."""
    edges = [-0.1 + 0.2 * k / 64 for k in range(65)]
    counts = [int(1000 * math.exp(-(((k - 31.5) / 9) ** 2))) for k in range(64)]
    std = 0.02 + 0.001 * i
    r = TensorResult(name=ref.name, kind=ref.kind, shape=ref.shape)
    r.metrics["stats"] = {"numel": ref.numel, "mean": 0.0, "std": std, "min": -0.1, "max": 0.1,
                          "abs_max": 0.1, "rms": std, "kurtosis": 0.1 * (i % 5),
                          "nan_count": 0, "inf_count": 0}
    r.data["stats"] = {"histogram": {"edges": edges, "counts": counts}}
    schemes = [{"bits": b, "granularity": g, "scheme": "sym", "sqnr_db": 6.02 * b - (3 if g ==
                "tensor" else 0), "cosine": 0.99, "rel_mse": 0.01, "max_abs_err": 0.001}
               for b in (8, 4) for g in ("tensor", "channel")]
    r.metrics["quantization"] = {"schemes": schemes, "outlier_frac_1p5": 0.01,
                                 "outlier_frac_3": 0.0, "crest_factor": 5.0 + i % 3,
                                 "int8_ready": True, "min_bits_30db": 6}
    r.data["quantization"] = {"curves": [
        {"granularity": g, "scheme": "sym", "bits": [4, 8],
         "sqnr_db": [6.02 * b - (3 if g == "tensor" else 0) for b in (4, 8)]}
        for g in ("tensor", "channel")]}
    if len(ref.shape) == 2:
        n = min(ref.shape)
        sigma = [10.0 * (k + 1) ** -0.7 for k in range(n)]
        lam_edges = [10 ** (-2 + 4 * k / 20) for k in range(21)]
        density = [max(1e-3, 50 * 10 ** (-1.5 * (k / 20) * 4)) for k in range(20)]
        alpha = 3.0 + 0.1 * (i % 10)
        r.metrics["spectral"] = {"sv_max": sigma[0], "sv_min": sigma[-1],
                                 "condition_number": sigma[0] / sigma[-1],
                                 "stable_rank": 2.0 + i % 4, "effective_rank": 10.0 + i,
                                 "rank_utilization": 0.5, "alpha": alpha, "xmin": 0.1,
                                 "ks_distance": 0.05}
        r.data["spectral"] = {"spectrum": sigma, "spectrum_rank": list(range(1, n + 1)),
                              "esd": {"edges": lam_edges, "density": density},
                              "fit": {"x": [0.1, 100.0], "y": [10.0, 10.0 * 1000 ** -alpha]},
                              "xmin": 0.1, "xmax": 100.0}
    if ref.name.endswith("layers.0.self_attn.k_proj.weight"):
        r.findings.append(Finding("spectral", "ill_conditioned", Severity.CRITICAL, 3e8, 1e8,
                                  "condition number 3e8 > 1e8"))
    if ref.name.endswith("layers.1.mlp.down_proj.weight"):
        r.findings.append(Finding("quantization", "int8_lossy", Severity.WARN, 19.0, 26.0,
                                  "per-tensor int8 SQNR 19 dB < 26 dB"))
    if ref.name == "lm_head.weight":
        r.findings.append(Finding("spectral", "alpha_high", Severity.INFO, 6.5, 6.0,
                                  "alpha 6.5 > 6"))
    return r


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    current: str | None
    phase: str
    elapsed_s: float = 0.0
    eta_s: float | None = None


class FakeReport:
    def __init__(self, ckpt: Checkpoint, results: dict[str, TensorResult]) -> None:
        self.ckpt, self.results = ckpt, results

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "wstui.scan/1", "checkpoint": self.ckpt.summary(),
                "tensors": [r.to_dict(with_data=False) for r in self.results.values()]}

    def to_json(self, path: str | Path) -> Path:
        return jsonio.dump(self.to_dict(), path)


class FakeEngine:
    """Delivers `fixed_result` per tensor in tree order from a thread; `delay_s` per tensor."""

    def __init__(self, ckpt: Checkpoint, *, delay_s: float = 0.0, hold: bool = False,
                 results: dict[str, TensorResult] | None = None,
                 emit_progress: bool = True) -> None:
        self.ckpt = ckpt
        self.emit_progress = emit_progress
        self.delay_s = delay_s
        self.device = "cpu"
        self.queue = [r.name for r in ckpt.tensors]
        self.fixed = results or {r.name: fixed_result(r, i) for i, r in enumerate(ckpt.tensors)}
        self.delivered: list[str] = []
        self.prioritized: list[str] = []
        self.requests: list[tuple[str, list[str]]] = []
        self.cancelled = False
        self.done = False
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, on_result: Any = None, on_progress: Any = None) -> None:
        self.on_result, self.on_progress = on_result, on_progress
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.started.set()

    def _run(self) -> None:
        self.release.wait()
        total = len(self.queue)
        while True:
            with self._lock:
                if self.cancelled or not self.queue:
                    break
                name = self.queue.pop(0)
            if self.delay_s:
                time.sleep(self.delay_s)  # the "slow analyzer"
            if self.cancelled:
                break
            self.delivered.append(name)
            self.on_result(name, self.fixed[name])
            if self.emit_progress:
                self.on_progress(Progress(len(self.delivered), total, name, "cheap"))
        self.done = not self.cancelled
        if self.emit_progress:
            self.on_progress(Progress(len(self.delivered), total, None,
                                      "cancelled" if self.cancelled else "done"))

    def prioritize(self, name: str) -> None:
        with self._lock:
            self.prioritized.append(name)
            if name in self.queue:
                self.queue.remove(name)
                self.queue.insert(0, name)

    def request(self, name: str, methods: list[str]) -> None:
        self.requests.append((name, list(methods)))

    def cancel(self) -> None:
        self.cancelled = True

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.done

    def report(self) -> FakeReport:
        return FakeReport(self.ckpt, {n: self.fixed[n] for n in self.delivered})


def make_app(blocks: int = 2, *, engine: FakeEngine | None = None, tmp: Path | None = None,
             **engine_kw: Any) -> tuple[Any, FakeEngine]:
    from wstui.app.app import WstuiApp

    ckpt = fake_checkpoint(blocks)
    eng = engine or FakeEngine(ckpt, **engine_kw)
    app = WstuiApp(ckpt, build_tree(ckpt.tensors), lambda: eng, export_dir=tmp or Path("."),
                   show_timings=False)
    return app, eng


async def wait_for(pilot: Any, cond: Any, timeout: float = 5.0) -> None:
    """Pause the pilot until `cond()` holds (results flush on a 100 ms timer)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)
