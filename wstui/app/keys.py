"""Every key of the app, read from the `BINDINGS` themselves: the binding table the config
file's `[keys]` may remap (checked before the app starts; `wstui --print-config` lists it), the
rows of the `?` screen (with the config's remaps) and the README's key table.

    python -m wstui.app.keys --readme   # rewrite README.md's table between its markers
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from textual.binding import Binding, BindingType
from textual.keys import format_key

from wstui.app.bindings import APP_BINDINGS, HELP_BINDINGS

README_BEGIN = "<!-- keys:begin (python -m wstui.app.keys --readme) -->"
README_END = "<!-- keys:end -->"
#: key names shown as words (Textual shows enter as ⏎, which not every font has)
WORDS = {"enter": "enter", "tab": "tab", "escape": "esc"}


def _sources() -> list[tuple[list[BindingType], list[BindingType]]]:
    """(bindings with ids, the base widget's bindings that alias their actions), in the order
    the help lists them: moving in the tree first, then the app's keys, then the tables' (most
    join the tree's rows); the help screen's own last."""
    from textual.widgets import DataTable, Tree

    from wstui.app.widgets.table import DiffTable, FindingsTable, TensorTable
    from wstui.app.widgets.tree import LayerTree

    return [(LayerTree.BINDINGS, Tree.BINDINGS), (APP_BINDINGS, []),
            (TensorTable.BINDINGS, DataTable.BINDINGS),
            (FindingsTable.BINDINGS, DataTable.BINDINGS),
            (DiffTable.BINDINGS, DataTable.BINDINGS), (HELP_BINDINGS, [])]


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    return [b for b in items if isinstance(b, Binding)]


def binding_table() -> dict[str, tuple[str, str]]:
    """id -> (default keys, what it does), for every binding with an id."""
    table: dict[str, tuple[str, str]] = {}
    sources = _sources()
    for own, _ in [sources[1], *sources[:1], *sources[2:]]:  # the app's ids first
        for b in _bindings(own):
            if b.id and b.id not in table:
                table[b.id] = (b.key, b.tooltip or b.description)
    return table


def key_text(key: str) -> str:
    """A key as the help shows it: `?`, `/`, `↓`, `ctrl+p`, `enter`."""
    *mods, name = key.split("+")
    shown = WORDS.get(name) or format_key(name)
    return "+".join([*mods, shown])


def _shown(keys: list[str]) -> list[str]:
    """The keys as shown; a run of three or more digits reads `1 … 8` (`1 … 9, 0` when the
    tenth tab's 0 follows the 9, as on a keyboard's row)."""
    keys = [key_text(k) for k in keys]
    digits = [k for k in keys if k.isdigit() and len(k) == 1]
    zero = digits[-1:] == ["0"] and digits[-2:-1] == ["9"]
    run = digits[:-1] if zero else digits
    if len(run) >= 3 and run == [str(d) for d in range(int(run[0]), int(run[0]) + len(run))]:
        at = keys.index(run[0])
        keys = [*keys[:at], f"{run[0]} … {run[-1]}" + (", 0" if zero else ""),
                *[k for k in keys[at:] if k not in digits]]
    return keys


@dataclass
class KeyRow:
    """One line of the help: the keys (as bound now) and what they do."""

    keys: list[str] = field(default_factory=list)
    does: str = ""
    ids: list[str] = field(default_factory=list)

    @property
    def shown(self) -> list[str]:
        return _shown(self.keys)

    @property
    def key_text(self) -> str:
        """`j, ↓, k, ↑` (a slash would be read as the `/` key)"""
        return ", ".join(self.shown)


def key_rows(keymap: Mapping[str, str] | None = None, *,
             skip: tuple[str, ...] = ("help.",)) -> list[KeyRow]:
    """The help's rows from the bindings (`keymap`: id -> keys, the config's remaps): one per
    `Binding.Group`, or per binding outside a group; keys the base widget binds to the same
    action (Tree's `down` beside `j`) join their row, unless the binding was remapped."""
    keymap = keymap or {}
    rows: dict[object, KeyRow] = {}
    for own, base in _sources():
        for b in _bindings(own):
            if not b.id or b.id.startswith(skip):
                continue
            keys = [k.strip() for k in keymap.get(b.id, b.key).split(",") if k.strip()]
            if b.id not in keymap:
                keys += [a.key for a in _bindings(base) if a.action == b.action]
            row = rows.setdefault(b.group or b.id, KeyRow(
                does=b.group.description if b.group else (b.tooltip or b.description)))
            for k in keys:
                if k not in row.keys:
                    row.keys.append(k)
            row.ids.append(b.id)
    return list(rows.values())


def readme_table() -> str:
    """The README's key table (default keys), as markdown."""
    lines = ["| key | does |", "|---|---|"]
    for row in key_rows():
        keys = " / ".join(f"`{k}`" for k in row.shown)
        lines.append(f"| {keys} | {row.does} |")
    return "\n".join(lines)


def readme_section(text: str) -> str | None:
    """The table between the README's markers, or None without them."""
    m = re.search(re.escape(README_BEGIN) + r"\n(.*?)\n" + re.escape(README_END), text, re.S)
    return m.group(1) if m else None


def update_readme(path: Path) -> bool:
    """Rewrite the key table in `path`; True if it changed."""
    text = path.read_text(encoding="utf-8")
    if readme_section(text) is None:
        raise ValueError(f"{path}: no {README_BEGIN} … {README_END} markers")
    new = re.sub(re.escape(README_BEGIN) + r"\n.*?\n" + re.escape(README_END),
                 lambda _: f"{README_BEGIN}\n{readme_table()}\n{README_END}", text, flags=re.S)
    if new != text:
        from wstui import outfile

        outfile.write_text(path, new)
    return new != text


def main(argv: list[str]) -> int:
    if argv[:1] == ["--readme"]:
        path = Path(argv[1]) if len(argv) > 1 else Path(__file__).parents[2] / "README.md"
        print(f"{path}: {'updated' if update_readme(path) else 'already up to date'}")
        return 0
    print(readme_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
