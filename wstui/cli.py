"""Argument parsing only. Each subcommand lives in `wstui.commands.<name>.run(args) -> int`.

Nothing heavy is imported here: `wstui ls` never loads torch and `wstui PATH` paints the app
before torch is loaded.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from wstui._version import __version__

SUBCOMMANDS = ("scan", "ls", "quant", "demo", "pull", "sensitivity")

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv_list(value)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {value}") from exc


def _threshold(value: str) -> tuple[str, float]:
    code, sep, num = value.partition("=")
    try:
        if not sep:
            raise ValueError
        return code.strip(), float(num)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected code=value, got {value!r}") from exc


def _add_scan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=_csv_list, default=None,
                   help="analyzers to run, comma-separated (default: the default set)")
    p.add_argument("--tensors", metavar="GLOB", default=None,
                   help="only tensors whose name (stored or HF) matches this glob")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--workers", type=int, default=None, help="worker threads (default: cores)")
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
    """Swap an `org/name[@rev]` that is not on disk for what to open, fetching it if needed."""
    from wstui.checkpoint.resolve import fetchable_repo_id

    for attr, file in (("path", getattr(args, "file", None)), ("diff", None)):
        value = getattr(args, attr, None)
        if isinstance(value, str) and fetchable_repo_id(value):
            from wstui.checkpoint.hub import ensure_local

            setattr(args, attr, ensure_local(value, file=file,
                                             allow_bin=getattr(args, "allow_bin", False)))


def build_app_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wstui",
        description="Explore the weights of a checkpoint in the terminal. Subcommands: "
        + ", ".join(SUBCOMMANDS) + " (see `wstui SUBCOMMAND --help`).",
    )
    p.add_argument("--version", action="version", version=f"wstui {__version__}")
    p.add_argument("path", help="checkpoint file, folder, or HF repo id org/name[@rev] "
                   "(fetched from the Hub when not cached)")
    p.add_argument("--diff", metavar="PATH_B", default=None,
                   help="compare with a second checkpoint")
    p.add_argument("--export-dir", default=".", help="where `e`/`E` write JSON")
    p.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    _add_scan_options(p)
    _add_hub_options(p)
    p.set_defaults(command="app")
    return p


def build_sub_parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"wstui {name}")
    p.set_defaults(command=name)
    if name == "ls":
        p.description = "List a checkpoint's tensors in layer-tree order; reads no weights."
        p.add_argument("path")
        p.add_argument("--json", metavar="FILE", default=None, help="write wstui.ls/1 JSON")
    elif name == "scan":
        p.description = "Analyze a checkpoint headless: progress on stderr, top issues on stdout."
        p.add_argument("path")
        p.add_argument("--diff", metavar="PATH_B", default=None)
        p.add_argument("--json", metavar="FILE", default=None)
        p.add_argument("--csv", metavar="FILE", default=None)
        p.add_argument("--top-issues", type=int, default=20, metavar="N")
        p.add_argument("--fail-on", choices=["info", "warn", "critical"], default=None)
        p.add_argument("--quiet", action="store_true", help="no progress, no tables")
        _add_scan_options(p)
    elif name == "quant":
        p.description = "Quantization study: per-layer alpha and SQNR under fake quantization."
        p.add_argument("path")
        p.add_argument("--bits", type=_int_list, default=[8, 6, 5, 4, 3, 2])
        p.add_argument("--granularity", type=_csv_list, default=["tensor", "channel", "group128"])
        p.add_argument("--scheme", type=_csv_list, default=["sym"])
        p.add_argument("--json", metavar="FILE", default=None)
        p.add_argument("--csv", metavar="FILE", default=None)
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
    if name in ("ls", "scan", "quant", "pull"):
        _add_hub_options(p)
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return build_sub_parser(argv[0]).parse_args(argv[1:])
    return build_app_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from wstui.checkpoint.base import CheckpointError

    module = importlib.import_module(f"wstui.commands.{args.command}")
    try:
        _fetch_repo_ids(args)
        return int(module.run(args) or 0)
    except CheckpointError as exc:
        print(f"wstui: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("wstui: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
