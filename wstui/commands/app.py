"""`wstui PATH`: open the checkpoint (headers only), then the app; the scan starts inside it.

The checkpoint is opened before the app so that bad input fails with one line and exit 2
before the terminal switches to the app. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wstui.commands import _args
from wstui.commands._run import EXIT_BAD_INPUT, cache_notices, fail, print_problems

#: The analyzers `--methods` may name, known without importing them (they import torch, which
#: the app must not load before its first frame). tests/test_cli_options.py checks this list
#: against `analyzers.names()`.
ANALYZER_NAMES = (
    "stats", "sparsity", "quantization", "quantization_full", "embedding", "spectral",
    "quant_alpha", "quant_sweep",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`wstui PATH`'s options (the top-level parser adds --version and lists subcommands)."""
    from wstui.checkpoint.series import ORDERS

    p.add_argument("path", type=_args.path_arg, nargs="?", help="checkpoint file, folder, or HF "
                   "repo id org/name[@rev] (fetched from the Hub when not cached)")
    p.add_argument("more", type=_args.path_arg, nargs="*", metavar="PATH",
                   help="more checkpoints: with the first, a training run's, opened in series "
                   "mode (the latest step first; [ and ] move between the steps)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration (thresholds, keys, which file) "
                   "and exit")
    p.add_argument("--diff", metavar="PATH_B", type=_args.path_arg, default=None,
                   help="compare with a second checkpoint")
    p.add_argument("--series", action="store_true",
                   help="PATH is a folder of a training run's checkpoints (checkpoint-N/, "
                   "step_N.safetensors, epoch-N/, as `wstui track` finds them): series mode")
    p.add_argument("--order", choices=ORDERS, default="step",
                   help="series mode: the order of the checkpoints (as `wstui track --order`)")
    p.add_argument("--export-dir", default=".", help="where `e`/`E` write JSON")
    p.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    _args.add_scan_options(p)
    _args.add_hub_options(p)


def check_methods(methods: Sequence[str] | None) -> None:
    """Raise ValueError naming the first unknown analyzer (the message `wstui scan` gives)."""
    unknown = [m for m in methods or () if m not in ANALYZER_NAMES]
    if unknown:
        raise ValueError(f"unknown analyzer {unknown[0]!r} (known: {', '.join(ANALYZER_NAMES)})")


def check_export_dir(directory: str | Path) -> None:
    """The folder `e`/`E` write into must be a folder we can write (or can create): found out
    now, not at the first export."""
    from wstui import outfile

    path = Path(directory).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:  # created at the first export
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"--export-dir {directory}: {probe} is not a folder")
    try:
        outfile.check_target(probe / ".wstui-export-check")
    except outfile.OutputError as exc:
        raise ValueError(f"--export-dir {directory}: {str(exc).rsplit(': ', 1)[-1]}") from None


def run(args: argparse.Namespace) -> int:

    from wstui.app.keys import binding_table
    from wstui.commands._run import say, scan_options
    from wstui.config import describe, load_config

    try:  # the checks of `wstui scan`, before the terminal switches to the app
        bindings = binding_table()
        config = load_config(binding_ids=bindings)
        if args.print_config:
            print(describe(config, bindings), end="")
            return 0
        thresholds = scan_options(args).get("thresholds", {})
        check_methods(args.methods)
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        check_export_dir(args.export_dir)
        paths = [args.path, *args.more]
        series = args.series or len(paths) > 1
        if series and args.diff is not None:
            raise ValueError("--diff compares two checkpoints; several paths (or --series) "
                             "open a training run: use one or the other")
    except ValueError as exc:
        say(exc)
        return EXIT_BAD_INPUT
    if series:  # local checkpoints only: a run is never fetched
        return open_series(
            paths, order=args.order, export_dir=args.export_dir, methods=args.methods,
            device=args.device, workers=args.workers, use_cache=not args.no_cache,
            mouse=not args.no_mouse, thresholds=thresholds, tensors=args.tensors,
            keymap=config.keys)
    fetch_repos(args)
    return open_app(
        args.path, diff=args.diff, export_dir=args.export_dir, methods=args.methods,
        device=args.device, workers=args.workers, use_cache=not args.no_cache,
        mouse=not args.no_mouse, thresholds=thresholds, tensors=args.tensors,
        keymap=config.keys,
    )


def fetch_repos(args: argparse.Namespace) -> None:
    """Swap `org/name[@rev]` repos that are neither on disk nor cached for their local copies:
    fetched in a small app whose header shows the bytes, rate and ETA when stdout is a
    terminal, else with the CLI's progress on stderr. Raises CheckpointError (one line)."""
    import sys

    from wstui.checkpoint.resolve import fetchable_repo_id

    file, allow_bin = getattr(args, "file", None), getattr(args, "allow_bin", False)
    todo: list[str] = []
    for attr in ("path", "diff"):
        value = getattr(args, attr, None)
        if isinstance(value, str) and fetchable_repo_id(value):
            from wstui.checkpoint.hub import cached_target

            target = cached_target(value, file=file if attr == "path" else None)
            if target is None:
                todo.append(attr)
            else:
                setattr(args, attr, target)
    if not todo:
        return
    repos = [getattr(args, attr) for attr in todo]
    if sys.stdout.isatty():
        from wstui.app.fetch import fetch_in_app

        targets = fetch_in_app(repos, file=file if todo[0] == "path" else None,
                               allow_bin=allow_bin, mouse=not args.no_mouse)
    else:
        from wstui.checkpoint.hub import download

        targets = [download(r, file=file if a == "path" else None, allow_bin=allow_bin)
                   for a, r in zip(todo, repos)]
    for attr, target in zip(todo, targets):
        setattr(args, attr, target)


