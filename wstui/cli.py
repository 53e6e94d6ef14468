"""Argument parsing only. Each subcommand lives in `wstui.commands.<name>.run(args) -> int`.

Nothing heavy is imported here: `wstui ls` never loads torch and `wstui PATH` paints the app
before torch is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence

from wstui._version import __version__

SUBCOMMANDS = ("scan", "ls", "quant", "demo", "pull", "report", "serve", "sensitivity", "track")

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: some tensors could not be loaded or analyzed (the rest of the report is there)
EXIT_TENSORS_FAILED = 3


def exit_code(*, interrupted: bool = False, bad: bool = False, failed: bool = False,
              findings: bool = False) -> int:
    """One exit code when several things went wrong: 130 interrupted, then 2 bad input or an
    output that could not be written, then 3 tensors failed, then 1 findings at --fail-on.
    The most serious one wins: each later one is less certain to be complete or right."""
    if interrupted:
        return EXIT_INTERRUPTED
    if bad:
        return EXIT_BAD_INPUT
    if failed:
        return EXIT_TENSORS_FAILED
    return EXIT_FINDINGS if findings else EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`wstui scan: error: ...`, exit 2) instead of the usage
    block: the line is what a script's log shows, and `--help` has the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _csv_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv_list(value)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}") from exc


def _threshold(value: str) -> tuple[str, float]:
    code, sep, num = value.partition("=")
    try:
        if not sep or not code.strip():
            raise ValueError
        number = float(num)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected code=value, got {value!r}") from exc
    if not math.isfinite(number):  # a NaN threshold never fires, an infinite one always
        raise argparse.ArgumentTypeError(f"threshold must be a finite number, got {value!r}")
    return code.strip(), number


def _count(minimum: int) -> Callable[[str], int]:
    """An int option type that refuses values below `minimum`."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n

    parse.__name__ = "int"
    return parse


def _path(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("the path is empty")
    return value


def _add_scan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=_csv_list, default=None,
                   help="analyzers to run, comma-separated (default: the default set)")
    p.add_argument("--tensors", metavar="GLOB", default=None,
                   help="only tensors whose name (stored or HF) matches this glob")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--workers", type=_count(1), default=None,
                   help="worker threads (default: cores)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--threshold", type=_threshold, action="append", default=[],
                   metavar="CODE=VALUE", help="override a finding threshold (repeatable)")


def _add_hub_options(p: argparse.ArgumentParser) -> None:
    """For an `org/name[@rev]` not in the local HF cache, which is then fetched from the Hub."""
    p.add_argument("--file", metavar="NAME", default=None,
                   help="the weight file to fetch and open when a Hub repo holds several GGUFs")
    p.add_argument("--allow-bin", action="store_true",
                   help="fetch PyTorch pickles (.bin) from the Hub (loaded weights_only=True)")


def _fetch_repo_ids(args: argparse.Namespace) -> None:
    """Swap an `org/name[@rev]` that is not on disk for what to open, fetching it if needed.
    The app fetches its own (`wstui.commands.app`), with the progress in its header."""
    from wstui.checkpoint.resolve import fetchable_repo_id

    if args.command == "app":
        return

    for attr, file in (("path", getattr(args, "file", None)), ("diff", None)):
        value = getattr(args, attr, None)
        if isinstance(value, str) and fetchable_repo_id(value):
            from wstui.checkpoint.hub import ensure_local

            setattr(args, attr, ensure_local(value, file=file,
                                             allow_bin=getattr(args, "allow_bin", False)))


def build_app_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="wstui",
        description="Explore the weights of a checkpoint in the terminal. Subcommands: "
        + ", ".join(SUBCOMMANDS) + " (see `wstui SUBCOMMAND --help`).",
    )
    p.add_argument("--version", action="version", version=f"wstui {__version__}")
    p.add_argument("path", type=_path, nargs="?", help="checkpoint file, folder, or HF repo "
                   "id org/name[@rev] (fetched from the Hub when not cached)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration (thresholds, keys, which file) "
                   "and exit")
    p.add_argument("--diff", metavar="PATH_B", type=_path, default=None,
                   help="compare with a second checkpoint")
    p.add_argument("--export-dir", default=".", help="where `e`/`E` write JSON")
    p.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    _add_scan_options(p)
    _add_hub_options(p)
    p.set_defaults(command="app")
    return p


