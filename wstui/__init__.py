"""wstui: a terminal explorer for the weights of large language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wstui._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from wstui.api import Scope

__all__ = ["Scope", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import wstui` (and the CLI's start-up) stays free of torch.
    if name == "Scope":
        from wstui.api import Scope

        return Scope
    raise AttributeError(f"module 'wstui' has no attribute {name!r}")
