"""Option types and option groups the subcommands share (`--methods`, `--threshold`, the Hub
options). Below every command module, so that no command imports the entry point to get them.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable


def csv_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in csv_list(value)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}") from exc


def threshold(value: str) -> tuple[str, float]:
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


def count(minimum: int) -> Callable[[str], int]:
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


def path_arg(value: str) -> str:
    """A checkpoint path (or repo id) option: refuses an empty one."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the path is empty")
    return value


def add_scan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", type=csv_list, default=None,
                   help="analyzers to run, comma-separated (default: the default set)")
    p.add_argument("--tensors", metavar="GLOB", default=None,
                   help="only tensors whose name (stored or HF) matches this glob")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--workers", type=count(1), default=None,
                   help="worker threads (default: cores)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--threshold", type=threshold, action="append", default=[],
                   metavar="CODE=VALUE", help="override a finding threshold (repeatable)")


def add_hub_options(p: argparse.ArgumentParser) -> None:
    """For an `org/name[@rev]` not in the local HF cache, which is then fetched from the Hub."""
    p.add_argument("--file", metavar="NAME", default=None,
                   help="the weight file to fetch and open when a Hub repo holds several GGUFs")
    p.add_argument("--allow-bin", action="store_true",
                   help="fetch PyTorch pickles (.bin) from the Hub (loaded weights_only=True)")


def add_cluster_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run the tasks on this Ray cluster (default: $RAY_ADDRESS when set, "
                        "else here); needs pip install 'wstui[ray]'")


def cluster_address(args: argparse.Namespace) -> str | None:
    """`--cluster ADDRESS`, else `RAY_ADDRESS` from the environment, else None (local)."""
    return getattr(args, "cluster", None) or os.environ.get("RAY_ADDRESS") or None
