"""`wstui serve PATH`: the Textual app in a browser tab, through textual-serve.

textual-serve runs a command per browser session and relays its terminal over a websocket;
the command is `python -m wstui PATH ...` with this interpreter, so the browser shows exactly
the app of `wstui PATH`. The checkpoint is opened once here first, so a bad path fails with
the usual one-line error before a server starts.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from wstui.commands import _args
from wstui.commands._run import EXIT_BAD_INPUT, EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Serve the app in a browser tab (textual-serve)."
    p.add_argument("path")
    p.add_argument("--diff", metavar="PATH_B", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    _args.add_hub_options(p)


def app_command(args: argparse.Namespace) -> str:
    """The shell command each browser session runs (every part quoted)."""
    parts = [sys.executable, "-m", "wstui", str(args.path)]
    if args.diff:
        parts += ["--diff", str(args.diff)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        print(f"wstui: --port must be 1 to 65535, got {args.port}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from wstui.checkpoint import open_checkpoint

    with open_checkpoint(args.path):
        pass
    if args.diff:
        with open_checkpoint(args.diff):
            pass
    try:
        from textual_serve.server import Server
    except ImportError:
        print("wstui: serve needs the textual-serve package (pip install textual-serve)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    server = Server(app_command(args), host=args.host, port=args.port,
                    title=f"wstui {args.path}")
    try:
        server.serve()
    except OSError as exc:  # the port is taken, or the host cannot be bound
        print(f"wstui: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
