"""`wstui.view/1`: one view of the app as JSON (DESIGN §8), what `e` writes.

A document only: it takes what the view shows (metrics, plots that know `to_dict()`) and
imports neither textual nor rich, so any face (or a test) can build and read one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from wstui import jsonio
from wstui._version import __version__

SCHEMA = "wstui.view/1"


class Plot(Protocol):
    """What a plot gives a document: its data in real units (`wstui.render.plots.PlotSpec`)."""

    def to_dict(self) -> dict[str, Any]: ...


def view_document(
    view: str, *, tensor: str | None = None, selection: dict[str, Any] | None = None,
    metrics: Any = None, plots: list[Plot] | None = None, **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": SCHEMA, "wstui_version": __version__, "view": str(view)}
    if tensor is not None:
        doc["tensor"] = tensor
    if selection is not None:
        doc["selection"] = selection
    doc["metrics"] = metrics if metrics is not None else {}
    doc["plots"] = [p.to_dict() for p in plots or []]
    doc.update(extra)
    return doc


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")[:80] or "model"


def unique_path(directory: str | Path, stem: str) -> Path:
    """`<dir>/<stem>.json`, or `<stem>-2.json`, … when that exists already."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.json"
    n = 2
    while path.exists():
        path = directory / f"{stem}-{n}.json"
        n += 1
    return path


def write_view(doc: dict[str, Any], directory: str | Path) -> Path:
    target = doc.get("tensor") or (doc.get("selection") or {}).get("key", "model")
    return jsonio.dump(doc, unique_path(directory, f"wstui-view-{doc['view']}-{slug(target)}"))
