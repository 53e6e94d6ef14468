"""A transformers causal LM whose weights come from wstui's readers.

Why not `AutoModelForCausalLM.from_pretrained(..., gguf_file=...)`: on a 135M Q4_1 file it
took 38 s here, most of it in its own dequantization and per-tensor conversions. We build the
module skeleton on the meta device (no random init, no memory), then hand it our tensors with
`load_state_dict(assign=True)`, so each weight is materialised exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wstui.checkpoint.base import Checkpoint, CheckpointError, TensorRef

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: GGUF architectures whose config we can rebuild from the metadata -> transformers model_type
GGUF_ARCHS = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "smollm3": "llama"}
#: files any transformers tokenizer of a folder is read from
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@dataclass(eq=False)
class LoadedLM:
    """The model (eval mode, float32), its tokenizer, config, and where each weight came from."""

    model: torch.nn.Module
    tokenizer: Any
    config: Any
    refs: dict[str, TensorRef]  # parameter name -> the checkpoint tensor it was loaded from
    tied: dict[str, str] = field(default_factory=dict)  # parameter name -> name it shares with
    build_s: float = 0.0

    @property
    def num_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def num_kv_heads(self) -> int:
        return int(getattr(self.config, "num_key_value_heads", None) or self.num_heads)

    @property
    def head_dim(self) -> int:
        hd = getattr(self.config, "head_dim", None)
        return int(hd or self.config.hidden_size // self.num_heads)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def gguf_config(ckpt: Checkpoint) -> Any:
    """A transformers config from the GGUF metadata (llama-family keys)."""
    import transformers

    meta = ckpt.metadata
    arch = str(meta.get("general.architecture", ""))
    model_type = GGUF_ARCHS.get(arch)
    if model_type is None:
        raise CheckpointError(ckpt.path, f"GGUF architecture {arch!r}: cannot build a causal LM "
                              f"config from its metadata (supported: {', '.join(GGUF_ARCHS)})")

    def key(name: str, default: Any = None) -> Any:
        v = meta.get(f"{arch}.{name}", default)
        if isinstance(v, list):  # per-layer values: the model classes take one
            v = v[0] if v else default
        if v is None:
            raise CheckpointError(ckpt.path, f"GGUF metadata has no {arch}.{name}")
        return v

    names = {t.hf_name for t in ckpt.tensors}
    embd = next((t for t in ckpt.tensors if t.hf_name == "model.embed_tokens.weight"), None)
    vocab = meta.get(f"{arch}.vocab_size") or meta.get("gguf.arrays", {}).get(
        "tokenizer.ggml.tokens") or (embd.shape[0] if embd else None)
    if not vocab:
        raise CheckpointError(ckpt.path, "GGUF has no vocabulary size (no token array, "
                              "no token_embd)")
    hidden = int(key("embedding_length"))
    heads = int(key("attention.head_count"))
    kwargs: dict[str, Any] = dict(
        vocab_size=int(vocab), hidden_size=hidden,
        intermediate_size=int(key("feed_forward_length")),
        num_hidden_layers=int(key("block_count")), num_attention_heads=heads,
        num_key_value_heads=int(key("attention.head_count_kv", heads)),
        max_position_embeddings=int(key("context_length", 2048)),
        rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        tie_word_embeddings="lm_head.weight" not in names,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
    )
    head_dim = meta.get(f"{arch}.attention.key_length") or hidden // heads
    if model_type == "llama":
        kwargs["head_dim"] = int(head_dim)
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    return config


def folder_config(ckpt: Checkpoint) -> Any:
    """The transformers config of an HF folder's config.json (local only)."""
    import transformers

    cfg = dict(ckpt.config or {})
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise CheckpointError(ckpt.path, "config.json has no model_type")
    try:
        return transformers.AutoConfig.for_model(model_type, **cfg)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(ckpt.path, f"config.json: {e}") from None


