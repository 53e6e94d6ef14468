"""Fetch a Hugging Face Hub repo into the standard HF cache: only the files wstui reads.

Opening a checkpoint stays offline (`resolve` never downloads); the CLI comes here only for an
`org/name[@revision]` that names no local path, and `huggingface_hub` is imported only when the
cache lacks what is asked for, so `wstui ls` of a cached repo makes no request and imports
nothing of it. Files land in huggingface_hub's own layout (blobs/, snapshots/<commit>/,
refs/<revision>), so transformers and wstui share one copy.

What is fetched: `config.json`, the tokenizer files (for sensitivity), and one kind of weights:
the safetensors shards and their index; else one GGUF (or one split-GGUF set; `file` picks
one when a repo holds several quantizations); else PyTorch pickles, only with `allow_bin`
(they are still loaded with weights_only=True). Never anything in subfolders but a GGUF.

Interruptions: Ctrl-C keeps every file that finished. huggingface_hub resumes a dropped
connection within one run (a Range request), but it writes each file to a process-unique temp
file that it deletes on exit, so the file that was in flight starts over on the next run.

Progress goes to stderr: a live line (bytes, rate, ETA) on a terminal; when stderr is not a
terminal, one line before and one after, so that logs stay readable.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from wstui.checkpoint.base import CheckpointError
from wstui.checkpoint.formats import BY_NAME, EXTENSIONS, NOT_WEIGHTS
from wstui.checkpoint.resolve import (
    hf_cache_dir,
    locate,
    resolve_repo_id,
    split_revision,
)

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
)
#: fetched beside the weights whenever the repo has them
EXTRA_FILES = ("config.json", *TOKENIZER_FILES)
_SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<n>\d{5})\.gguf$")
_LOGIN = "set HF_TOKEN or run `hf auth login`"
_OFFLINE_VARS = "HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set"


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, read here so that
    huggingface_hub is not imported to say no."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} files)" if len(names) > limit else "")


def _split_set(name: str, names: list[str]) -> list[str]:
    """All parts of the split GGUF that `name` belongs to (just `name` when it is not split)."""
    m = _SPLIT_GGUF.match(name)
    if m is None:
        return [name]
    return sorted(
        n for n in names
        if (o := _SPLIT_GGUF.match(n)) and (o["stem"], o["n"]) == (m["stem"], m["n"])
    )


def _expected_parts(name: str) -> list[str]:
    """Every part a split GGUF's name implies (`x-00001-of-00003.gguf` -> three names)."""
    m = _SPLIT_GGUF.match(Path(name).name)
    if m is None:
        return [name]
    folder = name[: len(name) - len(Path(name).name)]
    return [f"{folder}{m['stem']}-{i:05d}-of-{m['n']}.gguf" for i in range(1, int(m["n"]) + 1)]


def _gguf_choices(names: list[str]) -> list[str]:
    """The GGUF files a user can pick: a split set counts once, by its first part."""
    picks = []
    for n in sorted(names):
        m = _SPLIT_GGUF.match(n)
        if m is None or int(m["part"]) == 1:
            picks.append(n)
    return picks


def _is_bin(name: str) -> bool:
    return (Path(name).suffix in BY_NAME["torch"].extensions
            and Path(name).name not in NOT_WEIGHTS)


def choose_files(
    repo: str, names: list[str], *, file: str | None = None, allow_bin: bool = False
) -> tuple[list[str], str | None]:
    """(repo files to fetch, the file to open or None for the snapshot folder).

    Raises CheckpointError with one line when the repo holds nothing wstui may fetch.
    """
    top = [n for n in names if "/" not in n]
    extras = [n for n in EXTRA_FILES if n in top]
    ggufs = [n for n in names if n.endswith(".gguf")]
    if file is not None:
        if file not in names:
            where = (f"its GGUF files: {_listing(_gguf_choices(ggufs))}" if ggufs
                     else f"it holds: {_listing(sorted(names))}")
            raise CheckpointError(repo, f"has no file {file} ({where})")
        if Path(file).suffix not in EXTENSIONS:
            raise CheckpointError(repo, f"--file {file} is not a weight file "
                                        "(.safetensors, .gguf, .bin, .pt, .pth)")
        if _is_bin(file) and not allow_bin:
            raise CheckpointError(repo, f"{file} is a PyTorch pickle: pass --allow-bin to "
                                        "download it (wstui loads it with weights_only=True)")
        parts = _split_set(file, names)
        return extras + parts, parts[0]
    safetensors = [n for n in top if n.endswith(".safetensors")]
    if safetensors:
        # Mistral repos ship the same weights twice: HF-named shards and `consolidated.*`
        hf_named = [n for n in safetensors if not n.startswith("consolidated")]
        index = [n for n in top if n.endswith(".safetensors.index.json")]
        return extras + index + (hf_named or safetensors), None
    if ggufs:
        choices = _gguf_choices(ggufs)
        if len(choices) > 1:
            raise CheckpointError(repo, f"holds {len(choices)} GGUF files, pick one with "
                                        f"--file NAME: {_listing(choices, 12)}")
        parts = _split_set(choices[0], names)
        return extras + parts, parts[0]
    bins = [n for n in top if _is_bin(n)]
    if bins:
        if not allow_bin:
            raise CheckpointError(repo, f"holds only PyTorch pickle weights ({_listing(bins, 3)}): "
                                        "pass --allow-bin to download them "
                                        "(wstui loads them with weights_only=True)")
        index = [n for n in top if n.endswith(".bin.index.json")]
        return extras + index + bins, None
    raise CheckpointError(repo, "holds no weights wstui can read (.safetensors, .gguf, "
                                f".bin): it has {_listing(sorted(names)) or 'no files'}")


