"""`--eval FILE`: accuracy on a user's multiple-choice JSONL (HellaSwag's `ctx`, `endings`,
`label`) or last-word accuracy on LAMBADA-style `{"text": ...}` lines.

The file is read and checked before the model is built, so that a bad file costs the user
one line and no minutes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wstui.checkpoint.base import CheckpointError


@dataclass(frozen=True)
class EvalSet:
    source: str
    sha256: str
    kind: str  # "multiple_choice" | "last_word"
    items: list[dict[str, Any]]

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "kind": self.kind,
                "n": len(self.items)}


def read_eval(path: str | Path) -> EvalSet:
    """Parse and validate the file; any problem is a one-line CheckpointError."""
    from wstui.lm.calibration import read_user_text

    p = Path(path)
    text = read_user_text(p, "--eval", "a JSONL file")
    items: list[dict[str, Any]] = []
    kinds = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CheckpointError(p, f"--eval: line {n}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise CheckpointError(p, f"--eval: line {n}: expected a JSON object")
        if "endings" in obj:
            ctx, endings, label = obj.get("ctx"), obj.get("endings"), obj.get("label")
            try:
                label = int(label)
            except (TypeError, ValueError):
                label = None
            if not (isinstance(ctx, str) and isinstance(endings, list) and len(endings) >= 2
                    and all(isinstance(e, str) for e in endings) and label is not None
                    and 0 <= label < len(endings)):
                raise CheckpointError(p, f"--eval: line {n}: a multiple-choice item needs "
                                      "ctx (text), endings (2+ texts) and label (an index)")
            items.append({"ctx": ctx, "endings": endings, "label": label})
            kinds.add("multiple_choice")
        elif "text" in obj:
            t = obj["text"]
            if not isinstance(t, str) or len(t.split()) < 2:
                raise CheckpointError(p, f"--eval: line {n}: text needs at least two words")
            items.append({"text": t})
            kinds.add("last_word")
        else:
            raise CheckpointError(p, f"--eval: line {n}: neither ctx/endings/label "
                                  "(multiple choice) nor text (last word)")
    if not items:
        raise CheckpointError(p, "--eval: no items")
    if len(kinds) > 1:
        raise CheckpointError(p, "--eval: mixes multiple-choice and text lines")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()  # the file's bytes: valid UTF-8
    return EvalSet(source=str(p), sha256=digest, kind=kinds.pop(), items=items)


def _logprobs(model: Any, ids: list[int]) -> Any:
    import torch

    from analyzers.sensitivity import logits_of

    with torch.inference_mode():
        x = torch.tensor([ids], dtype=torch.long, device=next(model.parameters()).device)
        return torch.log_softmax(logits_of(model(x))[0].float(), dim=-1).cpu()


class Evaluator:
    """Tokenizes the items once; `accuracy(model)` runs them (one forward per ending/text)."""

    def __init__(self, evalset: EvalSet, tokenizer: Any) -> None:
        self.evalset = evalset
        self.prepared: list[tuple[list[int], list[list[int]], int]] = []
        enc = tokenizer
        for it in evalset.items:
            if evalset.kind == "multiple_choice":
                ctx = enc(it["ctx"], add_special_tokens=True)["input_ids"]
                ends = [enc(" " + e.strip(), add_special_tokens=False)["input_ids"]
                        for e in it["endings"]]
                self.prepared.append((ctx, ends, it["label"]))
            else:
                head, _, last = it["text"].rstrip().rpartition(" ")
                ctx = enc(head, add_special_tokens=True)["input_ids"]
                self.prepared.append((ctx, [enc(" " + last, add_special_tokens=False)
                                            ["input_ids"]], 0))

    def accuracy(self, model: Any) -> float:
        """Multiple choice: the ending with the highest mean log-probability per token;
        last word: every token of the last word is the greedy prediction."""
        right = 0
        for ctx, ends, label in self.prepared:
            if self.evalset.kind == "multiple_choice":
                scores = []
                for e in ends:
                    lp = _logprobs(model, ctx + e)
                    pos = range(len(ctx) - 1, len(ctx) + len(e) - 1)
                    scores.append(sum(float(lp[i, t]) for i, t in zip(pos, e)) / max(len(e), 1))
                right += int(max(range(len(scores)), key=scores.__getitem__) == label)
            else:
                e = ends[0]
                lp = _logprobs(model, ctx + e)
                pos = range(len(ctx) - 1, len(ctx) + len(e) - 1)
                right += int(all(int(lp[i].argmax()) == t for i, t in zip(pos, e)))
        return right / len(self.prepared)
