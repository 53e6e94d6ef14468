"""`wstui demo`: write the demo checkpoints, then open them in the app (diff mode by default)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _print_paths(paths) -> None:
    print(f"base model       {paths.base}")
    print(f"fine-tuned model {paths.finetuned}")
    print(f"GGUF copy (Q8_0) {paths.gguf if paths.gguf is not None else '(no GGUF writer yet)'}")
    print(f"manifest         {paths.manifest}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Write the demo checkpoints and open them in the app (diff mode)."
    p.add_argument("--out", metavar="DIR", default=None, help="write only, into DIR")
    p.add_argument("--no-diff", action="store_true", help="open the base model alone")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")


def _list_base(base: Path) -> int:
    """What `wstui ls` prints for the base model, as plain lines (when the app is missing)."""
    from wstui.checkpoint import open_checkpoint
    from wstui.render import visible
    from wstui.render.ls import plain_lines, summary_line

    with open_checkpoint(base) as ckpt:
        print("\n".join([*plain_lines(ckpt), visible(summary_line(ckpt))]))
    return 0


def run(args: argparse.Namespace) -> int:
    from wstui.demo import build_demo, default_dir

    out = Path(args.out) if args.out else default_dir()
    if out.exists() and not out.is_dir():
        print(f"wstui: {out}: not a folder (--out wants a folder for the demo files)",
              file=sys.stderr)
        return 2
    try:
        paths = build_demo(out, force=args.force)
    except OSError as exc:  # e.g. --out names a file, or a read-only folder
        print(f"wstui: cannot write the demo into {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.out:
        _print_paths(paths)
        return 0
    try:
        import wstui.app.app  # noqa: F401  (textual and the app, before anything is opened)
    except ImportError:
        _print_paths(paths)
        print("(the app is not available; listing the base model instead)", file=sys.stderr)
        return _list_base(paths.base)
    from wstui.commands.app import open_app

    diff = None if args.no_diff else paths.finetuned
    return int(open_app(paths.base, diff=diff, export_dir=".") or 0)