def build_sub_parser(name: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"wstui {name}")
    p.set_defaults(command=name)
    if name == "ls":
        p.description = "List a checkpoint's tensors in layer-tree order; reads no weights."
        p.add_argument("path", type=_path)
        p.add_argument("--json", metavar="FILE", default=None,
                       help="write wstui.ls/1 JSON (`-`: stdout)")
    elif name == "scan":
        p.description = "Analyze a checkpoint headless: progress on stderr, top issues on stdout."
        p.add_argument("path", type=_path)
        p.add_argument("--diff", metavar="PATH_B", type=_path, default=None)
        p.add_argument("--json", metavar="FILE", default=None, help="`-`: stdout")
        p.add_argument("--csv", metavar="FILE", default=None, help="`-`: stdout")
        p.add_argument("--top-issues", type=_count(0), default=20, metavar="N")
        p.add_argument("--fail-on", choices=["info", "warn", "critical"], default=None)
        p.add_argument("--quiet", action="store_true", help="no progress, no tables")
        _add_scan_options(p)
        importlib.import_module("wstui.commands.track").add_cluster_option(p)  # issue 17
    elif name == "track":
        importlib.import_module("wstui.commands.track").configure(p)
    elif name == "quant":
        p.description = "Quantization study: per-layer alpha and SQNR under fake quantization."
        p.add_argument("path", type=_path)
        p.add_argument("--bits", type=_int_list, default=[8, 6, 5, 4, 3, 2])
        p.add_argument("--granularity", type=_csv_list, default=["tensor", "channel", "group128"])
        p.add_argument("--scheme", type=_csv_list, default=["sym"])
        p.add_argument("--json", metavar="FILE", default=None, help="`-`: stdout")
        p.add_argument("--csv", metavar="FILE", default=None, help="`-`: stdout")
        p.add_argument("--quiet", action="store_true")
        _add_scan_options(p)
    elif name == "demo":
        p.description = "Write the demo checkpoints and open them in the app (diff mode)."
        p.add_argument("--out", metavar="DIR", default=None, help="write only, into DIR")
        p.add_argument("--no-diff", action="store_true", help="open the base model alone")
        p.add_argument("--force", action="store_true", help="rebuild even if cached")
    elif name == "pull":
        p.description = ("Fetch a Hugging Face Hub repo into the local HF cache without opening "
                         "it: config, tokenizer and weights (safetensors, one GGUF; .bin only "
                         "with --allow-bin). Prints the local path.")
        p.add_argument("repo", metavar="org/name[@revision]")
        p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    elif name == "report":
        p.description = ("Write a self-contained HTML report (offline, light and dark), the same "
                         "as Markdown, and publication figures.")
        p.add_argument("path")
        p.add_argument("--diff", metavar="PATH_B", default=None, help="add the diff with B")
        p.add_argument("--quant", action="store_true", help="add the quantization study")
        p.add_argument("--sensitivity", action="store_true",
                       help="add the sensitivity study (a causal LM: forward and backward "
                            "passes on the shipped calibration text)")
        p.add_argument("-o", "--output", metavar="FILE.html", default=None,
                       help="the HTML file (default report.html unless --md/--figures)")
        p.add_argument("--md", metavar="FILE.md", default=None,
                       help="the report as Markdown, figures as PNG beside it")
        p.add_argument("--figures", metavar="DIR", default=None, help="every figure as a file")
        p.add_argument("--format", default="svg,png,pdf", metavar="svg,png,pdf",
                       help="formats of --figures (default all three)")
        p.add_argument("--worst", type=int, default=5, metavar="N",
                       help="plot the N worst tensors (default 5)")
        p.add_argument("--quiet", action="store_true", help="no progress, no summary line")
        _add_scan_options(p)
    elif name == "serve":
        p.description = "Serve the app in a browser tab (textual-serve)."
        p.add_argument("path")
        p.add_argument("--diff", metavar="PATH_B", default=None)
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    elif name == "sensitivity":
        p.description = ("Which weights the model depends on: gradient and Hessian scores on a "
                         "calibration text, super weights, perturbation against random and "
                         "bottom-k controls (needs a causal LM with config and tokenizer).")
        p.add_argument("path")
        p.add_argument("--text", metavar="FILE", default=None,
                       help="calibration text (default: the one shipped with wstui)")
        p.add_argument("--tokens", type=int, default=512, metavar="N")
        p.add_argument("--metrics", type=_csv_list, default=["grad_x_weight", "fisher", "wanda"],
                       help="grad_x_weight,fisher,wanda,hutchinson,magnitude")
        p.add_argument("--probes", type=int, default=8, metavar="N",
                       help="Rademacher probes per seed for hutchinson")
        p.add_argument("--topk", type=int, default=100, metavar="K")
        p.add_argument("--mode", default="global", help="global, layerwise or head")
        p.add_argument("--perturb", type=_csv_list, default=["zero"],
                       help="zero,sign_flip,gauss,bit_flip")
        p.add_argument("--scale", type=float, default=1.0,
                       help="gauss: noise std in units of the tensor's std")
        p.add_argument("--controls", type=_csv_list, default=["random_k", "bottom_k"])
        p.add_argument("--seeds", type=_int_list, default=[0, 1, 2])
        p.add_argument("--eval", metavar="FILE", default=None,
                       help="JSONL: ctx/endings/label (multiple choice) or text (last word)")
        p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
        p.add_argument("--json", metavar="FILE", default=None)
        p.add_argument("--csv", metavar="FILE", default=None)
        p.add_argument("--no-stability", action="store_true",
                       help="skip the two text halves (two more backward passes)")
        p.add_argument("--no-static", action="store_true",
                       help="skip alpha / int8 SQNR / stable rank for the summary")
        p.add_argument("--no-cache", action="store_true")
        p.add_argument("--quiet", action="store_true", help="no progress, no tables")
    if name in ("ls", "scan", "quant", "pull", "report", "serve", "sensitivity"):
        _add_hub_options(p)
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return build_sub_parser(argv[0]).parse_args(argv[1:])
    parser = build_app_parser()
    args = parser.parse_args(argv)
    if args.path is None and not args.print_config:  # optional only for --print-config
        parser.error("the following arguments are required: path")
    return args


