"""What the app knows about the scan: results per tensor, badge states per tree node.

`Inbox` is the only object the engine's worker threads touch: the result callback prepares
the plots there (off the event loop) and parks the newest result per tensor under a lock.
The app drains it on a timer (every 100 ms), so a burst of thousands of cached results costs
one tree update, not thousands of messages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from analyzers.core import Finding, TensorResult, top_issue_key
from wstui.app.format import PENDING, Column, column_value, result_state, worst_state
from wstui.render.plots import PlotSpec, overlay_plots, tensor_plots

Batch = dict[str, tuple[TensorResult, dict[str, PlotSpec]]]


class Inbox:
    """Thread-safe hand-over from the scan engine's threads to the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[str, tuple[TensorResult, dict[str, PlotSpec]]] = {}
        self._compare: dict[str, tuple[TensorResult, dict[str, PlotSpec]]] = {}
        self._progress: Any = None
        self._errors: list[str] = []

    def on_result(self, name: str, result: TensorResult) -> None:
        """Engine callback (worker thread): prepare plots here, then park the result."""
        try:
            plots = tensor_plots(result)
        except Exception as exc:  # a malformed data block must not kill the engine's thread
            plots = {}
            result.errors.setdefault("plot", f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._results[name] = (result, plots)

    def on_compare(self, name: str, result: TensorResult) -> None:
        """Diff runner callback (its thread): overlay plots prepared here too."""
        try:
            plots = overlay_plots(result)
        except Exception as exc:
            plots = {}
            result.errors.setdefault("plot", f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._compare[name] = (result, plots)

    def on_progress(self, progress: Any) -> None:
        with self._lock:
            self._progress = progress

    def on_error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    def drain(self) -> tuple[Batch, Batch, Any, list[str]]:
        """(results, compare results, newest progress, errors) since the last drain."""
        with self._lock:
            results, self._results = self._results, {}
            compared, self._compare = self._compare, {}
            progress, self._progress = self._progress, None
            errors, self._errors = self._errors, []
        return results, compared, progress, errors


class ScanState:
    """Results and badge states, owned by the event loop."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.results: dict[str, TensorResult] = {}
        self.plots: dict[str, dict[str, PlotSpec]] = {}
        self.compare: dict[str, TensorResult] = {}  # diff mode: analyzers.compare per pair
        self.compare_plots: dict[str, dict[str, PlotSpec]] = {}
        self.progress: Any = None
        self.node_by_key: dict[str, Any] = {}
        self.ancestors: dict[str, list[str]] = {}  # tensor name -> keys of nodes above it
        self.tensor_names: dict[str, list[str]] = {}  # node key -> tensor names below it
        self.order: list[str] = []  # tensor names in tree order
        self.refs: dict[str, Any] = {}
        self.key_by_name: dict[str, str] = {}
        self.labels: dict[str, str] = {}  # tensor name -> its short tree label
        self._index(root, [])
        self.states: dict[str, str] = {key: PENDING for key in self.node_by_key}

    def _index(self, node: Any, above: list[str]) -> list[str]:
        self.node_by_key[node.key] = node
        if node.tensor is not None:
            name = node.tensor.name
            self.ancestors[name] = list(above)
            self.order.append(name)
            self.refs[name] = node.tensor
            self.key_by_name[name] = node.key
            self.labels[name] = node.label
            names = [name]
        else:
            names = []
            for child in node.children:
                names += self._index(child, [*above, node.key])
        self.tensor_names[node.key] = names
        return names

    def key_of(self, name: str) -> str | None:
        """Tree key of a tensor (by stored name)."""
        return self.key_by_name.get(name)

    def state(self, key: str) -> str:
        return self.states.get(key, PENDING)

    def tensor_state(self, name: str) -> str:
        """Badge of one tensor: its scan result, and in diff mode its comparison's findings."""
        state = result_state(self.results.get(name))
        cmp = self.compare.get(name)
        if cmp is not None and (cmp.findings or cmp.errors):
            state = worst_state([state, result_state(cmp)])
        return state

    def apply(self, batch: Batch, *, compare: bool = False) -> set[str]:
        """Store a drained batch; returns the node keys whose badge state changed."""
        touched: set[str] = set()
        results, plots_of = (self.compare, self.compare_plots) if compare else (
            self.results, self.plots)
        for name, (result, plots) in batch.items():
            results[name] = result
            plots_of[name] = plots
            key = self.key_of(name)
            if key is None:
                continue
            touched.add(key)
            touched.update(self.ancestors.get(name, []))
        changed = set()
        for key in touched:
            node = self.node_by_key[key]
            if node.tensor is not None:
                new = self.tensor_state(node.tensor.name)
            else:
                new = worst_state(self.tensor_state(n) for n in self.tensor_names[key])
            if new != self.states.get(key):
                self.states[key] = new
                changed.add(key)
        return changed

    def value(self, name: str, col: Column) -> Any:
        """One Table/Depth cell: compare columns (Δrel) come from the diff's results."""
        source = self.compare if col.analyzer == "compare" else self.results
        return column_value(source.get(name), col)

    def findings(self, names: Iterable[str] | None = None) -> list[tuple[str, Finding]]:
        """(tensor name, finding) pairs, top issues first."""
        names = self.order if names is None else names
        pairs = [(n, f) for n in names for src in (self.results, self.compare) if n in src
                 for f in src[n].findings]
        pairs.sort(key=lambda p: top_issue_key(p[1]))
        return pairs

    def refs_list(self) -> list[Any]:
        return [self.refs[n] for n in self.order]

    def scope_names(self, key: str) -> list[str]:
        return self.tensor_names.get(key, [])

    def scope_of(self, key: str) -> str:
        """The block (or model) a node belongs to: the scope of the Table view."""
        node = self.node_by_key.get(key)
        if node is not None and node.tensor is None:
            return key
        name = node.tensor.name if node is not None else None
        for anc in reversed(self.ancestors.get(name, [])):
            if self.node_by_key[anc].group in ("block", "model"):
                return anc
        return self.root.key

    def n_done(self) -> int:
        return len(self.results)
