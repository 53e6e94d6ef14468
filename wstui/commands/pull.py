"""`wstui pull org/name[@rev] [--revision R] [--file F] [--allow-bin]`: fetch, do not open.

Always asks the Hub (unless offline) so that a moved branch is noticed; files already in the
cache are not fetched again. Prints the local path on stdout, for scripts.
"""

from __future__ import annotations

import argparse
import sys

from wstui.checkpoint.base import CheckpointError
from wstui.commands import _args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Fetch a Hugging Face Hub repo into the local HF cache without opening "
                     "it: config, tokenizer and weights (safetensors, one GGUF; .bin only "
                     "with --allow-bin). Prints the local path.")
    p.add_argument("repo", metavar="org/name[@revision]")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    _args.add_hub_options(p)


def repo_text(args: argparse.Namespace) -> str:
    """`org/name@rev` from the positional id and --revision (which must agree if both given)."""
    from wstui.checkpoint.resolve import fetchable_repo_id, split_revision

    repo_id, rev = split_revision(args.repo)
    if args.revision and rev and args.revision != rev:
        raise CheckpointError(args.repo, f"names revision {rev} and --revision {args.revision}")
    rev = rev or args.revision
    text = f"{repo_id}@{rev}" if rev else repo_id
    if not fetchable_repo_id(text):
        raise CheckpointError(args.repo, "not a Hub repo id (expected org/name[@revision]) "
                                         "or it names a local path")
    return text


def run(args: argparse.Namespace) -> int:
    from wstui.checkpoint import hub

    text = repo_text(args)
    if hub.is_offline():
        target = hub.cached_target(text, file=args.file)
        if target is None:
            hub.download(text, file=args.file, allow_bin=args.allow_bin)  # raises: offline
        print(f"wstui: offline: {text} is cached, not checked against the Hub", file=sys.stderr)
    else:
        target = hub.download(text, file=args.file, allow_bin=args.allow_bin)
    if target == text:
        from wstui.checkpoint.resolve import resolve_repo_id, split_revision

        target = str(resolve_repo_id(*split_revision(text)))
    print(target)
    return 0
