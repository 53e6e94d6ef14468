"""The render layer: how values from files and from the analyses look on any face.

Imports rich only (never textual), so the headless commands and the app share it.
"""

from wstui.render.text import plain, visible

__all__ = ["plain", "visible"]
