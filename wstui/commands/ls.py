"""`wstui ls PATH [--json FILE]`: a checkpoint's tensors in layer-tree order; reads no weights."""

from __future__ import annotations

import argparse
import sys

from wstui.checkpoint import open_checkpoint


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    from wstui import jsonio
    from wstui.listing import PLAIN_ROWS, ls_dict, plain_lines, print_notes, summary_line, table
    from wstui.render import plain, visible

    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        if len(ckpt.tensors) > PLAIN_ROWS:  # a rich Table of 100k rows takes a minute
            sys.stdout.write("\n".join([*plain_lines(ckpt), visible(summary_line(ckpt))]) + "\n")
        else:
            tbl = table(ckpt)
            console = Console()
            if not console.is_terminal:  # piped: one line per tensor, so that grep and cut work
                wide = Console(width=10_000)
                console = Console(width=Measurement.get(wide, wide.options, tbl).maximum)
            console.print(tbl)
            console.print(plain(summary_line(ckpt)), highlight=False, soft_wrap=True)
        if args.json:
            path = jsonio.dump(ls_dict(ckpt), args.json)
            print(f"wrote {visible(path)}", file=sys.stderr)
    return 0
