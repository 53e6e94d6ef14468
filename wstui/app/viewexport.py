"""`e`: the current view as `wstui.view/1` JSON (DESIGN §8), written beside the others."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from wstui import jsonio
from wstui._version import __version__
from wstui.app.plotdata import PlotSpec

SCHEMA = "wstui.view/1"


def view_document(
    view: str, *, tensor: str | None = None, selection: dict[str, Any] | None = None,
    metrics: Any = None, plots: list[PlotSpec] | None = None, **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": SCHEMA, "wstui_version": __version__, "view": view}
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
