"""The last sensitivity study of a checkpoint, kept so that the app shows it again at once.

One JSON file per (checkpoint files, study settings) in `<cache dir>/sensitivity/`: the
`wstui.sensitivity/1` document and, beside it, the app's per-matrix heat maps and top
weights (`run_sensitivity_maps`). Why a file and not the SQLite result cache: the entry is
one value of a few MB written once per study and read once per app start; a file written
atomically (temp file, fsync, rename) gives the same "a killed write leaves the old entry or
none" without a schema. The key is the files' identity as the result cache sees it (resolved
path, size, mtime_ns), the weights' and the config's and tokenizer's, the settings and the
wstui version; an entry whose key differs is never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wstui import jsonio
from wstui._version import __version__
from wstui.checkpoint.base import Checkpoint
from wstui.engine.cache import FileKey, cache_dir

SCHEMA = "wstui.sensitivity-cache/1"
#: besides the weights, the files a study reads (the model's config and its tokenizer)
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model",
              "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def study_files(ckpt: Checkpoint) -> list[Path]:
    """The weight files, then the config and tokenizer files beside them (folders only)."""
    files = [Path(f) for f in ckpt.files]
    path = Path(ckpt.path)
    folder = path if path.is_dir() else path.parent
    if ckpt.format != "gguf":
        files += [folder / f for f in SIDE_FILES if (folder / f).is_file()]
    return files


def study_key(ckpt: Checkpoint, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What an entry must match: the files (path, size, mtime_ns), settings, version."""
    files = []
    for f in study_files(ckpt):
        k = FileKey.of(f)
        files.append([k.path, k.size, k.mtime_ns])
    return {"files": files, "settings": jsonio.strict(dict(settings)),
            "wstui_version": __version__}


def entry_path(key: Mapping[str, Any], directory: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return (directory or cache_dir()) / "sensitivity" / f"{digest}.json"


def load(ckpt: Checkpoint, settings: Mapping[str, Any], directory: Path | None = None
         ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(document, maps) of the last study with these files and settings, or None (no entry,
    a changed file, an unreadable or foreign entry: a cache miss, never an error)."""
    try:
        key = study_key(ckpt, settings)
        text = entry_path(key, directory).read_text(encoding="utf-8")
        entry = json.loads(text)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("schema") != SCHEMA or entry.get("key") != key:
        return None
    doc, maps = entry.get("document"), entry.get("maps")
    if not isinstance(doc, dict) or not isinstance(maps, dict):
        return None
    return doc, maps


def save(ckpt: Checkpoint, settings: Mapping[str, Any], doc: Mapping[str, Any],
         maps: Mapping[str, Any], directory: Path | None = None) -> Path | None:
    """Write the entry atomically; None when it cannot be written (a read-only cache dir:
    the study's results are still shown, only not kept)."""
    from wstui import outfile

    try:
        key = study_key(ckpt, settings)
        path = entry_path(key, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = jsonio.dumps({"schema": SCHEMA, "key": key, "document": doc, "maps": maps})
        return outfile.write_text(path, text)
    except (OSError, outfile.OutputError, ValueError):
        return None