def open_app(
    path: str | Path,
    *,
    diff: str | Path | None = None,
    export_dir: str | Path = ".",
    methods: Sequence[str] | None = None,
    device: str = "auto",
    workers: int | None = None,
    use_cache: bool = True,
    mouse: bool = True,
    thresholds: Mapping[str, float] | None = None,
    tensors: str | None = None,
    keymap: Mapping[str, str] | None = None,
) -> int:
    """Open the app on `path` (and `diff` as B); returns the exit code. Raises CheckpointError
    for bad input before the app starts. `wstui PATH` and `wstui demo` open it."""
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint.naming import build_tree

    ckpt = open_checkpoint(path)
    ckpt_b = open_checkpoint(diff) if diff is not None else None
    refs = ckpt.tensors
    if tensors:
        from wstui.checkpoint.select import select_tensors

        refs = select_tensors(ckpt.tensors, tensors)
        if not refs:
            return fail(f"{path}: no tensor matches {tensors!r}")
    options: dict[str, Any] = {"thresholds": dict(thresholds)} if thresholds else {}

    def engine_factory() -> Any:
        from wstui.engine.scan import ScanEngine

        return ScanEngine(ckpt, methods=methods, device=device, workers=workers,
                          use_cache=use_cache, options=options, tensors=refs)

    from wstui.app.app import WstuiApp

    app = WstuiApp(ckpt, build_tree(refs), engine_factory, export_dir=export_dir,
                   thresholds=thresholds, checkpoint_b=ckpt_b,
                   diff_kw={"device": device, "use_cache": use_cache}, keymap=keymap)
    code = app.run(mouse=mouse)
    engine = app.engine
    if engine is not None:
        engine.cancel()
        print_problems(cache_notices(engine))  # after the app: the terminal is ours again
    return int(code if code is not None else (app.return_code or 0))


def app_keymap() -> dict[str, str]:
    """The config file's [keys] (raises ValueError, one line, for a bad file)."""
    from wstui.app.keys import binding_table
    from wstui.config import load_config

    return dict(load_config(binding_ids=binding_table()).keys)


def open_series(paths: Sequence[str | Path], *, mouse: bool = True, **kw: Any) -> int:
    """Open the app in series mode on a training run (`series_app` says how); returns the
    exit code. Raises CheckpointError (one line) for bad input before the app starts."""
    import contextlib

    with contextlib.ExitStack() as stack:
        app = series_app(paths, stack, **kw)
        code = app.run(mouse=mouse)
        engine = app.engine
        if engine is not None:
            engine.cancel()
            print_problems(cache_notices(engine))
    return int(code if code is not None else (app.return_code or 0))


def series_app(
    paths: Sequence[str | Path],
    stack: Any,
    *,
    order: str = "step",
    export_dir: str | Path = ".",
    methods: Sequence[str] | None = None,
    track_methods: Sequence[str] | None = None,
    device: str = "auto",
    workers: int | None = None,
    use_cache: bool = True,
    thresholds: Mapping[str, float] | None = None,
    tensors: str | None = None,
    keymap: Mapping[str, str] | None = None,
    cluster: str | None = None,
) -> Any:
    """The app in series mode on a training run, not yet running: `paths` are its
    checkpoints, or one folder holding them (found and ordered as `wstui track` does); they
    stay open in `stack` (a `contextlib.ExitStack`). The app opens on the latest step; its
    Series tab plots the run's `wstui.track/1` (computed with `track_methods`, on `cluster`
    if given); `methods` are those of each step's scan.

    Bad input raises CheckpointError (one line), with the track's own messages: a checkpoint
    missing, fewer than two, a name without a step number, checkpoints that do not hold the
    same tensors with the same shapes; `--tensors` matching nothing raises it too."""
    from wstui.checkpoint.base import CheckpointError
    from wstui.checkpoint.naming import build_tree
    from wstui.checkpoint.select import select_tensors
    from wstui.checkpoint.series import discover
    from wstui.engine.track import open_plan

    steps = discover(list(paths), order)
    options: dict[str, Any] = {"thresholds": dict(thresholds)} if thresholds else {}
    plan = open_plan(steps, stack)  # every checkpoint's headers, checked against the first
    latest = plan.ckpts[-1]
    refs = select_tensors(latest.tensors, tensors) if tensors else latest.tensors
    if not refs:
        raise CheckpointError(steps[-1].path, f"no tensor matches {tensors!r}")

    def scan_factory(index: int) -> Any:
        from wstui.engine.scan import ScanEngine

        ckpt = plan.ckpts[index]
        chosen = select_tensors(ckpt.tensors, tensors) if tensors else ckpt.tensors
        return ScanEngine(ckpt, methods=methods, device=device, workers=workers,
                          use_cache=use_cache, options=options, tensors=chosen)

    def run_track(progress: Any) -> dict[str, Any]:
        from wstui.engine.track import track

        # the steps as found above, in that order: `given` keeps their numbers
        return track([s.path for s in steps], order="given", methods=track_methods,
                     device=device, workers=workers, use_cache=use_cache, options=options,
                     cluster=cluster, progress=progress)

    from wstui.app.app import WstuiApp
    from wstui.app.series import SeriesRun

    run = SeriesRun([s.step for s in steps], list(plan.ckpts), scan_factory, run_track)
    return WstuiApp(latest, build_tree(refs), lambda: scan_factory(run.latest),
                    export_dir=export_dir, thresholds=thresholds,
                    keymap=keymap if keymap is not None else app_keymap(), series=run)
