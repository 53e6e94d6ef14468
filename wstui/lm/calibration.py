"""The calibration text: the one shipped in the package or the user's `--text FILE`, as token
ids, with what the document records about it (source, sha256, token count)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wstui.checkpoint.base import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_SOURCE = "wstui:data/calibration.txt"
DEFAULT_TOKENS = 512


@dataclass(frozen=True)
class Calibration:
    source: str
    sha256: str
    ids: torch.Tensor  # (1, tokens), int64

    @property
    def tokens(self) -> int:
        return int(self.ids.shape[1])

    def record(self) -> dict[str, Any]:
        """The document's `text` block."""
        return {"source": self.source, "sha256": self.sha256, "tokens": self.tokens}


def read_text(path: str | Path | None) -> tuple[str, str]:
    """(source, text): the shipped default when `path` is None."""
    if path is None:
        text = resources.files("wstui").joinpath("data/calibration.txt").read_text("utf-8")
        return DEFAULT_SOURCE, text
    return str(path), read_user_text(path, "--text", "a text file")


def read_user_text(path: str | Path, flag: str, expected: str) -> str:
    """A file the user named with `flag`, as UTF-8 text; any problem is one line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except IsADirectoryError:
        raise CheckpointError(p, f"{flag}: is a directory, expected {expected}") from None
    except OSError as e:
        raise CheckpointError(p, f"{flag}: cannot read: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(p, f"{flag}: not UTF-8 text (byte {e.start})") from None


def calibration_ids(tokenizer: Any, path: str | Path | None = None,
                    tokens: int = DEFAULT_TOKENS) -> Calibration:
    """The first `tokens` token ids of the text; a text shorter than that is an error (a
    perplexity on fewer tokens than asked would not be the number the user asked for)."""
    import torch

    if tokens < 2:
        raise CheckpointError(None, f"--tokens must be at least 2, got {tokens}")
    source, text = read_text(path)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if len(ids) < tokens:
        where = source if path is not None else "the default calibration text"
        raise CheckpointError(None, f"{where}: {len(ids)} tokens, shorter than --tokens {tokens}")
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Calibration(source=source, sha256=sha,
                       ids=torch.tensor([ids[:tokens]], dtype=torch.long))
