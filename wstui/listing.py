"""What `wstui ls` shows: the tensors of a checkpoint in layer-tree order, as a rich table and
as the `wstui.ls/1` dict. Reads no weights and imports no torch, so it answers in the time it
takes to parse the headers.
"""

from __future__ import annotations

from typing import Any, TextIO

from rich import box
from rich.table import Table
from rich.text import Text

from wstui._version import __version__
from wstui.checkpoint.base import Checkpoint, TensorRef
from wstui.checkpoint.naming import TreeNode, build_tree
from wstui.render import plain, visible

SCHEMA = "wstui.ls/1"

#: above this many tensors `wstui ls` prints plain aligned lines instead of a rich Table:
#: laying out a Table costs ~0.5 ms a row (a minute for a 100k-tensor MoE checkpoint)
PLAIN_ROWS = 2000

HEADERS = ("block", "kind", "name", "shape", "dtype", "size")
RIGHT = frozenset({"shape", "size"})


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary units, as file managers and `ls -h` show them)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


def human_params(n: int) -> str:
    """22_713_216 -> '22.7M' (decimal units, as model cards count parameters)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def rows(ckpt: Checkpoint) -> list[tuple[str, TensorRef]]:
    """(top-level tree group label, tensor) in layer-tree order; tied copies come last.

    The tree shows a tied tensor once (the one it is tied to carries a note); a listing has
    to account for every tensor in the file, so the copies follow at the end.
    """
    root = build_tree(ckpt.tensors)
    out: list[tuple[str, TensorRef]] = []
    for top in root.children:
        out.extend((_group_label(top), t) for t in top.iter_tensors())
    out.extend(("tied", t) for t in ckpt.tensors if t.tied_to is not None)
    return out


def _group_label(node: TreeNode) -> str:
    """`3` for block 3, `decoder 3` for T5's decoder block 3, else the group (`embeddings`…)."""
    return node.label.replace("block ", "") if node.group == "block" else node.label


def checkpoint_notes(ckpt: Checkpoint) -> list[str]:
    """What the reader noted while opening (an index naming tensors no shard holds, a
    config.json that is not valid JSON), as visible one-liners for stderr or the app."""
    notes = getattr(ckpt, "notes", None) or (getattr(ckpt, "metadata", None) or {}).get("notes")
    return [visible(n) for n in notes or []]


def print_notes(ckpt: Checkpoint, file: TextIO | None = None) -> None:
    """One `wstui: note: …` line on stderr per checkpoint note: readers collect them, and
    a user should hear that an index names tensors no shard holds before trusting a scan."""
    import sys

    for note in checkpoint_notes(ckpt):
        print(f"wstui: note: {note}", file=file or sys.stderr)


def summary_line(ckpt: Checkpoint) -> str:
    n_files = len(ckpt.files)
    dtypes = ", ".join(f"{k} {v}" for k, v in sorted(ckpt.dtypes.items(), key=lambda kv: -kv[1]))
    tied = sum(1 for t in ckpt.tensors if t.tied_to is not None)
    parts = [
        ckpt.format,
        f"{n_files} file{'s' if n_files != 1 else ''}",
        f"{len(ckpt.tensors)} tensors",
        f"{human_params(ckpt.n_params)} params",
        human_bytes(sum(t.nbytes for t in ckpt.tensors)),
        f"dtypes: {dtypes}" if dtypes else "no tensors",
    ]
    if tied:
        parts.insert(3, f"{tied} tied")
    return " · ".join(parts)


def _notes(listed: list[tuple[str, TensorRef]]) -> dict[str, int]:
    """Each distinct tensor note -> its footnote number, in order of first use."""
    notes: dict[str, int] = {}
    for _, t in listed:
        if t.note:
            notes.setdefault(t.note, len(notes) + 1)
    return notes


