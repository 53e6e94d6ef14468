"""Diff mode: pair the tensors of A and B as `wstui scan A --diff B` does, and compare the
pairs in the background with the headless diff engine (selected pair first; `cancel()` never
waits for a running pair)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from analyzers.core import TensorResult


@dataclass
class Pairing:
    """Tensors of A matched with B by HF name; what did not match is listed, never dropped."""

    pairs: dict[str, Any] = field(default_factory=dict)  # A's stored name -> B's TensorRef
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    matching: Any = None  # the wstui.diff.Matching behind it (resized vocabularies, tied heads)

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": len(self.pairs), "only_in_a": self.only_in_a,
                "only_in_b": self.only_in_b,
                "shape_mismatch": [{"name": n, "shape_a": a, "shape_b": b}
                                   for n, a, b in self.shape_mismatch]}


def match(refs_a: list[Any], refs_b: list[Any]) -> Pairing:
    """The headless diff's matching (wstui.diff.match_tensors), so the app pairs what
    `wstui scan A --diff B` pairs."""
    from wstui.engine.matching import Matching, match_tensors

    m = match_tensors(refs_a, refs_b)
    usable = [p for p in m.pairs if p.a.analyzable and p.b.analyzable]
    return Pairing(
        pairs={p.a.name: p.b for p in usable}, only_in_a=list(m.only_in_a),
        only_in_b=list(m.only_in_b),
        shape_mismatch=[(d["name"], d["shape_a"], d["shape_b"]) for d in m.shape_mismatch],
        matching=Matching(usable, m.only_in_a, m.only_in_b, m.shape_mismatch),
    )


class DiffRunner:
    """Drives the headless diff engine (`wstui.diff.DiffEngine`) for the app: elementwise
    metrics of every pair first (the ranking), then spectra; worker threads; cached on both
    files; the selected pair first.

    The engine is built on a daemon thread: its constructor picks the device, which imports
    torch, and that must never happen on the event loop.
    """

    def __init__(self, pairing: Pairing, on_result: Callable[[str, TensorResult], None],
                 options: Mapping[str, Any] | None = None, **engine_kw: Any) -> None:
        """`engine_kw`: DiffEngine keywords such as `device`, `use_cache`, `workers`."""
        self.pairing = pairing
        self.on_result = on_result
        self.options = dict(options or {})
        self.engine_kw = {"workers": None, **engine_kw}
        self._engine: Any = None
        self._wanted: str | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return len(self.pairing.pairs)

    @property
    def done(self) -> bool:
        engine = self._engine
        return engine is not None and engine.done and not engine.cancelled

    def start(self) -> None:
        threading.Thread(target=self._start, name="wstui-diff-start", daemon=True).start()

    def _start(self) -> None:
        from wstui.engine.diff import DiffEngine
        from wstui.engine.placement import cpu_count

        kw = dict(self.engine_kw)
        kw["workers"] = kw["workers"] or max(1, cpu_count() // 2)  # the scan runs beside it
        engine = DiffEngine(None, None, matching=self.pairing.matching, options=self.options,
                            **kw)
        with self._lock:
            if self._cancelled.is_set():
                return
            self._engine = engine
            wanted = self._wanted
        if wanted:
            engine.prioritize(wanted)
        engine.start(self.on_result)

    def prioritize(self, name: str) -> None:
        with self._lock:
            self._wanted = name
            engine = self._engine
        if engine is not None:
            engine.prioritize(name)

    def report(self) -> Any:
        """The diff so far as a `DiffReport` (what `E` writes beside the scan), or None
        before the engine is built."""
        with self._lock:
            engine = self._engine
        return engine.report() if engine is not None else None

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            engine = self._engine
        if engine is not None:
            engine.cancel()


#: compare metrics whose sign says which way B moved from A: `d` flips them
SIGNED = ("delta_alpha",)


def oriented(metrics: Mapping[str, Any], swapped: bool) -> dict[str, Any]:
    """`metrics["compare"]` as the user's A and B read them after `d`: `x_a`/`x_b` trade
    places and signed deltas flip. Symmetric ones (‖B-A‖, cosine, ΔW ranks) stay; `rel_change`
    stays relative to the base's norm (the other norm is never computed), as its label says."""
    out = dict(metrics)
    if not swapped:
        return out
    for key in metrics:
        if key.endswith("_a") and f"{key[:-2]}_b" in metrics:
            out[key], out[f"{key[:-2]}_b"] = metrics[f"{key[:-2]}_b"], metrics[key]
    for key in SIGNED:
        if isinstance(out.get(key), (int, float)):
            out[key] = 0.0 - out[key]  # not -x: -0.0 would show as "-0"
    return out