def checkpoint_config(ckpt: Checkpoint) -> Any:
    if ckpt.format == "gguf":
        return gguf_config(ckpt)
    if not ckpt.config:
        raise CheckpointError(ckpt.path, "no config.json: a causal LM cannot be built "
                              "(needs config.json and tokenizer files beside the weights)")
    return folder_config(ckpt)


def _folder_of(ckpt: Checkpoint) -> Path:
    return ckpt.path if ckpt.path.is_dir() else ckpt.path.parent


def load_tokenizer(ckpt: Checkpoint) -> Any:
    """The folder's tokenizer files (local only), or for a GGUF the tokenizer in its metadata,
    built by transformers' own GGUF tokenizer conversion."""
    _offline()
    if ckpt.format == "gguf":
        return _gguf_tokenizer(ckpt)
    folder = _folder_of(ckpt)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(folder, "no tokenizer files (tokenizer.json, tokenizer.model or "
                              "vocab.json): a forward pass needs the tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(folder, f"cannot load the tokenizer: {e}") from None


def _gguf_tokenizer(ckpt: Checkpoint) -> Any:
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer

    if "tokenizer.ggml.tokens" not in ckpt.metadata.get("gguf.arrays", {}):
        raise CheckpointError(ckpt.files[0], "GGUF has no tokenizer (no tokenizer.ggml.tokens)")
    try:
        arch, tok_dict, tok_config = get_gguf_tokenizer(str(ckpt.files[0]))
        backend, extra = convert_gguf_tokenizer(arch, tok_dict)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(ckpt.files[0], f"cannot build the GGUF tokenizer: {e}") from None
    kwargs = {k: v for k, v in {**tok_config, **extra}.items()
              if k != "chat_template" and v is not None}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


#: suffixes of the architecture names (config.json `architectures`) of causal LMs
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _not_causal(config: Any, path: Path) -> CheckpointError:
    arch = ",".join(getattr(config, "architectures", None) or []) or config.model_type
    return CheckpointError(path, f"{arch} ({config.model_type}) is not a causal LM: a forward "
                           "pass with next-token loss needs a decoder with an LM head")


def _causal_lm_skeleton(config: Any, path: Path) -> Any:
    """The model on the meta device: the module tree with no storage and no random init.

    An encoder is refused by its config's `architectures` (BERT has a `BertLMHeadModel` class,
    but a BERT checkpoint is bidirectional and has no causal head)."""
    import torch
    from transformers import AutoModelForCausalLM

    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs):
        raise _not_causal(config, path)
    if getattr(config, "is_encoder_decoder", False):
        raise _not_causal(config, path)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except ValueError:
        raise _not_causal(config, path) from None


def _materialise_buffers(model: Any) -> None:
    """Non-persistent buffers (rotary inv_freq) are not in any checkpoint: give them real
    storage and let the model's own `_init_weights` compute them."""
    import torch

    for mod in model.modules():
        todo = [n for n, b in mod.named_buffers(recurse=False) if b is not None and b.is_meta]
        if not todo:
            continue
        for n in todo:
            b = getattr(mod, n)
            mod.register_buffer(n, torch.empty_like(b, device="cpu"),
                                persistent=n not in mod._non_persistent_buffers_set)
        model._init_weights(mod)


def _release_gguf_pages(ckpt: Checkpoint) -> None:
    """Unmap the GGUF files once every weight is a tensor of its own: the pages read while
    dequantizing would otherwise stay in the process's resident set for the whole study. The
    reader maps its file again if a tensor is loaded later."""
    from wstui.checkpoint.gguf import GGUFTensorReader

    for r in ckpt.readers:
        if isinstance(r, GGUFTensorReader):
            r.release()  # not close(): the study's static metrics load from it afterwards


