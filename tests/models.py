"""Tiny random-init transformers models, built offline, for reader and naming tests.

Each family gets the smallest config that still has every module kind of the real thing
(hidden 32-64, 2 layers, vocab 128-256), so that building and saving one takes well under a
second. Nothing is downloaded: configs are constructed in code and weights are random.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_DECODER = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)

#: family -> (config class name, kwargs, model class name)
FAMILIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "llama": ("LlamaConfig", {**_DECODER, "tie_word_embeddings": False}, "LlamaForCausalLM"),
    "mistral": ("MistralConfig", {**_DECODER, "tie_word_embeddings": False},
                "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", {**_DECODER, "tie_word_embeddings": False}, "Qwen2ForCausalLM"),
    # Gemma ties lm_head to the embedding by default: the tied-weight case.
    "gemma": ("GemmaConfig", {**_DECODER, "head_dim": 8}, "GemmaForCausalLM"),
    "gpt2": ("GPT2Config", dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                bos_token_id=0, eos_token_id=1), "GPT2LMHeadModel"),
    "gpt_neox": ("GPTNeoXConfig", dict(vocab_size=128, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       max_position_embeddings=64, tie_word_embeddings=False),
                 "GPTNeoXForCausalLM"),
    "bert": ("BertConfig", dict(vocab_size=128, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4,
                                max_position_embeddings=64), "BertModel"),
    "t5": ("T5Config", dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                            num_decoder_layers=2, num_heads=4, decoder_start_token_id=0,
                            pad_token_id=0, eos_token_id=1), "T5ForConditionalGeneration"),
    "mixtral": ("MixtralConfig", {**_DECODER, "num_local_experts": 4, "num_experts_per_tok": 2,
                                  "tie_word_embeddings": False}, "MixtralForCausalLM"),
}


def build_model(family: str, seed: int = 0) -> Any:
    """A random-init `transformers` model of `family` (see FAMILIES), in eval mode."""
    import torch
    import transformers

    cfg_name, kwargs, model_name = FAMILIES[family]
    config = getattr(transformers, cfg_name)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    return model.eval()


def save_safetensors(model: Any, out: Path) -> Path:
    """`save_pretrained` into `out` (safetensors, config.json)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return out


def save_bin(model: Any, out: Path) -> Path:
    """`pytorch_model.bin` + config.json in `out`.

    transformers 5 ignores `safe_serialization=False`, so the pickle is written by hand from
    `state_dict()` (for Mixtral this holds the fused in-memory expert tensors, not the per-expert
    names that `save_pretrained` writes).
    """
    import torch

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / "pytorch_model.bin")
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), default=str))
    return out


def build_family_dirs(family: str, root: Path) -> dict[str, Path]:
    """Build one model of `family`; save it twice under root: {"safetensors": dir, "bin": dir}."""
    model = build_model(family)
    return {
        "safetensors": save_safetensors(model, root / f"{family}-st"),
        "bin": save_bin(model, root / f"{family}-bin"),
    }


def state_dict_names(family: str) -> list[str]:
    """The names `model.state_dict()` holds (in memory, no file)."""
    return list(build_model(family).state_dict().keys())


Builder = Callable[[str, Path], dict[str, Path]]
