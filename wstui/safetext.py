"""Text from files made safe for a terminal (DESIGN §10): the one escaping function.

It sits at the bottom of the house (no rich, no textual) because every layer that writes a
name from a file needs it, the checkpoint layer's download progress line included; the render
layer re-exports it beside `plain`.
"""

from __future__ import annotations

__all__ = ["visible"]


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