def causal_lm_problem(ckpt: Checkpoint) -> CheckpointError | None:
    """Why `build_lm` would refuse `ckpt`, found from the headers and the files beside it
    (no torch, no transformers: the app asks before offering the study), or None when it
    looks buildable. The messages are `build_lm`'s own; a problem only the build can see (a
    missing weight, a bad shape) still comes from `build_lm`."""
    if ckpt.format == "gguf":
        arch = str(ckpt.metadata.get("general.architecture", ""))
        if arch not in GGUF_ARCHS:
            return CheckpointError(ckpt.path, f"GGUF architecture {arch!r}: cannot build a "
                                   "causal LM config from its metadata (supported: "
                                   f"{', '.join(GGUF_ARCHS)})")
        if "tokenizer.ggml.tokens" not in ckpt.metadata.get("gguf.arrays", {}):
            return CheckpointError(ckpt.files[0], "GGUF has no tokenizer (no "
                                   "tokenizer.ggml.tokens)")
        return None
    cfg = ckpt.config or {}
    if not cfg:
        return CheckpointError(ckpt.path, "no config.json: a causal LM cannot be built "
                               "(needs config.json and tokenizer files beside the weights)")
    model_type = cfg.get("model_type")
    if not model_type:
        return CheckpointError(ckpt.path, "config.json has no model_type")
    archs = [str(a) for a in cfg.get("architectures") or []]
    if (archs and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs)) or cfg.get(
            "is_encoder_decoder"):
        arch = ",".join(archs) or str(model_type)
        return CheckpointError(ckpt.path, f"{arch} ({model_type}) is not a causal LM: a "
                               "forward pass with next-token loss needs a decoder with an LM "
                               "head")
    folder = _folder_of(ckpt)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return CheckpointError(folder, "no tokenizer files (tokenizer.json, tokenizer.model "
                               "or vocab.json): a forward pass needs the tokenizer")
    return None


def build_lm(ckpt: Checkpoint, *, device: str = "cpu",
             progress: Any = None) -> LoadedLM:
    """The checkpoint as a causal LM in eval mode (float32), or a CheckpointError naming what
    is missing (config, tokenizer, a causal-LM head, weights)."""
    import time

    _offline()
    t0 = time.perf_counter()
    config = checkpoint_config(ckpt)
    tokenizer = load_tokenizer(ckpt)
    model = _causal_lm_skeleton(config, ckpt.path)
    wanted = dict(model.state_dict(keep_vars=True))
    by_hf: dict[str, TensorRef] = {}
    for t in ckpt.tensors:
        for n in {t.hf_name, t.name}:
            if n:
                by_hf.setdefault(n, t)
    state: dict[str, torch.Tensor] = {}
    refs: dict[str, TensorRef] = {}
    prefixes = ("", "model.", f"{getattr(model, 'base_model_prefix', '')}.")
    for name, p in wanted.items():
        ref = next((by_hf[pre + name] for pre in prefixes if pre + name in by_hf), None)
        for pre in prefixes[1:]:  # stored without the base model's prefix
            if ref is None and pre != "." and name.startswith(pre):
                ref = by_hf.get(name[len(pre):])
        if ref is None:
            continue
        if progress is not None:
            progress(f"loading {ref.name}")
        w = ref.load(device, hf_layout=True)
        if tuple(w.shape) != tuple(p.shape):
            raise CheckpointError(ref.file, f"tensor {ref.name}: shape {tuple(w.shape)}, the "
                                  f"model expects {tuple(p.shape)} for {name}")
        state[name] = w
        refs[name] = ref
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    _materialise_buffers(model)
    tied: dict[str, str] = {}
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied[name] = seen[id(p)]
        else:
            seen[id(p)] = name
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(ckpt.path, f"the checkpoint lacks weights the causal LM needs: "
                              f"{', '.join(missing[:3])}{more}")
    _release_gguf_pages(ckpt)
    model.eval()
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedLM(model=model, tokenizer=tokenizer, config=config, refs=refs, tied=tied,
                    build_s=time.perf_counter() - t0)
