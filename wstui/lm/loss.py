"""The mean next-token loss without the full logits matrix in the autograd graph.

A 49k vocabulary over 512 tokens is 100 MB of float32 logits, and the backward of a plain
cross-entropy holds three such matrices (logits, log-softmax, their gradient). Here the base
model's last hidden states go through the LM head and the loss in chunks of positions, each
chunk checkpointed, so at most one chunk's logits are alive at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

CHUNK = 128


def forward_fn(model: Any) -> Callable[[Any], Any]:
    """`model(ids)` without a KV cache when the model takes `use_cache` (a cache is useless for
    one pass and breaks recomputation under activation checkpointing)."""
    import functools

    try:
        takes = "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        takes = False
    return functools.partial(model, use_cache=False) if takes else model


def chunked_loss_fn(model: Any, chunk: int = CHUNK) -> Callable[[Any], Any] | None:
    """A loss function equal to `analyzers.sensitivity.next_token_loss(model, ids)` computed in
    checkpointed chunks, or None when this model's head is not a plain projection of the base
    model's output (checked on a short input: softcapping, logit scales and the like)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    from analyzers.sensitivity import next_token_loss

    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is None or base is model or head is None:
        return None

    def loss(ids: torch.Tensor) -> torch.Tensor:
        # every position goes through the head, as in the plain forward (its hooks see the
        # same inputs); the last one has no target and is ignored by the loss
        h = base(input_ids=ids, use_cache=False).last_hidden_state[0]
        tgt = torch.cat([ids[0, 1:], ids.new_full((1,), -100)])

        def part(hc: torch.Tensor, tc: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(head(hc).float(), tc, reduction="sum", ignore_index=-100)

        total = None
        for s in range(0, tgt.shape[0], chunk):
            c = checkpoint(part, h[s:s + chunk], tgt[s:s + chunk], use_reentrant=False)
            total = c if total is None else total + c
        return total / (tgt.shape[0] - 1)

    try:
        with torch.inference_mode():
            probe = torch.arange(min(16, model.config.vocab_size), dtype=torch.long,
                                 device=next(model.parameters()).device)[None, :]
            ok = torch.allclose(loss(probe), next_token_loss(forward_fn(model), probe),
                                rtol=1e-4, atol=1e-5)
    except (TypeError, AttributeError, RuntimeError, ValueError):
        return None
    return loss if ok else None
