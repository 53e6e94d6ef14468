"""The import rules of the command line's layers (docs/architecture.md), read from the source:
every import counts, the ones inside functions too, since a lazy import is still a dependency.

- render (`wstui/render`, `wstui/htmlreport`, `wstui/figures`) never imports textual nor a
  face (`wstui.cli`, `wstui.commands`, `wstui.app`, `wstui.api`);
- documents import no rich, textual, render nor face;
- no command imports another command: what they share is `wstui.commands._run` (the run
  tail) and `wstui.commands._args` (option types), which import none of them; `wstui demo`
  and `wstui track --app` open the app through `wstui.commands.app`, the launcher of
  `wstui PATH`;
- `wstui.cli` imports the command modules only by name at dispatch (`importlib`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WSTUI = ROOT / "wstui"
FACES = ("wstui.cli", "wstui.commands", "wstui.app", "wstui.api")


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (`from a import b` counts as `a` and `a.b`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (WSTUI / f).rglob("*.py"))


@pytest.mark.parametrize("path", _files("render", "htmlreport", "figures"),
                         ids=lambda p: str(p.relative_to(WSTUI)))
def test_render_imports_no_textual_and_no_face(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if _under(m, ("textual", *FACES)))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", _files("documents"), ids=lambda p: str(p.relative_to(WSTUI)))
def test_documents_import_no_rich_render_or_face(path: Path) -> None:
    bad = sorted(m for m in _imports(path)
                 if _under(m, ("rich", "textual", "wstui.render", "wstui.htmlreport",
                               "wstui.figures", *FACES)))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def _commands_imported(path: Path) -> set[str]:
    """The command modules `path` imports (`scan`, `_run`, …)."""
    return {m.split(".")[2] for m in _imports(path)
            if _under(m, ("wstui.commands",)) and m.count(".") >= 2}


@pytest.mark.parametrize("path", _files("commands"), ids=lambda p: p.name)
def test_no_command_imports_another(path: Path) -> None:
    shared = {"_run", "_args"}
    allowed = {path.stem, *shared} | ({"app"} if path.stem in ("demo", "track") else set())
    if path.stem in shared:
        allowed = shared
    bad = sorted(_commands_imported(path) - allowed)
    assert not bad, f"{path.relative_to(ROOT)} imports wstui.commands.{bad}"


def test_cli_imports_only_the_shared_command_module() -> None:
    assert _commands_imported(WSTUI / "cli.py") <= {"_run", "_args"}


def test_every_subcommand_adds_its_own_options() -> None:
    """`wstui NAME --help` is built from `wstui.commands.NAME.add_arguments`."""
    import importlib

    from wstui.cli import SUBCOMMANDS, build_sub_parser

    for name in (*SUBCOMMANDS, "app"):
        module = importlib.import_module(f"wstui.commands.{name}")
        assert callable(module.add_arguments) and callable(module.run), name
    for name in SUBCOMMANDS:
        assert build_sub_parser(name).get_default("command") == name
