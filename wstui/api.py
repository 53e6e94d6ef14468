"""`Scope`: the Python API. A thin face on the same ScanEngine as the CLI and the app, so a
number from `Scope.scan()` is the number `wstui scan --json` writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from analyzers.core import TensorResult
from wstui.checkpoint import Checkpoint, TensorRef, open_checkpoint
from wstui.checkpoint.select import select_tensors
from wstui.engine.diff import DiffReport
from wstui.engine.progress import ScanProgress
from wstui.engine.scan import ScanEngine, ScanReport


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
        file: str | None = None,
        allow_bin: bool = False,
    ) -> None:
        """`path` as the CLI takes it; an `org/name[@rev]` that is neither on disk nor in the
        HF cache is fetched from the Hub first (`file` picks one GGUF, `allow_bin` permits
        pickles), as `wstui pull` would."""
        from wstui.checkpoint.resolve import fetchable_repo_id

        if isinstance(path, str) and fetchable_repo_id(path):
            from wstui.checkpoint.hub import ensure_local

            path = ensure_local(path, file=file, allow_bin=allow_bin)
        self.path = path
        self.device = device
        self.workers = workers
        self.use_cache = use_cache
        self.options = dict(options or {})
        from wstui.config import load_config, merged_thresholds

        # the config file's [thresholds] as the CLI reads them; `options` overrides them
        thresholds = merged_thresholds(load_config(), self.options.get("thresholds"))
        if thresholds:
            self.options["thresholds"] = thresholds
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
        spectral: bool = True,
        on_result: Callable[[str, TensorResult], None] | None = None,
    ) -> DiffReport:
        """Compare every tensor with the one of the same HF name in `other`: the engine behind
        `wstui scan A --diff B` (wstui.engine.diff.DiffEngine), so the numbers are the CLI's."""
        from wstui.engine.diff import DiffEngine

        with open_checkpoint(other) as ckpt_b:
            engine = DiffEngine(
                self.checkpoint, ckpt_b, device=self.device, workers=self.workers,
                use_cache=self.use_cache, options={**self.options, **(options or {})},
                spectral=spectral, tensors=tensors, ranking_first=False,
            )
            return engine.run(on_result)

    def quant_study(
        self,
        *,
        bits: Sequence[int] = (8, 6, 5, 4, 3, 2),
        granularity: Sequence[str] = ("tensor", "channel", "group128"),
        scheme: Sequence[str] = ("sym",),
        tensors: str | Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The quantization study of `wstui quant` (the `wstui.quant/1` document)."""
        from wstui.engine.study import run_study

        return run_study(
            self.checkpoint, bits=bits, granularity=granularity, scheme=scheme,
            tensors=select_tensors(self.checkpoint.tensors, tensors), device=self.device,
            workers=self.workers, use_cache=self.use_cache,
        )

    def sensitivity(
        self,
        *,
        text: str | Path | None = None,
        tokens: int = 512,
        metrics: Sequence[str] = ("grad_x_weight", "fisher", "wanda"),
        probes: int = 8,
        topk: int = 100,
        mode: str = "global",
        perturb: Sequence[str] = ("zero",),
        scale: float = 1.0,
        controls: Sequence[str] = ("random_k", "bottom_k"),
        seeds: Sequence[int] = (0, 1, 2),
        eval_file: str | Path | None = None,
        device: str = "cpu",
        stability: bool = True,
        static: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """The sensitivity study of `wstui sensitivity` (the `wstui.sensitivity/1` document):
        builds the causal LM from this checkpoint, so it needs config and tokenizer."""
        from wstui.engine.sensitivity import run_sensitivity

        return run_sensitivity(
            self.checkpoint, text=text, tokens=tokens, metrics=metrics, probes=probes,
            topk=topk, mode=mode, perturb=perturb, scale=scale, controls=controls,
            seeds=seeds, eval_file=eval_file, device=device, stability=stability,
            static=static, use_cache=self.use_cache, progress=progress,
        )
