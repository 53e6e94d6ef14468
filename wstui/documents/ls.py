"""The `wstui.ls/1` document (DESIGN §8): a checkpoint's tensors in layer-tree order, from the
headers alone (no weights read, no torch imported)."""

from __future__ import annotations

from typing import Any

from wstui._version import __version__
from wstui.checkpoint.base import Checkpoint, TensorRef
from wstui.checkpoint.naming import TreeNode, build_tree

SCHEMA = "wstui.ls/1"


def rows(ckpt: Checkpoint) -> list[tuple[str, TensorRef]]:
    """(top-level tree group label, tensor) in layer-tree order; tied copies come last.

    The tree shows a tied tensor once (the one it is tied to carries a note); a listing has
    to account for every tensor in the file, so the copies follow at the end.
    """
    root = build_tree(ckpt.tensors)
    out: list[tuple[str, TensorRef]] = []
    for top in root.children:
        out.extend((_group_label(top), t) for t in top.iter_tensors())
    out.extend(("tied", t) for t in ckpt.tensors if t.tied_to is not None)
    return out


def _group_label(node: TreeNode) -> str:
    """`3` for block 3, `decoder 3` for T5's decoder block 3, else the group (`embeddings`…)."""
    return node.label.replace("block ", "") if node.group == "block" else node.label


def tensor_record(t: TensorRef) -> dict[str, Any]:
    return {
        "name": t.name,
        "hf_name": t.hf_name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "kind": t.kind,
        "block": t.block,
        "nbytes": t.nbytes,
        "analyzable": t.analyzable,
        "tied_to": t.tied_to,
        "note": t.note,
    }


def ls_dict(ckpt: Checkpoint) -> dict[str, Any]:
    """The `wstui.ls/1` document; tensors in layer-tree order, tied copies last."""
    return {
        "schema": SCHEMA,
        "wstui_version": __version__,
        "checkpoint": ckpt.summary(),
        "tensors": [tensor_record(t) for _, t in rows(ckpt)],
    }