def _cells(listed: list[tuple[str, TensorRef]], notes: dict[str, int]) -> list[tuple[str, ...]]:
    """The table's cells as visible plain strings (the group label only on its first row)."""
    out = []
    previous = None
    for label, t in listed:
        name = visible(t.display_name)
        if t.note:
            name += f" [{notes[t.note]}]"
        out.append((visible(label) if label != previous else "", visible(t.kind), name,
                    "x".join(str(s) for s in t.shape) or "scalar", visible(t.dtype),
                    human_bytes(t.nbytes)))
        previous = label
    return out


def table(ckpt: Checkpoint) -> Table:
    """The rich table: block, kind, name, shape, dtype, size.

    Notes (tied weights, GPT-2's Conv1D layout, why a tensor is not analyzable) become
    numbered marks after the name and footnotes in the caption, so that a note shared by 48
    tensors is written once and the name column keeps its width. Every cell is a `Text`:
    names and dtypes from the file are never read as markup.
    """
    listed = rows(ckpt)
    notes = _notes(listed)
    caption = None
    if notes:
        lines = (plain(f"[{i}] {n}") for n, i in notes.items())
        caption = Text("\n", style="table.caption").join(lines)
    tbl = Table(caption=caption, caption_justify="left", header_style="bold",
                show_edge=False, pad_edge=False, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    tbl.add_column("block", no_wrap=True)
    tbl.add_column("kind", no_wrap=True)
    tbl.add_column("name", overflow="fold", ratio=1)
    tbl.add_column("shape", no_wrap=True, justify="right")
    tbl.add_column("dtype", no_wrap=True)
    tbl.add_column("size", no_wrap=True, justify="right")
    for (label, kind, name, shape, dtype, size), (_, t) in zip(_cells(listed, notes), listed):
        mark = name.rfind(" [") if t.note else len(name)
        name_text = Text(name[:mark])
        name_text.append(name[mark:], style="dim")
        tbl.add_row(plain(label, highlight=True), plain(kind, highlight=True), name_text,
                    plain(shape, highlight=True), Text(dtype, style="" if t.analyzable else "dim"),
                    plain(size, highlight=True))
    return tbl


def plain_lines(ckpt: Checkpoint) -> list[str]:
    """The table as plain aligned lines, as `table` lays it out on a wide enough console.

    For big checkpoints: a rich Table measures and renders every cell as segments, which
    costs a minute for 100k tensors; padding strings costs well under a second. Cells are
    `visible`, so a line holds no control character and no name can forge a row.
    """
    from rich.cells import cell_len

    def width(cell: str) -> int:
        return len(cell) if cell.isascii() else cell_len(cell)

    listed = rows(ckpt)
    notes = _notes(listed)
    cells = _cells(listed, notes)
    widths = [max([len(h)] + [width(row[i]) for row in cells]) for i, h in enumerate(HEADERS)]
    right = [h in RIGHT for h in HEADERS]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(
            " " * (w - width(c)) + c if r else c + " " * (w - width(c))
            for c, w, r in zip(row, widths, right)
        )

    total = sum(widths) + 2 * (len(widths) - 1)
    out = [line(HEADERS), "─" * total]
    out.extend(line(row) for row in cells)
    out.extend(visible(f"[{i}] {n}") for n, i in notes.items())
    return out


def tensor_record(t: TensorRef) -> dict[str, Any]:
    return {
        "name": t.name,
        "hf_name": t.hf_name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "kind": t.kind,
        "block": t.block,
        "nbytes": t.nbytes,
        "analyzable": t.analyzable,
        "tied_to": t.tied_to,
        "note": t.note,
    }


def ls_dict(ckpt: Checkpoint) -> dict[str, Any]:
    """The `wstui.ls/1` document (DESIGN §8); tensors in layer-tree order, tied copies last."""
    return {
        "schema": SCHEMA,
        "wstui_version": __version__,
        "checkpoint": ckpt.summary(),
        "tensors": [tensor_record(t) for _, t in rows(ckpt)],
    }
