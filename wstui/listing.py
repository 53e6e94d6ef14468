"""Transitional, for the merge of issue 11 only: `wstui/app/app.py` imports `checkpoint_notes`
from here, and the app is another branch's. It lives in `wstui.render.ls` now (the ls table in
`wstui.render.ls`, the `wstui.ls/1` document in `wstui.documents.ls`). Delete this file once
the app imports `wstui.render.ls.checkpoint_notes`."""

from wstui.render.ls import checkpoint_notes

__all__ = ["checkpoint_notes"]
