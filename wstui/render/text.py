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

__all__ = ["plain", "visible"]


def _escape(ch: str) -> str:
    """One character as Python's repr escapes it (the short forms first, as repr does)."""
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if ch == "\\":
        return "\\\\"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(value: object) -> str:
    """`value` as a string whose every character shows as itself or as an escape.

    Escaped: C0 controls, DEL, C1 controls, lone surrogates (undecodable bytes of a path),
    format characters (zero-width and bidi overrides such as U+202E, which reorder what
    follows them), line and paragraph separators: everything `str.isprintable` rejects
    except the plain space. Letters of any script stay as they are. A string with nothing to
    escape is returned unchanged (a backslash in it included); in one that has, backslashes
    are doubled too, so that an escape shown is never a literal backslash sequence in disguise.
    """
    s = value if isinstance(value, str) else str(value)
    if s.isprintable():  # the common case, at C speed
        return s
    return "".join(ch if (ch.isprintable() and ch != "\\") or ch == " " else _escape(ch)
                   for ch in s)


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
