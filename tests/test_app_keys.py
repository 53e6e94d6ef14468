"""One copy of every key: the help screen and the README's key table are generated from the
bindings, and the app's layers import downwards only (issue 11)."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from wstui.app.bindings import APP_BINDINGS
from wstui.app.keys import binding_table, key_rows, readme_section, readme_table
from wstui.app.screens.help import help_renderable
from wstui.app.tabs import Tab
from wstui.app.views import VIEWS

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "wstui" / "app"


def test_readme_key_table_is_what_the_bindings_give() -> None:
    """Fix with `python -m wstui.app.keys --readme` after changing a binding."""
    section = readme_section((ROOT / "README.md").read_text(encoding="utf-8"))
    assert section is not None, "README.md lost its keys:begin / keys:end markers"
    assert section == readme_table()


def test_every_documented_binding_is_a_row_and_every_id_is_unique() -> None:
    rows = key_rows()
    listed = {i for row in rows for i in row.ids}
    assert set(binding_table()) - {"help.close"} == listed
    ids = [b.id for b in APP_BINDINGS]
    assert len(ids) == len(set(ids))
    tabs = next(r for r in rows if "app.tab.overview" in r.ids)
    assert tabs.key_text == "1 … 9, 0"  # ten tabs: the tenth is 0, as on the keyboard
    assert all(t.value in tabs.does for t in Tab)


def test_help_follows_the_config_remaps() -> None:
    def text(keymap):
        console = Console(width=120, record=True, file=io.StringIO())
        console.print(help_renderable(keymap))
        return console.export_text()

    plain = text(None)
    assert "1 … 9, 0" in plain and "ctrl+p" in plain and "j, ↓, k, ↑" in plain
    remapped = text({"app.tab.table": "t", "tree.down": "ctrl+n"})
    assert "1, 2, 3, 4, t, 6, 7, 8, 9, 0" in remapped
    assert "ctrl+n, k, ↑" in remapped  # a remapped key replaces the binding's keys


def test_the_registry_is_in_tab_order_with_one_binding_per_tab() -> None:
    assert [v.tab for v in VIEWS] == list(Tab)
    digits = {b.key: b.action for b in APP_BINDINGS if b.id and b.id.startswith("app.tab.")}
    assert digits == {str((i + 1) % 10): f"show_tab('{t}')" for i, t in enumerate(Tab)}


def _imports(path: Path) -> set[str]:
    """Modules a file imports at run time (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_the_app_imports_no_other_face_and_has_no_import_circle() -> None:
    graph: dict[str, set[str]] = {}
    for path in APP.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        imports = _imports(path)
        assert not {m for m in imports if m.startswith("wstui.commands")}, name
        graph[name] = {m for m in imports if m.startswith("wstui.app")}
    # views, widgets, keys and the bridge never import the shell (nor does the palette at
    # run time): the shell is the only thing that sees them all
    for name, deps in graph.items():
        if name != "wstui.app.app":
            assert "wstui.app.app" not in deps, name

    def reach(start: str, seen: set[str]) -> set[str]:
        for dep in graph.get(start, ()):
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    for name in graph:
        assert name not in reach(name, set()), f"import circle through {name}"


def test_plot_data_and_the_view_document_import_no_textual() -> None:
    code = ("import sys, wstui.render.plots, wstui.documents.view\n"
            "assert 'textual' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert not {m for m in _imports(ROOT / "wstui" / "documents" / "view.py")
                if m.split(".")[0] in ("textual", "rich")}