def _target(text: str, snapshot: Path, open_file: str | None) -> str:
    """What to open: the repo id (so that the checkpoint keeps it), or one file in the snapshot.

    A split GGUF opens as the folder of its parts, which is how the readers take a split set.
    """
    if open_file is None:
        return text
    path = snapshot / open_file
    return str(path.parent) if _SPLIT_GGUF.match(path.name) else str(path)


def cached_target(text: str, *, file: str | None = None) -> str | None:
    """What to open for `org/name[@rev]` when the cache already holds it; None when it does not.

    Purely local (no request): a snapshot counts only when the weights it would open are all
    there, so an interrupted download is fetched again (huggingface_hub skips finished files).
    """
    repo_id, revision = split_revision(text)
    try:
        snapshot = resolve_repo_id(repo_id, revision)
    except CheckpointError:
        return None
    if file is not None:
        if all((snapshot / p).is_file() for p in _expected_parts(file)):
            return _target(text, snapshot, file)
        return None
    try:
        _, files, _, _ = locate(snapshot)
    except CheckpointError:
        return None
    if not files or not all(f.is_file() for f in files):
        return None
    if not all((f.parent / p).is_file() for f in files for p in _expected_parts(f.name)):
        return None  # a split GGUF with parts still missing
    ggufs = [f.name for f in files if f.suffix == ".gguf"]
    if len(_gguf_choices(ggufs)) > 1:
        raise CheckpointError(text, f"the cached snapshot {snapshot} holds several GGUF files, "
                                    f"pick one with --file NAME: {_listing(_gguf_choices(ggufs))}")
    return text


#: (bytes done, bytes in all, bytes per second, the file being fetched)
ProgressCallback = Callable[[int, int, float, str], None]


class _Progress:
    """Aggregate byte progress of one fetch, drawn on stderr; hands huggingface_hub a bar class."""

    def __init__(self, total: int, stream: TextIO, live: bool,
                 on_progress: ProgressCallback | None = None) -> None:
        self.total, self.stream, self.live = total, stream, live
        self.on_progress = on_progress
        self.done = 0
        self.start = time.monotonic()
        self._drawn = 0.0
        self.current = ""

    def add(self, n: float) -> None:
        self.done += int(n)
        now = time.monotonic()
        if self.live and now - self._drawn >= 0.1:
            self._drawn = now
            self.draw()

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.start, 1e-6)

    def draw(self) -> None:
        if self.on_progress is not None:  # a face draws it (the app's fetch screen)
            self.on_progress(self.done, self.total, self.rate(), self.current)
            return
        from wstui.safetext import visible  # file names come from the Hub's listing

        rate = self.rate()
        left = max(self.total - self.done, 0)
        eta = f"ETA {left / rate:.0f} s" if rate > 0 and self.total else "ETA ?"
        line = (f"wstui: {_human(self.done)} / {_human(self.total)}  {_human(rate)}/s  {eta}  "
                f"{visible(self.current)}")
        width = max(shutil.get_terminal_size().columns - 1, 40)
        self.stream.write("\r" + line[:width].ljust(width))
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.draw()
            if self.on_progress is None:
                self.stream.write("\n")
        elapsed = time.monotonic() - self.start
        self.stream.write(f"wstui: fetched {_human(self.done)} in {elapsed:.1f} s "
                          f"({_human(self.rate())}/s)\n")
        self.stream.flush()

    def bar_class(self) -> type:
        """A tqdm stand-in: huggingface_hub builds one per file and calls update(n) per chunk."""
        progress = self

        class Bar:
            def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
                progress.add(initial)

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def update(self, n: float | None = 1) -> None:
                progress.add(n or 0)

            def close(self) -> None:
                pass

            def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
                pass

        return Bar


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


