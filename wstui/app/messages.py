"""Messages widgets post to the app (the app owns every state change)."""

from __future__ import annotations

from textual.message import Message


class JumpToTensor(Message):
    """Select a tensor in the tree and show its Overview (enter on a table or findings row)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class SortChanged(Message):
    """The table's sort column or order changed: the app rebuilds the table."""
