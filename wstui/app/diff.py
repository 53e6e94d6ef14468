"""Diff mode: pair the tensors of A and B by HF name and compare each pair in the background.

The scan engine scans one checkpoint; the comparison of two is `analyzers.compare` per pair,
run here on one daemon thread (torch is imported there, never on the event loop). The pair
the user selected goes first; `cancel()` stops between pairs and never waits for a running one.
"""

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
    from wstui.diff import Matching, match_tensors

    m = match_tensors(refs_a, refs_b)
    usable = [p for p in m.pairs if p.a.analyzable and p.b.analyzable]
    return Pairing(
        pairs={p.a.name: p.b for p in usable}, only_in_a=list(m.only_in_a),
        only_in_b=list(m.only_in_b),
        shape_mismatch=[(d["name"], d["shape_a"], d["shape_b"]) for d in m.shape_mismatch],
        matching=Matching(usable, m.only_in_a, m.only_in_b, m.shape_mismatch),
    )


class DiffRunner:
    """Runs `analyzers.compare` over the pairs, selected pair first, results to a callback."""

    def __init__(self, refs_a: Mapping[str, Any], pairing: Pairing,
                 on_result: Callable[[str, TensorResult], None],
                 options: Mapping[str, Any] | None = None) -> None:
        self.refs_a = refs_a
        self.pairing = pairing
        self.on_result = on_result
        self.options = dict(options or {})
        self.queue = list(pairing.pairs)
        self.n_done = 0
        self.done = False
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._engine: Any = None

    @property
    def total(self) -> int:
        return len(self.pairing.pairs)

    def start(self) -> None:
        if self.pairing.matching is not None:
            self._start_engine()
            return
        threading.Thread(target=self._run, name="wstui-diff", daemon=True).start()

    def _start_engine(self) -> None:
        """The headless diff engine (wstui.diff.DiffEngine): worker threads, elementwise
        metrics of every pair first (the ranking), then spectra; cached on both files."""
        from wstui.diff import DiffEngine
        from wstui.scan import cpu_count

        self._engine = DiffEngine(None, None, matching=self.pairing.matching,
                                  options=self.options, workers=max(1, cpu_count() // 2))

        def on_result(name: str, result: TensorResult) -> None:
            self.n_done = self._engine.progress().done
            self.on_result(name, result)

        self._engine.start(on_result)
        threading.Thread(target=self._watch, name="wstui-diff-watch", daemon=True).start()

    def _watch(self) -> None:
        self._engine.wait()
        self.done = not self._engine.cancelled

    def prioritize(self, name: str) -> None:
        if self._engine is not None:
            self._engine.prioritize(name)
            return
        with self._lock:
            if name in self.queue:
                self.queue.remove(name)
                self.queue.insert(0, name)

    def cancel(self) -> None:
        self._cancel.set()
        if self._engine is not None:
            self._engine.cancel()

    def _run(self) -> None:
        from analyzers import compare

        while not self._cancel.is_set():
            with self._lock:
                if not self.queue:
                    break
                name = self.queue.pop(0)
            ra, rb = self.refs_a[name], self.pairing.pairs[name]
            try:
                result = compare(ra.load("cpu", hf_layout=True), rb.load("cpu", hf_layout=True),
                                 name=name, kind=ra.kind, options=self.options)
            except Exception as exc:  # an unreadable tensor: recorded, the diff goes on
                result = TensorResult(name=name, kind=ra.kind)
                result.errors["compare"] = f"{type(exc).__name__}: {exc}"
            self.n_done += 1
            if self._cancel.is_set():
                break
            self.on_result(name, result)
        self.done = not self._cancel.is_set()
