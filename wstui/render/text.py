"""Text from files, made safe for a terminal (DESIGN §10).

Tensor names, dtypes, metadata values and paths come from files a user did not write. A name
holding `ESC ] 52 ; …` would write the clipboard, a newline would forge a table row, `[/x]`
would be parsed as Rich markup and crash the table it sits in. `visible` escapes every
character that is not printable, as Python's `repr` would (`\\x1b`, `\\n`, `\\u202e`), and
`plain` wraps the result in a `rich.text.Text`, which Rich and Textual never parse as markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.style import StyleType
from rich.text import Text

if TYPE_CHECKING:  # pragma: no cover
    from rich.highlighter import Highlighter

from wstui.safetext import visible

__all__ = ["plain", "visible"]


def plain(value: object, style: StyleType = "", *, highlight: bool = False) -> Text:
    """`visible(value)` as a `Text`: shown as written, never parsed as markup or emoji codes.

    `highlight=True` colours numbers and paths as Rich does for a plain `str` cell, so that a
    table keeps its look when its cells become `Text`.
    """
    text = Text(visible(value), style=style)
    if highlight:
        global _highlighter
        if _highlighter is None:
            from rich.highlighter import ReprHighlighter

            _highlighter = ReprHighlighter()
        _highlighter.highlight(text)
    return text


_highlighter: Highlighter | None = None
