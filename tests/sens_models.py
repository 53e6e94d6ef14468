"""Tiny causal LMs with a tokenizer, built offline, for the sensitivity tests.

The tokenizer is character level (a WordLevel vocabulary of the characters of the shipped
calibration text), so that a folder is a complete model without any download.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def char_tokenizer(vocab_size: int) -> Any:
    """A character-level fast tokenizer of at most `vocab_size` ids (id 0 is <unk>)."""
    from importlib import resources

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    text = resources.files("wstui").joinpath("data/calibration.txt").read_text("utf-8")
    chars = sorted(set(text), key=lambda c: -text.count(c))[: vocab_size - 1]
    vocab = {"<unk>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def llama_config(**kw: Any) -> Any:
    from transformers import LlamaConfig

    base = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    base.update(kw)
    return LlamaConfig(**base)


def tiny_llama(seed: int = 0, **kw: Any) -> Any:
    """A random-init LlamaForCausalLM (float32, eval mode)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(**kw))
    return model.eval()


def save_llama_dir(folder: Path, model: Any = None, *, tokenizer: bool = True,
                   seed: int = 0, **kw: Any) -> Path:
    """config.json + model.safetensors (+ tokenizer files) of a tiny llama in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model if model is not None else tiny_llama(seed, **kw)
    model.save_pretrained(folder)
    if tokenizer:
        char_tokenizer(model.config.vocab_size).save_pretrained(folder)
    return folder
