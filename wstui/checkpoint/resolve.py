"""From a user's PATH to an opened `Checkpoint`: files, folders, sharded indexes, cached repo ids.

Picks the weight files, hands them to the reader of their format, parses `config.json` beside
them and lets `naming` annotate the tensors. Opening never downloads: a repo id (`org/name`,
`org/name@revision`) must already be in the local Hugging Face cache; `wstui.checkpoint.hub`
fetches one first when the CLI is asked to open a repo that is not.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from wstui.checkpoint.base import (
    Checkpoint,
    CheckpointError,
    not_regular,
    open_regular,
    parse_json,
    read_small,
    safe_name,
)
from wstui.checkpoint.formats import (
    BY_NAME,
    EXTENSIONS,
    FORMATS,
    NOT_WEIGHTS,
    Format,
    describe_extensions,
)

#: an index or config.json bigger than this is not a real one (a 1T-parameter MoE index is
#: a few MB)
MAX_JSON = 256 << 20

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(@\w[\w./-]*)?$")
_BARE_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*$")  # legacy ids without an org: gpt2


def split_revision(text: str) -> tuple[str, str | None]:
    """`org/name@rev` -> ("org/name", "rev"); no `@` -> (text, None)."""
    repo_id, sep, revision = text.partition("@")
    return (repo_id, revision) if sep and revision else (repo_id, None)


def fetchable_repo_id(text: str) -> bool:
    """True for `org/name[@rev]` that names no file or folder here: a repo the Hub may hold.

    Bare ids (`gpt2`) are opened from the cache only, never fetched: a mistyped local folder
    name must not turn into a download.
    """
    p = Path(text).expanduser()
    try:
        if p.exists() or p.is_symlink() or text.endswith((*EXTENSIONS, ".json")):
            return False
    except OSError:  # a name too long for a path is too long for a repo id too
        return False
    return bool(_REPO_ID.match(text))


def hf_cache_dir() -> Path:
    """The hub cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def _repo_dir(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _read_ref(ref: Path) -> str:
    """A ref file's commit; "" when missing, unreadable or not UTF-8 text."""
    try:
        return ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return ""


def resolve_repo_id(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of a cached repo.

    Without a revision: refs/main's commit, else the newest snapshot (as before revisions were
    parsed). With one: refs/<revision> (a branch or tag huggingface_hub recorded), else a
    snapshot named by that commit hash.
    """
    repo = _repo_dir(repo_id)
    snapshots = repo / "snapshots"
    if revision is not None:
        safe = ".." not in revision.split("/")
        commit = (_read_ref(repo / "refs" / revision) if safe else "") or revision
        if re.fullmatch(r"\w[\w.-]*", commit) and (snapshots / commit).is_dir():
            return snapshots / commit
        raise CheckpointError(
            f"{repo_id}@{revision}",
            f"not a file or folder, and revision {revision} is not in the local Hugging Face "
            f"cache (looked in {repo}); opening never downloads: `wstui pull` does",
        )
    rev = _read_ref(repo / "refs" / "main")
    if re.fullmatch(r"\w[\w.-]*", rev) and (snapshots / rev).is_dir():  # no "../" escape
        return snapshots / rev
    candidates = [p for p in snapshots.iterdir() if p.is_dir()] if snapshots.is_dir() else []
    if not candidates:
        raise CheckpointError(
            repo_id,
            f"not a file or folder, and not in the local Hugging Face cache (looked in {repo}); "
            "opening never downloads: `wstui pull` does",
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _check_file(path: Path) -> None:
    """A readable regular file, or a one-line error saying what it is instead.

    Never opens a FIFO, device or socket (a FIFO's open blocks until a writer comes).
    """
    if path.is_dir():
        raise CheckpointError(path, "is a directory where a weight file is expected")
    if not path.exists():
        what = "broken link" if path.is_symlink() else "does not exist"
        raise CheckpointError(path, what)
    what = not_regular(path.stat().st_mode)
    if what is not None:
        raise CheckpointError(path, f"is {what}, not a regular weight file")
    os.close(open_regular(path))


def _format_of(path: Path) -> str:
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise CheckpointError(
            path,
            f"unsupported file type {path.suffix or '(no extension)'}; "
            f"expected {describe_extensions()}, a folder or an index .json",
        )
    return fmt


def index_weight_map(index: Path) -> dict[str, str]:
    """tensor name -> shard file name of a `*.index.json`."""
    _check_file(index)
    data = parse_json(index, read_small(index, MAX_JSON, "index"), "index")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(index, "index has no weight_map")
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointError(
                index, f"index maps tensor {safe_name(name)!r} to a {type(shard).__name__}, "
                "not a shard file name"
            )
    return weight_map


def _shard_path(index: Path, shard: str) -> Path:
    """The shard file an index names, which must lie in the index's folder (or below it): an
    index that names `/etc/x` or `../x` is refused, not followed."""
    if not shard.strip() or "\x00" in shard:
        raise CheckpointError(index, f"index names a bad shard file name {safe_name(shard)!r}")
    pure = PurePosixPath(shard)
    if pure.is_absolute() or ".." in pure.parts:
        raise CheckpointError(
            index, f"index names shard {safe_name(shard)!r} outside the checkpoint folder; "
            "refused"
        )
    return index.parent / shard


def read_index(index: Path) -> list[Path]:
    """The shard files a `*.index.json` names (in first-mention order), each checked to exist."""
    weight_map = index_weight_map(index)
    shards: list[Path] = []
    for shard in dict.fromkeys(weight_map.values()):
        path = _shard_path(index, shard)
        if path.is_dir():
            raise CheckpointError(path, "is a directory where a shard file is expected")
        if path.is_symlink() and not path.exists():
            raise CheckpointError(path, "broken link (a shard the index names)")
        if not path.exists():
            raise CheckpointError(index, f"index names shard {shard} which does not exist")
        shards.append(path)
    return shards


def _find_index(folder: Path, preferred: str, pattern: str) -> Path | None:
    if (folder / preferred).exists():
        return folder / preferred
    found = sorted(folder.glob(pattern))
    return found[0] if found else None


_SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<n>\d{5})\.gguf$")


def _gguf_sets(files: list[Path]) -> dict[str, list[Path]]:
    """GGUF files grouped into checkpoints: a split set (`x-00001-of-00003.gguf`) is one."""
    sets: dict[str, list[Path]] = {}
    for f in files:
        m = _SPLIT_GGUF.match(f.name)
        sets.setdefault(f"{m['stem']}-*-of-{m['n']}.gguf" if m else f.name, []).append(f)
    return sets


def _weights_in_folder(folder: Path, meta: dict[str, Any]) -> list[Path]:
    """The weight files of a folder, by preference: safetensors index, safetensors, bin index,
    bin/pt, gguf. Weights of another kind beside the ones opened get a note naming them; a
    folder of several GGUF checkpoints is refused with their list (which one is meant?)."""
    chosen = _pick_weights(folder, meta)
    kind = _format_of(chosen[0])
    others = {f.name: _files_of(folder, f) for f in FORMATS}
    if kind == "gguf":
        sets = _gguf_sets(chosen)
        if len(sets) > 1:
            names = sorted(sets)
            shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
            raise CheckpointError(folder, f"holds {len(names)} GGUF checkpoints; open one of "
                                          f"them by its path: {shown}")
    also = [f"{len(fs)} {fmt} file{'s' if len(fs) > 1 else ''} ({', '.join(f.name for f in fs[:3])}"
            f"{', …' if len(fs) > 3 else ''})" for fmt, fs in others.items()
            if fmt != kind and fs]
    if also:
        meta.setdefault("notes", []).append(
            f"{folder}: opened its {kind} weights; it also holds {' and '.join(also)}: "
            "open one of those by its path")
    return chosen


def _files_of(folder: Path, fmt: Format) -> list[Path]:
    """A folder's weight files of one format, sorted (never a training run's other files)."""
    return sorted(p for ext in fmt.extensions for p in folder.glob(f"*{ext}")
                  if p.name not in NOT_WEIGHTS)


def _pick_weights(folder: Path, meta: dict[str, Any]) -> list[Path]:
    """The weight files of a folder, by preference (see `_weights_in_folder`): each format
    of the table in order, its index first, then its files."""
    for fmt in FORMATS:
        if fmt.index is not None:
            index = _find_index(folder, *fmt.index)
            if index is not None:
                meta["index"] = str(index)
                return read_index(index)
        found = _files_of(folder, fmt)
        if found:
            if fmt.fallback_prefix:
                preferred = [p for p in found if not p.name.startswith(fmt.fallback_prefix)]
                return preferred or found
            return found
    names = ", ".join(EXTENSIONS)
    if not any(folder.iterdir()):
        raise CheckpointError(folder, "folder is empty")
    if (folder / "config.json").exists():
        raise CheckpointError(folder, f"folder has config.json but no weight files ({names})")
    raise CheckpointError(folder, f"folder holds no weight files ({names})")


def _read_config(folder: Path, notes: list[str]) -> dict[str, Any] | None:
    """config.json beside the weights; a broken one is noted and ignored, never fatal."""
    path = folder / "config.json"
    if not path.exists():
        return None
    what = not_regular(path.stat().st_mode)
    if what is not None:
        notes.append(f"{path}: ignored, it is {what}")
        return None
    try:
        data = parse_json(path, read_small(path, MAX_JSON, "config.json"), "config.json")
    except OSError as exc:
        notes.append(f"{path}: ignored, cannot read it ({exc.strerror or exc})")
        return None
    except CheckpointError as exc:
        notes.append(f"{path}: ignored, {exc.problem.removeprefix('config.json ')}")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path}: ignored, not a JSON object")
        return None
    archs = data.get("architectures")
    if archs is not None and not (
        isinstance(archs, list) and all(isinstance(a, str) for a in archs)
    ):
        notes.append(f"{path}: architectures ignored, not a list of names")
        del data["architectures"]
    return data


def _index_disagreements(index: Path, refs: list) -> list[str]:
    """Notes where an index and its shards disagree (transformers would refuse to load it)."""
    weight_map = index_weight_map(index)
    where = {r.name: r.file for r in refs}
    missing = [n for n in weight_map if n not in where]
    moved = [n for n, f in weight_map.items() if n in where and where[n] != index.parent / f]
    extra = [n for n in where if n not in weight_map]
    notes = []
    for what, names in (("in no shard", missing), ("in another shard", moved),
                        ("not in the index", extra)):
        if names:
            notes.append(
                f"{index}: {len(names)} tensor(s) {what}, e.g. {safe_name(names[0])}"
            )
    return notes


def _open_reader(fmt: str, files: list[Path]) -> tuple[list, list, dict]:
    import importlib

    try:
        mod = importlib.import_module(f"wstui.checkpoint.{BY_NAME[fmt].module}")
    except ImportError as exc:  # pragma: no cover - every reader ships with wstui
        raise CheckpointError(files[0], f"{fmt} reader unavailable ({exc})") from exc
    return mod.open_files(files)


def locate(path: str | Path) -> tuple[Path, list[Path], Path, dict[str, Any]]:
    """(checkpoint path, weight files, folder holding config.json, extra metadata)."""
    text = str(path)
    p = Path(text).expanduser()
    meta: dict[str, Any] = {}
    if not p.exists() and not p.is_symlink():
        looks_like_id = not text.endswith((*EXTENSIONS, ".json"))
        if looks_like_id and (
            _REPO_ID.match(text) or (_BARE_REPO_ID.match(text) and _repo_dir(text).is_dir())
        ):
            p = resolve_repo_id(*split_revision(text))
            meta["repo_id"] = text
        else:
            raise CheckpointError(p, "does not exist")
    if p.is_dir():
        return p, _weights_in_folder(p, meta), p, meta
    if p.name.endswith(".index.json"):
        meta["index"] = str(p)
        return p, read_index(p), p.parent, meta
    _check_file(p)
    _format_of(p)
    return p, [p], p.parent, meta


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a file, folder, sharded index or cached repo id; reads headers only.

    An OS error on the way (a folder that cannot be listed, a name too long) is one line.
    """
    try:
        return _open_checkpoint(path)
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else str(path)
        what = "permission denied" if isinstance(exc, PermissionError) else (
            exc.strerror or str(exc))
        raise CheckpointError(where, f"{what} (cannot reach the checkpoint)") from exc


def _open_checkpoint(path: str | Path) -> Checkpoint:
    root, files, config_dir, meta = locate(path)
    formats = {_format_of(f) for f in files}
    if len(formats) > 1:
        raise CheckpointError(root, f"mixes weight formats {sorted(formats)}")
    for f in files:
        _check_file(f)
    fmt = formats.pop()
    refs, readers, reader_meta = _open_reader(fmt, files)
    if not refs:
        for r in readers:
            r.close()
        raise CheckpointError(root, "holds no tensors")
    notes: list[str] = []
    if "index" in meta:
        notes.extend(_index_disagreements(Path(meta["index"]), refs))
    config = _read_config(config_dir, notes)
    meta.update(reader_meta)
    if notes:
        meta.setdefault("notes", []).extend(notes)
    ckpt = Checkpoint(
        path=root, format=fmt, files=files, tensors=refs, config=config, metadata=meta,
        readers=readers,
    )
    from wstui.checkpoint.naming import annotate

    try:
        annotate(ckpt)
    except Exception:
        ckpt.close()
        raise
    return ckpt
