"""A checkpoint's tensors as `wstui ls` shows them: a rich table in layer-tree order, the same
as plain aligned lines for big checkpoints, the summary line, and the reader's notes. Reads
no weights and imports no torch, so it answers in the time it takes to parse the headers.
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from wstui.checkpoint.base import Checkpoint, TensorRef
from wstui.documents.ls import rows
from wstui.render.numbers import human_bytes, human_count
from wstui.render.text import plain, visible

#: above this many tensors `wstui ls` prints plain aligned lines instead of a rich Table:
#: laying out a Table costs ~0.5 ms a row (a minute for a 100k-tensor MoE checkpoint)
PLAIN_ROWS = 2000

HEADERS = ("block", "kind", "name", "shape", "dtype", "size")
RIGHT = frozenset({"shape", "size"})


def checkpoint_notes(ckpt: Checkpoint) -> list[str]:
    """What the reader noted while opening (an index naming tensors no shard holds, a
    config.json that is not valid JSON), as visible one-liners for stderr or the app."""
    notes = getattr(ckpt, "notes", None) or (getattr(ckpt, "metadata", None) or {}).get("notes")
    return [visible(n) for n in notes or []]


def summary_line(ckpt: Checkpoint) -> str:
    n_files = len(ckpt.files)
    dtypes = ", ".join(f"{k} {v}" for k, v in sorted(ckpt.dtypes.items(), key=lambda kv: -kv[1]))
    tied = sum(1 for t in ckpt.tensors if t.tied_to is not None)
    parts = [
        ckpt.format,
        f"{n_files} file{'s' if n_files != 1 else ''}",
        f"{len(ckpt.tensors)} tensors",
        f"{human_count(ckpt.n_params)} params",
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
