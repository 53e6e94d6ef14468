"""Imports go downward only (docs/architecture.md), and no import circle is left.

Read from the source with `ast`, not by importing, so that a lazy import inside a function
counts as much as one at the top of a module: a face that imports another face in a
function is still coupled to it. Imports under `if TYPE_CHECKING:` are type hints only and
are skipped (the app's palette names the app class that way, as Posting does).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wstui", "analyzers")

#: layer of each module prefix, lowest first; a module may import its own layer and below
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("analyzers", ("analyzers",)),
    ("base", ("wstui._version", "wstui.config", "wstui.jsonio", "wstui.outfile",
              "wstui.safetext")),
    ("checkpoint", ("wstui.checkpoint",)),
    ("lm", ("wstui.lm", "wstui.demo", "wstui.demo_run")),
    # documents never import the engine: they build dicts from what it hands them, so the
    # engine's reports can offer `to_dict`/`to_json` without a circle
    ("documents", ("wstui.documents",)),
    ("engine", ("wstui.engine",)),
    ("render", ("wstui.render", "wstui.figures", "wstui.htmlreport")),
    ("face", ("wstui.app", "wstui.commands", "wstui.api")),
    # the entry point and the commands that launch the TUI (`wstui PATH`, `wstui demo`,
    # `wstui track --app`): the only modules that may import both faces
    ("entry", ("wstui.cli", "wstui.__main__", "wstui.commands.app", "wstui.commands.demo",
               "wstui.commands.track")),
]
FACES = ("wstui.app", "wstui.commands", "wstui.api")
ENTRY = ("wstui.cli", "wstui.__main__", "wstui.commands.app", "wstui.commands.demo",
         "wstui.commands.track")
#: third-party packages a layer must not import
FORBIDDEN_LIBS = {
    "analyzers": ("textual", "rich"),
    "base": ("textual", "rich", "torch"),
    "checkpoint": ("textual", "rich"),
    "lm": ("textual", "rich"),
    "engine": ("textual", "rich"),
    "documents": ("textual", "rich"),
    "render": ("textual",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def _resolve(name: str) -> str:
    """The module `name` refers to: itself, or the nearest enclosing module we have."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(our modules, top-level third-party names) that `module` imports anywhere."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    ours: set[str] = set()
    libs: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from wstui import jsonio` imports the submodule wstui.jsonio
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                target = _resolve(name)
                if target and target != module:
                    ours.add(target)
            else:
                libs.add(top)
    return ours, libs


def layer_of(module: str) -> tuple[int, str] | None:
    best: tuple[int, str, int] | None = None
    for rank, (layer, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[2]):
                best = (rank, layer, len(p))
    return None if best is None else (best[0], best[1])


def _face(module: str) -> str | None:
    return next((f for f in FACES if module == f or module.startswith(f + ".")), None)


def test_every_module_has_a_layer():
    # the root package only re-exports lazily (`wstui.Scope`); it is no layer of its own
    unplaced = sorted(m for m in MODULES if m != "wstui" and layer_of(m) is None)
    assert unplaced == [], f"modules outside every layer (place them in LAYERS): {unplaced}"


def test_imports_go_downward_only():
    bad = []
    for module in sorted(MODULES):
        mine = layer_of(module)
        if mine is None:
            continue
        ours, libs = imports_of(module)
        for target in sorted(ours):
            theirs = layer_of(target)
            if target == "wstui" or theirs is None:
                continue
            if theirs[0] > mine[0]:
                bad.append(f"{module} ({mine[1]}) imports {target} ({theirs[1]})")
            elif (_face(module) and _face(target) and _face(module) != _face(target)
                  and module not in ENTRY):
                bad.append(f"face {module} imports face {target}")
        for lib in sorted(libs & set(FORBIDDEN_LIBS.get(mine[1], ()))):
            bad.append(f"{module} ({mine[1]}) imports {lib}")
    assert bad == [], "\n".join(bad)


def test_no_import_circle():
    graph = {m: imports_of(m)[0] for m in MODULES}
    # a package's __init__ is imported with each of its submodules: ignore those edges
    for m, targets in graph.items():
        graph[m] = {t for t in targets if not m.startswith(t + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    assert circles == [], f"import circles: {circles}"
