"""`Scope`: the Python API. A thin face on the same ScanEngine as the CLI and the app, so a
number from `Scope.scan()` is the number `wstui scan --json` writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzers.core import TensorResult
from wstui.checkpoint import Checkpoint, TensorRef, open_checkpoint
from wstui.scan import ScanEngine, ScanProgress, ScanReport, select_tensors


@dataclass
class ComparePair:
    a: TensorRef
    b: TensorRef
    result: TensorResult


@dataclass
class CompareReport:
    """Tensors of two checkpoints matched by HF name, ranked by `rel_change`."""

    a: dict[str, Any]
    b: dict[str, Any]
    pairs: list[ComparePair] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from wstui import jsonio
        from wstui._version import __version__

        return jsonio.strict({
            "schema": "wstui.diff/1", "wstui_version": __version__, "a": self.a, "b": self.b,
            "pairs": [{"name": p.a.name, "name_b": p.b.name, "shape": list(p.a.shape),
                       "metrics": {"compare": p.result.metrics.get("compare", {})},
                       "findings": [f.to_dict() for f in p.result.findings],
                       "errors": dict(p.result.errors)} for p in self.pairs],
            "only_in_a": self.only_in_a, "only_in_b": self.only_in_b,
            "shape_mismatch": self.shape_mismatch,
        })

    def to_json(self, path: str | Path) -> Path:
        from wstui import jsonio

        return jsonio.dump(self.to_dict(), path)


class Scope:
    """Open a checkpoint and analyze it.

    >>> with Scope("path/to/model") as s:            # doctest: +SKIP
    ...     report = s.scan(methods=["stats", "spectral"])
    ...     df = pandas.DataFrame(report.to_records())
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        *,
        workers: int | None = None,
        use_cache: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.device = device
        self.workers = workers
        self.use_cache = use_cache
        self.options = dict(options or {})
        self.checkpoint: Checkpoint = open_checkpoint(path)
        self.last_report: ScanReport | None = None

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.checkpoint.close()

    @property
    def tensors(self) -> list[TensorRef]:
        return list(self.checkpoint.tensors)

    def engine(
        self,
        methods: Sequence[str] | None = None,
        tensors: str | Sequence[str] | None = None,
    ) -> ScanEngine:
        """A ScanEngine on this checkpoint (not started), for streaming use."""
        return ScanEngine(
            self.checkpoint, methods=methods, device=self.device, workers=self.workers,
            use_cache=self.use_cache, options=self.options,
            tensors=select_tensors(self.checkpoint.tensors, tensors),
        )

    def scan(
        self,
        methods: Sequence[str] | None = None,
        tensors: str | Sequence[str] | None = None,
        *,
        on_result: Callable[[str, TensorResult], None] | None = None,
        on_progress: Callable[[ScanProgress], None] | None = None,
    ) -> ScanReport:
        """Analyze (blocking). `tensors`: glob(s) on stored or HF names; default all."""
        report = self.engine(methods, tensors).run(on_result, on_progress)
        self.last_report = report
        return report

    def compare_with(
        self,
        other: str | Path,
        *,
        tensors: str | Sequence[str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> CompareReport:
        """Compare every tensor with the one of the same HF name in `other` (sequential)."""
        import analyzers

        with open_checkpoint(other) as ckpt_b:
            mine = select_tensors(self.checkpoint.tensors, tensors)
            theirs = select_tensors(ckpt_b.tensors, tensors)
            by_b = {t.hf_name or t.name: t for t in theirs}
            report = CompareReport(a=self.checkpoint.summary(), b=ckpt_b.summary())
            opts = {**self.options, **(options or {}), "device": analyzers.pick_device(
                self.device)}
            seen_b: set[str] = set()
            for ta in mine:
                key = ta.hf_name or ta.name
                tb = by_b.get(key)
                if tb is None:
                    report.only_in_a.append(ta.name)
                    continue
                seen_b.add(key)
                if tuple(ta.shape) != tuple(tb.shape):
                    report.shape_mismatch.append(
                        {"name": ta.name, "shape_a": list(ta.shape), "shape_b": list(tb.shape)})
                    continue
                if not (ta.analyzable and tb.analyzable):
                    continue
                result = analyzers.compare(ta.load(hf_layout=True), tb.load(hf_layout=True),
                                           name=ta.name, kind=ta.kind, options=opts)
                report.pairs.append(ComparePair(ta, tb, result))
            report.only_in_b = [t.name for t in theirs if (t.hf_name or t.name) not in seen_b]
        report.pairs.sort(
            key=lambda p: -(p.result.metrics.get("compare", {}).get("rel_change") or 0.0))
        return report