@contextlib.contextmanager
def _hub_errors(text: str, revision: str, endpoint: str) -> Iterator[None]:
    """Turn huggingface_hub's and the HTTP client's exceptions into one-line CheckpointErrors."""
    from huggingface_hub import errors

    def cls(name: str) -> type[BaseException] | tuple[()]:
        """An error class by name; () where this huggingface_hub version lacks it."""
        return getattr(errors, name, ())

    try:
        yield
    except cls("GatedRepoError") as exc:
        raise CheckpointError(text, f"is a gated repo: accept its terms on the Hub, then {_LOGIN}"
                              ) from exc
    except cls("RevisionNotFoundError") as exc:
        raise CheckpointError(text, f"the Hub has no revision {revision} of this repo") from exc
    except cls("RemoteEntryNotFoundError") as exc:
        raise CheckpointError(text, "a file the Hub listed is gone (HTTP 404 on download); "
                                    "try again") from exc
    except cls("OfflineModeIsEnabled") as exc:
        raise CheckpointError(text, f"not in the local Hugging Face cache and the machine is "
                                    f"offline ({_OFFLINE_VARS})") from exc
    except errors.HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise CheckpointError(text, f"the Hub refused access (HTTP {status}): a private or "
                                        f"gated repo, or no such repo; {_LOGIN}") from exc
        if status == 404 or isinstance(exc, errors.RepositoryNotFoundError):
            raise CheckpointError(text, f"no such file or folder here, and no such repo on the "
                                        f"Hub ({endpoint}, HTTP 404)") from exc
        raise CheckpointError(text, f"the Hub answered HTTP {status} ({endpoint}); "
                                    "try again later") from exc
    except cls("LocalEntryNotFoundError") as exc:  # hf_hub_download: the Hub became unreachable
        raise CheckpointError(text, f"not fully in the local Hugging Face cache and the Hub "
                                    f"({endpoint}) is unreachable: the machine looks offline"
                              ) from exc
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in {"httpx", "httpx2", "httpcore", "requests"}:
            raise CheckpointError(text, f"not in the local Hugging Face cache and the Hub "
                                        f"({endpoint}) is unreachable: the machine looks offline "
                                        f"({type(exc).__name__})") from exc
        if isinstance(exc, OSError):  # disk full, cache not writable
            raise CheckpointError(text, f"download failed: {exc}".replace("\n", " ")) from exc
        raise


def _write_ref(repo_id: str, revision: str, commit: str) -> None:
    """refs/<revision> -> commit, as huggingface_hub records it, so that later opens find it."""
    if revision == commit or ".." in revision.split("/"):
        return
    ref = hf_cache_dir() / ("models--" + repo_id.replace("/", "--")) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + f".{os.getpid()}.tmp")
    tmp.write_text(commit)
    tmp.replace(ref)


def download(
    text: str, *, file: str | None = None, allow_bin: bool = False,
    stream: TextIO | None = None, on_progress: ProgressCallback | None = None,
) -> str:
    """Fetch what wstui reads of `org/name[@rev]` into the HF cache; returns what to open.

    Progress goes to `stream` (stderr), live when it is a terminal; `on_progress(done, total,
    bytes_per_s, file)` takes the live part instead, for a face that draws it itself."""
    repo_id, revision = split_revision(text)
    if is_offline():
        raise CheckpointError(text, f"not in the local Hugging Face cache ({hf_cache_dir()}) and "
                                    f"the machine is offline ({_OFFLINE_VARS})")
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError as exc:  # pragma: no cover - a dependency of wstui
        raise CheckpointError(text, "not in the local Hugging Face cache, and huggingface_hub "
                                    "is not installed to fetch it") from exc
    rev = revision or "main"
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    stream = stream or sys.stderr
    cache = hf_cache_dir()
    with _hub_errors(text, rev, endpoint):
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=rev, files_metadata=True)
    commit = info.sha or rev
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    files, open_file = choose_files(text, list(sizes), file=file, allow_bin=allow_bin)
    snapshot = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
    todo = [f for f in files if not (snapshot / f).is_file()]
    _write_ref(repo_id, rev, commit)
    if not todo:
        stream.write(f"wstui: {repo_id}@{commit[:12]}: all {len(files)} files already cached\n")
        return _target(text, snapshot, open_file)
    total = sum(sizes[f] for f in todo)
    live = stream.isatty() or on_progress is not None
    stream.write(f"wstui: fetching {repo_id}@{commit[:12]}: {len(todo)} of {len(files)} files, "
                 f"{_human(total)} into {cache}"
                 + ("" if live else " (no live progress: stderr is not a terminal)") + "\n")
    stream.flush()
    progress = _Progress(total, stream, live, on_progress)
    kwargs: dict[str, Any] = {}
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = progress.bar_class()
    try:
        with _hub_errors(text, rev, endpoint):
            for name in todo:
                progress.current = name
                hf_hub_download(repo_id, name, revision=commit, cache_dir=cache,
                                endpoint=endpoint, **kwargs)
    except BaseException:  # Ctrl-C or an error: end the live line before the message
        if live and on_progress is None:
            stream.write("\n")
        raise
    progress.finish()
    return _target(text, snapshot, open_file)


def ensure_local(text: str, *, file: str | None = None, allow_bin: bool = False) -> str:
    """What to open for `org/name[@rev]`: from the cache when it is there, else fetched first."""
    target = cached_target(text, file=file)
    return target if target is not None else download(text, file=file, allow_bin=allow_bin)
