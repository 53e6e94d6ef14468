"""`wstui ls PATH [--json FILE]`: a checkpoint's tensors in layer-tree order; reads no weights.

The table is `wstui.render.ls`, the `wstui.ls/1` document `wstui.documents.ls`.
"""

from __future__ import annotations

import argparse
import sys

from wstui.commands import _args
from wstui.commands._run import exit_code, print_notes, say, write_outputs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "List a checkpoint's tensors in layer-tree order; reads no weights."
    p.add_argument("path", type=_args.path_arg)
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write wstui.ls/1 JSON (`-`: stdout)")
    _args.add_hub_options(p)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    from wstui import outfile
    from wstui.checkpoint import open_checkpoint
    from wstui.documents.ls import ls_dict
    from wstui.render import ls, plain, visible

    try:  # before the checkpoint is read: an unwritable target fails at once
        outfile.check_target(args.json)
    except outfile.OutputError as exc:
        say(exc)
        return exit_code(bad=True)
    with open_checkpoint(args.path) as ckpt:
        print_notes(ckpt)
        failed = write_outputs(args, document=lambda: ls_dict(ckpt))
        if args.json and not failed and not outfile.is_stdout(args.json):
            print(f"wrote {visible(args.json)}", file=sys.stderr)
        to_stderr = outfile.is_stdout(args.json)  # `-`: stdout is the JSON's
        if len(ckpt.tensors) > ls.PLAIN_ROWS:  # a rich Table of 100k rows takes a minute
            out = sys.stderr if to_stderr else sys.stdout
            out.write("\n".join([*ls.plain_lines(ckpt), visible(ls.summary_line(ckpt))]) + "\n")
        else:
            tbl = ls.table(ckpt)
            console = Console(stderr=to_stderr)
            if not console.is_terminal:  # piped: one line per tensor, so that grep and cut work
                wide = Console(width=10_000)
                console = Console(width=Measurement.get(wide, wide.options, tbl).maximum,
                                  stderr=console.stderr)
            console.print(tbl)
            console.print(plain(ls.summary_line(ckpt)), highlight=False, soft_wrap=True)
    for line in failed:
        say(line)
    return exit_code(bad=bool(failed))
