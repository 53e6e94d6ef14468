"""Diff mode's matching: two checkpoints' tensors paired by HF name (DESIGN §5 compare).

Matching is by HF name, so a safetensors folder, a `.bin` and a GGUF of one model line up.
Nothing is dropped silently: unmatched names and shape mismatches are listed, a resized
vocabulary is compared on its common rows with a note, and an lm_head tied to the embedding on
one side is compared with that embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from analyzers.core import TensorResult
from wstui.checkpoint.base import Checkpoint, TensorRef

VOCAB_KINDS = frozenset({"embedding", "lm_head"})


@dataclass(eq=False)
class DiffPair:
    """Tensor `a` of checkpoint A and `b` of checkpoint B, compared as one.

    `rows` limits the comparison to the first rows (a resized vocabulary); `note` says why a
    pair is special (resized, tied on one side). `result` holds `metrics["compare"]`.
    """

    a: TensorRef
    b: TensorRef
    note: str | None = None
    rows: int | None = None
    result: TensorResult = field(default_factory=lambda: TensorResult(name=""))

    def __post_init__(self) -> None:
        if not self.result.name:
            self.result.name = self.a.name
            self.result.kind = self.a.kind
            self.result.shape = self.shape

    @property
    def name(self) -> str:
        return self.a.name

    @property
    def key(self) -> str:
        """The HF name both sides share (B's name when A's lm_head is its tied embedding)."""
        return self.a.display_name

    @property
    def shape(self) -> tuple[int, ...]:
        if self.rows is None:
            return tuple(int(s) for s in self.a.shape)
        return (self.rows, *(int(s) for s in self.a.shape[1:]))

    @property
    def is_matrix(self) -> bool:
        """Both sides are matrices (DESIGN §5), as compared (a cut vocabulary's rows)."""
        return self.a.is_matrix and (self.rows is None or self.rows >= 2)

    @property
    def compare(self) -> dict[str, Any]:
        return self.result.metrics.get("compare", {})

    @property
    def rel_change(self) -> float | None:
        v = self.compare.get("rel_change")
        return float(v) if v is not None else None


@dataclass
class Matching:
    pairs: list[DiffPair] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)


def _key(t: TensorRef) -> str:
    return t.hf_name or t.name


def _main_embedding(refs: Sequence[TensorRef]) -> TensorRef | None:
    embeds = [r for r in refs if r.kind == "embedding" and r.block is None and len(r.shape) == 2]
    return max(embeds, key=lambda r: r.numel) if embeds else None


def _vocab_resized(a: TensorRef, b: TensorRef) -> bool:
    return (a.kind in VOCAB_KINDS and b.kind in VOCAB_KINDS and len(a.shape) == 2
            and len(b.shape) == 2 and a.shape[1] == b.shape[1] and a.shape[0] != b.shape[0])


def _make_pair(a: TensorRef, b: TensorRef, note: str | None, m: Matching) -> None:
    if tuple(a.shape) == tuple(b.shape):
        m.pairs.append(DiffPair(a, b, note))
    elif _vocab_resized(a, b):
        rows = min(int(a.shape[0]), int(b.shape[0]))
        why = (f"vocabulary resized: A has {a.shape[0]} rows, B has {b.shape[0]}; "
               f"the first {rows} rows compared")
        m.pairs.append(DiffPair(a, b, f"{note}; {why}" if note else why, rows))
    else:
        m.shape_mismatch.append({"name": a.name, "name_b": b.name, "shape_a": list(a.shape),
                                 "shape_b": list(b.shape)})


def match_tensors(
    a: Checkpoint | Sequence[TensorRef], b: Checkpoint | Sequence[TensorRef]
) -> Matching:
    """Pair A's and B's tensors by HF name (A's order); list the rest (DESIGN §5 compare)."""
    refs_a = list(a.tensors if isinstance(a, Checkpoint) else a)
    refs_b = list(b.tensors if isinstance(b, Checkpoint) else b)
    by_b: dict[str, TensorRef] = {}
    for t in refs_b:
        by_b.setdefault(_key(t), t)
    m = Matching()
    used_b: set[int] = set()
    for ta in refs_a:
        tb = by_b.get(_key(ta))
        if tb is None or id(tb) in used_b:
            m.only_in_a.append(ta.name)
            continue
        used_b.add(id(tb))
        note = None
        if ta.tied_to and not tb.tied_to:
            note = f"tied to {ta.tied_to} in A, stored in B"
        elif tb.tied_to and not ta.tied_to:
            note = f"stored in A, tied to {tb.tied_to} in B"
        _make_pair(ta, tb, note, m)
    rest_b = [t for t in refs_b if id(t) not in used_b]
    # an lm_head stored on one side and tied to the embedding (so absent) on the other
    has_head = (any(t.kind == "lm_head" for t in refs_a), any(t.kind == "lm_head" for t in refs_b))
    emb_a, emb_b = _main_embedding(refs_a), _main_embedding(refs_b)
    for tb in list(rest_b):
        if tb.kind == "lm_head" and not has_head[0] and emb_a is not None:
            rest_b.remove(tb)
            _make_pair(emb_a, tb, f"lm_head tied to {emb_a.display_name} in A, stored in B", m)
    for name in list(m.only_in_a):
        ta = next(t for t in refs_a if t.name == name)
        if ta.kind == "lm_head" and not has_head[1] and emb_b is not None:
            m.only_in_a.remove(name)
            _make_pair(ta, emb_b, f"stored in A, lm_head tied to {emb_b.display_name} in B", m)
    m.only_in_b = [t.name for t in rest_b]
    return m
