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


def _list_base(base: Path) -> int:
    """What `wstui ls` prints for the base model (a plain list while that command is missing)."""
    try:
        from wstui.commands import ls
    except ImportError:
        from safetensors import safe_open

        with safe_open(str(base / "model.safetensors"), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shape = f.get_slice(name).get_shape()
                print(f"{name:50s} {'x'.join(map(str, shape))}")
        return 0
    return int(ls.run(argparse.Namespace(path=str(base), json=None)) or 0)


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
        from wstui.commands.app import open_app
    except ImportError:
        _print_paths(paths)
        print("(the app is not available; listing the base model instead)", file=sys.stderr)
        return _list_base(paths.base)
    diff = None if args.no_diff else paths.finetuned
    return int(open_app(paths.base, diff=diff, export_dir=".") or 0)
