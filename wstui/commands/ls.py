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
    from wstui.listing import PLAIN_ROWS, ls_dict, plain_lines, print_notes, summary_line, table
    from wstui.render import plain, visible

    try:  # before the checkpoint is read: an unwritable target fails at once
        outfile.check_target(args.json)
    except outfile.OutputError as exc:
        print(f"wstui: {visible(exc)}", file=sys.stderr)
        return exit_code(bad=True)
    failed = None
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        if args.json:
            try:
                path = jsonio.dump(ls_dict(ckpt), args.json)
                if not outfile.is_stdout(args.json):
                    print(f"wrote {visible(path)}", file=sys.stderr)
            except outfile.OutputError as exc:
                failed = str(exc)
        to_stderr = outfile.is_stdout(args.json)  # `-`: stdout is the JSON's
        if len(ckpt.tensors) > PLAIN_ROWS:  # a rich Table of 100k rows takes a minute
            out = sys.stderr if to_stderr else sys.stdout
            out.write("\n".join([*plain_lines(ckpt), visible(summary_line(ckpt))]) + "\n")
        else:
            tbl = table(ckpt)
            console = Console(stderr=to_stderr)
            if not console.is_terminal:  # piped: one line per tensor, so that grep and cut work
                wide = Console(width=10_000)
                console = Console(width=Measurement.get(wide, wide.options, tbl).maximum,
                                  stderr=console.stderr)
            console.print(tbl)
            console.print(plain(summary_line(ckpt)), highlight=False, soft_wrap=True)
    if failed:
        print(f"wstui: {visible(failed)}", file=sys.stderr)
    return exit_code(bad=failed is not None)
