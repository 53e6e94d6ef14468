"""The render layer: how values from files and from the analyses look on any face.

`text` (names from files shown as text), `numbers` (every number formatter), `columns` (the
metric columns), and one module of rich renderables per document: `scan`, `diff`, `quant`,
`sensitivity`, `ls`. Imports rich (never textual), so the headless commands and the app share it.
"""

from wstui.render.text import plain, visible

__all__ = ["plain", "visible"]
