"""`wstui ls PATH [--json FILE]`: a checkpoint's tensors in layer-tree order; reads no weights."""

from __future__ import annotations

import argparse

from wstui.checkpoint import open_checkpoint


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    from wstui import jsonio
    from wstui.listing import ls_dict, summary_line, table

    with open_checkpoint(args.path) as ckpt:
        tbl = table(ckpt)
        console = Console()
        if not console.is_terminal:  # piped: one line per tensor, so that grep and cut work
            wide = Console(width=10_000)
            console = Console(width=Measurement.get(wide, wide.options, tbl).maximum)
        console.print(tbl)
        console.print(summary_line(ckpt), highlight=False, soft_wrap=True)
        if args.json:
            path = jsonio.dump(ls_dict(ckpt), args.json)
            Console(stderr=True).print(f"wrote {path}", highlight=False)
    return 0
