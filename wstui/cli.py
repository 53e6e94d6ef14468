"""The top-level parser and the dispatch; each subcommand is `wstui.commands.<name>`, which adds
its own options (`add_arguments(parser)`) and runs (`run(args) -> int`); the option types and
groups several commands share are in `wstui.commands._args`.

Nothing heavy is imported here, and only the module of the command given is imported: `wstui
ls` never loads torch and `wstui PATH` paints the app before torch is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from wstui._version import __version__
from wstui.commands._run import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, say

SUBCOMMANDS = ("scan", "ls", "quant", "demo", "pull", "report", "serve", "sensitivity",
               "track")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`wstui scan: error: ...`, exit 2) instead of the usage
    block: the line is what a script's log shows, and `--help` has the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _fetch_repo_ids(args: argparse.Namespace) -> None:
    """Swap an `org/name[@rev]` that is not on disk for what to open, fetching it if needed.
    The app fetches its own (`wstui.commands.app`), with the progress in its header."""
    from wstui.checkpoint.resolve import fetchable_repo_id

    if args.command == "app":
        return

    for attr, file in (("path", getattr(args, "file", None)), ("diff", None)):
        value = getattr(args, attr, None)
        if isinstance(value, str) and fetchable_repo_id(value):
            from wstui.checkpoint.hub import ensure_local

            setattr(args, attr, ensure_local(value, file=file,
                                             allow_bin=getattr(args, "allow_bin", False)))


def _command(name: str) -> Any:
    """The module of command `name` (`app` for `wstui PATH`), imported now and only now."""
    return importlib.import_module(f"wstui.commands.{name}")


def build_app_parser() -> argparse.ArgumentParser:
    """`wstui [PATH]`: the app (`wstui.commands.app`), and the list of subcommands."""
    p = _Parser(
        prog="wstui",
        description="Explore the weights of a checkpoint in the terminal. Subcommands: "
        + ", ".join(SUBCOMMANDS) + " (see `wstui SUBCOMMAND --help`).",
    )
    p.add_argument("--version", action="version", version=f"wstui {__version__}")
    _command("app").add_arguments(p)
    p.set_defaults(command="app")
    return p


def build_sub_parser(name: str) -> argparse.ArgumentParser:
    """`wstui NAME ...`: the options `wstui.commands.NAME` adds."""
    p = _Parser(prog=f"wstui {name}")
    p.set_defaults(command=name)
    _command(name).add_arguments(p)
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return build_sub_parser(argv[0]).parse_args(argv[1:])
    parser = build_app_parser()
    args = parser.parse_args(argv)
    if args.path is None and not args.print_config:  # optional only for --print-config
        parser.error("the following arguments are required: path")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from wstui.checkpoint.base import CheckpointError

    module = _command(args.command)
    from wstui import outfile

    try:  # before anything is fetched or read (the commands check again when called directly)
        outfile.check_targets(json=getattr(args, "json", None), csv=getattr(args, "csv", None))
    except outfile.OutputError as exc:
        say(str(exc))
        return EXIT_BAD_INPUT
    stdout_was = _stdout_identity()
    try:
        _fetch_repo_ids(args)
        code = int(module.run(args) or 0)
        _flush_stdout()
        return code
    except SystemExit as exc:
        # rich handles a broken pipe itself: stdout to /dev/null, then SystemExit(1)
        if exc.code == 1 and stdout_was != _stdout_identity() == _devnull_identity():
            return EXIT_OK
        raise
    except CheckpointError as exc:
        say(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("wstui: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except _StdoutError as exc:
        say(f"cannot write to stdout: {exc}")
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. the report printed to a full stdout (/dev/full)
        try:
            _flush_stdout()
        except _StdoutError as out_exc:
            say(f"cannot write to stdout: {out_exc}")
            return EXIT_BAD_INPUT
        except BrokenPipeError:
            return _quiet_broken_pipe()
        where = (f"{exc.filename}: " if exc.filename else
                 "cannot write to stdout: " if _raised_in_console(exc) else "")
        say(f"{where}{exc.strerror or exc}")
        return EXIT_BAD_INPUT


def _raised_in_console(exc: BaseException) -> bool:
    """True when rich's console raised it (the report going to a stdout that fails)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(os.path.join("rich", "console.py")):
            return True
        tb = tb.tb_next
    return False


def _stdout_identity() -> tuple[int, int] | None:
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_dev, st.st_ino


def _devnull_identity() -> tuple[int, int] | None:
    try:
        st = os.stat(os.devnull)
    except OSError:  # pragma: no cover
        return None
    return st.st_dev, st.st_ino


class _StdoutError(Exception):
    """stdout failed at the final flush (e.g. it is /dev/full)."""


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        with contextlib.suppress(OSError, ValueError):  # drop what cannot be written
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise _StdoutError(exc.strerror or str(exc)) from None


def _quiet_broken_pipe() -> int:
    """`wstui ls BIG | head -1`: the reader left. Exit 0 with nothing on stderr, as coreutils
    do; stdout is pointed at /dev/null so that the exit-time flush does not fail again (the
    recipe in Python's `signal` docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout has no descriptor (tests) or is closed
        pass
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