def _say(message: str) -> None:
    """One `wstui: …` line on stderr; file names in it are shown as text (DESIGN §10)."""
    from wstui.render import visible

    print(f"wstui: {visible(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from wstui.checkpoint.base import CheckpointError

    cluster = args.command == "scan" and (getattr(args, "cluster", None) or os.environ.get(
        "RAY_ADDRESS"))  # `scan --cluster` runs in wstui.commands.track
    module = importlib.import_module(f"wstui.commands.{'track' if cluster else args.command}")
    from wstui import outfile

    try:  # before anything is fetched or read (the commands check again when called directly)
        outfile.check_targets(json=getattr(args, "json", None), csv=getattr(args, "csv", None))
    except outfile.OutputError as exc:
        _say(str(exc))
        return EXIT_BAD_INPUT
    stdout_was = _stdout_identity()
    try:
        _fetch_repo_ids(args)
        code = int(module.run(args) or 0)
        _flush_stdout()
        return code
    except SystemExit as exc:
        # rich handles a broken pipe itself: stdout to /dev/null, then SystemExit(1)
        if exc.code == 1 and stdout_was != _stdout_identity() == _devnull_identity():
            return EXIT_OK
        raise
    except CheckpointError as exc:
        _say(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("wstui: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except _StdoutError as exc:
        _say(f"cannot write to stdout: {exc}")
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. the report printed to a full stdout (/dev/full)
        try:
            _flush_stdout()
        except _StdoutError as out_exc:
            _say(f"cannot write to stdout: {out_exc}")
            return EXIT_BAD_INPUT
        except BrokenPipeError:
            return _quiet_broken_pipe()
        where = (f"{exc.filename}: " if exc.filename else
                 "cannot write to stdout: " if _raised_in_console(exc) else "")
        _say(f"{where}{exc.strerror or exc}")
        return EXIT_BAD_INPUT


def _raised_in_console(exc: BaseException) -> bool:
    """True when rich's console raised it (the report going to a stdout that fails)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(os.path.join("rich", "console.py")):
            return True
        tb = tb.tb_next
    return False


def _stdout_identity() -> tuple[int, int] | None:
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_dev, st.st_ino


def _devnull_identity() -> tuple[int, int] | None:
    try:
        st = os.stat(os.devnull)
    except OSError:  # pragma: no cover
        return None
    return st.st_dev, st.st_ino


class _StdoutError(Exception):
    """stdout failed at the final flush (e.g. it is /dev/full)."""


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        with contextlib.suppress(OSError, ValueError):  # drop what cannot be written
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise _StdoutError(exc.strerror or str(exc)) from None


def _quiet_broken_pipe() -> int:
    """`wstui ls BIG | head -1`: the reader left. Exit 0 with nothing on stderr, as coreutils
    do; stdout is pointed at /dev/null so that the exit-time flush does not fail again (the
    recipe in Python's `signal` docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout has no descriptor (tests) or is closed
        pass
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
