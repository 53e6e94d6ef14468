"""GGUF <-> Hugging Face tensor names, both directions.

The forward table (HF -> GGUF) is the `gguf` package's own `TensorNameMap`, the table
llama.cpp's converter uses, so names stay right as llama.cpp adds architectures. That table
lists many HF spellings per GGUF name (one per model family it has met); for the reverse
direction we keep the candidates whose prefix matches how `transformers` saves that
architecture (`_STYLES`, a short hand table of prefixes) and take the first one in the
library's order. A name neither direction knows maps to None.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

_SUFFIXES = (".weight", ".bias")
_BLOCK = re.compile(r"\.(\d{1,18})\.")
_GGUF_BLOCK = re.compile(r"^blk\.(\d{1,18})\.")

# Prefixes (in order of preference) of the names transformers' `save_pretrained` writes.
_LLAMA_STYLE = ("model.layers.{bid}.", "model.embed_tokens", "model.norm", "lm_head")
_STYLES: dict[str, tuple[str, ...]] = {
    "gpt2": ("transformer.h.{bid}.", "transformer.wte", "transformer.wpe", "transformer.ln_f",
             "lm_head"),
    "gptneox": ("gpt_neox.layers.{bid}.", "gpt_neox.embed_in", "gpt_neox.final_layer_norm",
                "lm_head", "embed_out"),
    "bert": ("encoder.layer.{bid}.", "embeddings.", "pooler."),
    "nomic-bert": ("encoder.layers.{bid}.", "embeddings.", "emb_ln"),
}

# Where the library's first matching spelling is not what current transformers writes:
# GGUF base name (block part as {bid}) -> HF name; a trailing "!" means "no .weight suffix"
# (transformers >= 5 stores fused MoE experts as bare parameters).
_MOE_V5 = {
    "blk.{bid}.ffn_gate_inp": "model.layers.{bid}.mlp.gate",
    "blk.{bid}.ffn_gate_exps": "model.layers.{bid}.mlp.experts.gate_proj!",
    "blk.{bid}.ffn_up_exps": "model.layers.{bid}.mlp.experts.up_proj!",
    "blk.{bid}.ffn_down_exps": "model.layers.{bid}.mlp.experts.down_proj!",
}
_OVERRIDES: dict[str, dict[str, str]] = {
    "phi3": {
        "blk.{bid}.attn_qkv": "model.layers.{bid}.self_attn.qkv_proj",
        "blk.{bid}.ffn_up": "model.layers.{bid}.mlp.gate_up_proj",
    },
    "llama": _MOE_V5,
    "qwen2moe": _MOE_V5,
    "qwen3moe": _MOE_V5,
}

_lock = threading.Lock()
_maps: dict[str, tuple[int, dict[str, tuple[object, str]]]] = {}


def _model_arch(arch: str):
    import gguf

    for key, value in gguf.MODEL_ARCH_NAMES.items():
        if value == arch:
            return key
    return None


def _mapping(arch: str, n_blocks: int) -> dict[str, tuple[object, str]] | None:
    """`TensorNameMap(arch).mapping` covering at least `n_blocks` blocks (cached, grown)."""
    with _lock:
        have = _maps.get(arch)
        if have is not None and have[0] >= n_blocks:
            return have[1]
        model_arch = _model_arch(arch)
        if model_arch is None:
            return None
        from gguf.tensor_mapping import TensorNameMap

        n = max(n_blocks, 2 * have[0] if have else 32)
        mapping = TensorNameMap(model_arch, n).mapping
        _maps[arch] = (n, mapping)
        return mapping


def _split_suffix(name: str) -> tuple[str, str]:
    for s in _SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)], s
    return name, ""


def _blocks_needed(name: str) -> int:
    nums = [int(m) for m in _BLOCK.findall("." + name + ".")]
    return (max(nums) + 1) if nums else 1


def hf_to_gguf(name: str, arch: str = "llama") -> str | None:
    """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight` (None if unknown)."""
    mapping = _mapping(arch, _blocks_needed(name))
    if mapping is None:
        return None
    base, suffix = _split_suffix(name)
    hit = mapping.get(base)
    if hit is None:
        return None
    return hit[1] + (suffix or ".weight")  # every GGUF tensor name carries its suffix


@lru_cache(maxsize=64)
def _reverse(arch: str, n_blocks: int) -> dict[str, list[str]]:
    mapping = _mapping(arch, n_blocks) or {}
    rev: dict[str, list[str]] = {}
    for hf, (_, gguf_name) in mapping.items():
        if hf != gguf_name:
            rev.setdefault(gguf_name, []).append(hf)
    return rev


def _pick(candidates: list[str], arch: str, bid: int | None) -> str | None:
    style = _STYLES.get(arch, _LLAMA_STYLE)
    prefixes = [p.format(bid=bid) for p in style if bid is not None or "{bid}" not in p]
    for p in prefixes:
        for c in candidates:
            if c.startswith(p) or c == p.rstrip("."):
                return c
    return None


def gguf_to_hf(name: str, arch: str = "llama") -> str | None:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight` (None if unknown)."""
    m = _GGUF_BLOCK.match(name)
    bid = int(m.group(1)) if m else None
    # round the block count up so a 32-layer model builds the reverse table once
    n = 32 * ((bid // 32) + 1) if bid is not None else 32
    base, suffix = _split_suffix(name)
    override = _OVERRIDES.get(arch, {}).get(_GGUF_BLOCK.sub("blk.{bid}.", base, count=1))
    if override is not None:
        hf = override.format(bid=bid)
        return hf[:-1] if hf.endswith("!") and suffix == ".weight" else hf.rstrip("!") + suffix
    candidates = _reverse(arch, n).get(base)
    if not candidates:
        return None
    hf = _pick(candidates, arch, bid)
    return hf + suffix if hf is not None else None
