"""Which checkpoints make up a training run, and in what order (`wstui track`).

A run is given as several checkpoints (folders or weight files of any supported format) or as
one folder holding them (`checkpoint-500/`, `step_2000.safetensors`, `epoch-3/`, ...). Each
gets a step: the number in its name after `checkpoint`, `ckpt`, `step`, `global_step`, `iter`
or `epoch` (a bare number is a step too). The step, not the position, is the x of every
series, so irregular spacing is kept. Orders:

- `step` (the default): by that number; a checkpoint without one is bad input.
- `name`, `mtime`, `given`: by name, by modification time, or as listed; the steps are the
  numbers in the names when every name has one, else the positions 0, 1, 2, ...

Every problem is a `CheckpointError` naming the file (one line, exit 2 in the CLI).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from wstui.checkpoint.base import CheckpointError

ORDERS = ("step", "name", "mtime", "given")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")

_STEP = re.compile(
    r"(?<![a-z])(global[_-]?step|checkpoint|ckpt|steps?|iter(?:ation)?|epoch)[-_ =]?(\d+)",
    re.IGNORECASE)
#: a number after one of these words wins over an epoch number in the same name
_STEP_WORDS = ("global_step", "global-step", "globalstep", "checkpoint", "ckpt", "step", "steps",
               "iter", "iteration")


@dataclass(frozen=True)
class Step:
    """One checkpoint of the run: its step (the series' x) and where it is."""

    step: int
    path: Path


def parse_step(name: str) -> int | None:
    """The step number in a checkpoint's file or folder name, or None.

    `checkpoint-1000` -> 1000, `step_2000.safetensors` -> 2000, `epoch-3` -> 3,
    `epoch3-step500` -> 500 (a step word beats an epoch), `1500` -> 1500."""
    stem = name
    for suffix in WEIGHT_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    found = [(m.group(1).lower(), int(m.group(2))) for m in _STEP.finditer(stem)]
    steps = [n for word, n in found if word in _STEP_WORDS]
    if steps:
        return steps[-1]
    if found:
        return found[-1][1]
    return int(stem) if stem.isdigit() else None


def _looks_like_checkpoint(p: Path) -> bool:
    """A weight file, or a folder holding weight files or an index (checked without opening)."""
    try:
        if p.is_file():
            return p.name.lower().endswith(WEIGHT_SUFFIXES)
        if p.is_dir():
            return any(c.name.lower().endswith((*WEIGHT_SUFFIXES, ".index.json"))
                       for c in p.iterdir())
    except OSError:
        return False
    return False


def _children(folder: Path, order: str) -> list[Path]:
    """The checkpoints inside a run folder (with order `step`: those whose name has a step)."""
    try:
        entries = sorted(folder.iterdir(), key=lambda c: c.name)
    except OSError as exc:
        raise CheckpointError(folder, f"cannot list the folder: {exc.strerror or exc}") from exc
    found = [c for c in entries if _looks_like_checkpoint(c)]
    if order == "step":
        found = [c for c in found if parse_step(c.name) is not None]
    return found


def _is_run_folder(p: Path, order: str) -> bool:
    """A folder of checkpoints rather than a checkpoint: it has step-named checkpoints inside
    (or, for the other orders, checkpoint sub-folders and no weights of its own)."""
    if not p.is_dir():
        return False
    kids = _children(p, order)
    if order == "step":
        return bool(kids)
    own = any(c.is_file() and c.name.lower().endswith(WEIGHT_SUFFIXES) for c in p.iterdir())
    return bool(kids) and not own


def discover(paths: list[str | os.PathLike[str]], order: str = "step") -> list[Step]:
    """The run's checkpoints in order, each with its step; at least two."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r} (use {', '.join(ORDERS)})")
    given = [Path(p) for p in paths]
    for p in given:
        if not p.exists():
            raise CheckpointError(p, "no such file or folder")
    if len(given) == 1 and _is_run_folder(given[0], order):
        items = _children(given[0], order)
    else:
        items = given
    if len(items) < 2:
        where = given[0] if len(given) == 1 else None
        raise CheckpointError(where, "a run needs at least two checkpoints (give several, or "
                              "a folder of checkpoint-N / step_N / epoch-N entries)")
    numbers = [parse_step(p.name) for p in items]
    if order == "step":
        for p, n in zip(items, numbers):
            if n is None:
                raise CheckpointError(p, "no step number in the name (like checkpoint-1000, "
                                      "step_2000, epoch-3); use --order name|mtime|given")
        pairs = sorted(zip(numbers, items), key=lambda t: (t[0], t[1].name))
    else:
        if order == "name":
            items = sorted(items, key=lambda p: (p.name, str(p)))
        elif order == "mtime":
            items = sorted(items, key=lambda p: (p.stat().st_mtime_ns, p.name))
        numbers = [parse_step(p.name) for p in items]
        grows = all(n is not None for n in numbers) and all(
            b > a for a, b in itertools.pairwise(numbers))  # type: ignore[operator]
        pairs = list(zip(numbers if grows else range(len(items)), items))
    seen: dict[int, Path] = {}
    for n, p in pairs:
        if n in seen:
            raise CheckpointError(p, f"step {n} twice (also {seen[n]}); use --order "
                                  "name|mtime|given")
        seen[n] = p
    return [Step(int(n), p.resolve()) for n, p in pairs]
