"""`wstui ls PATH [--json FILE]`: a checkpoint's tensors in layer-tree order; reads no weights."""

from __future__ import annotations

import argparse
import sys

from wstui.checkpoint import open_checkpoint
from wstui.cli import exit_code


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    from wstui import jsonio, outfile
    from wstui.listing import ls_dict, summary_line, table

    try:  # before the checkpoint is read: an unwritable target fails at once
        outfile.check_target(args.json)
    except outfile.OutputError as exc:
        print(f"wstui: {exc}", file=sys.stderr)
        return exit_code(bad=True)
    failed = None
    with open_checkpoint(args.path) as ckpt:
        if args.json:
            try:
                path = jsonio.dump(ls_dict(ckpt), args.json)
                if not outfile.is_stdout(args.json):
                    Console(stderr=True).print(f"wrote {path}", highlight=False, markup=False)
            except outfile.OutputError as exc:
                failed = str(exc)
        tbl = table(ckpt)
        console = Console(stderr=outfile.is_stdout(args.json))  # `-`: stdout is the JSON's
        if not console.is_terminal:  # piped: one line per tensor, so that grep and cut work
            wide = Console(width=10_000)
            console = Console(width=Measurement.get(wide, wide.options, tbl).maximum,
                              stderr=console.stderr)
        console.print(tbl)
        console.print(summary_line(ckpt), highlight=False, soft_wrap=True)
    if failed:
        print(f"wstui: {failed}", file=sys.stderr)
    return exit_code(bad=failed is not None)
