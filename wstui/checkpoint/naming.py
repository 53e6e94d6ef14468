"""Module kinds, block indices, tied weights and the layer tree, from tensor names alone.

Torch-free and fast: `wstui ls` and the app's first paint call it on every tensor of a
checkpoint before any weight is read. Names are matched after dropping common wrappers
(`model.`, `transformer.`, …) but are never rewritten for display: `TensorRef.name` and
`hf_name` stay as stored.

Families covered: Llama/Mistral/Qwen2/Gemma (and Meta's original `wq/wk/wv/wo/w1/w2/w3`),
GPT-2 (`c_attn`, `c_proj`, `c_fc`; its Conv1D layers store weights as in x out, which
`annotate` notes on the tensor), GPT-NeoX, BERT, T5 (encoder and decoder stacks get distinct
tree groups), Mixtral and Qwen-MoE experts (per-expert on disk and the fused 3-D form), and
GGUF names, both mapped to HF names by the reader and raw (`blk.N.attn_q`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from wstui.checkpoint.base import Checkpoint, TensorRef

#: every module kind, in the order tensors are listed inside a tree group (DESIGN §4)
KINDS: tuple[str, ...] = (
    "embedding", "position_embedding",
    "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o",
    "mlp_gate", "mlp_up", "mlp_gate_up", "mlp_down",
    "moe_router", "moe_expert",
    "norm", "lm_head", "bias", "other",
)
_KIND_RANK = {k: i for i, k in enumerate(KINDS)}

#: the groups inside a block, in tree order
BLOCK_GROUPS: tuple[str, ...] = ("attention", "mlp", "norms", "other")

# ---------------------------------------------------------------------------------------
# name -> kind

#: containers whose `.N.` child is a transformer block (leftmost match wins: T5's
#: `block.0.layer.1` is block 0)
_BLOCK_RE = re.compile(
    r"(?:^|\.)(layers|layer|h|block|blocks|blk|transformer_blocks)\.(\d{1,18})(?=\.|$)"
)
_NUM_RE = re.compile(r"\.\d+(?=\.|$)")
_EXPERT_RE = re.compile(r"(?:^|\.)experts\.(\d{1,18})(?=\.|$)")

#: wrappers dropped before matching (repeatedly, from the left)
_WRAPPERS = ("model", "transformer", "gpt_neox", "bert", "roberta", "module", "_orig_mod",
             "base_model", "language_model", "backbone")

#: parameter names at the end of a module path; anything else (scales, qzeros, inv_freq, …)
#: keeps its module's group but gets kind `other`
_WEIGHT_PARAMS = frozenset({"weight", "qweight"})
_BIAS_PARAMS = frozenset({"bias"})

#: unambiguous module names
_SIMPLE: dict[str, str] = {
    # embeddings
    "embed_tokens": "embedding", "wte": "embedding", "word_embeddings": "embedding",
    "embed_in": "embedding", "tok_embeddings": "embedding", "token_embd": "embedding",
    "token_type_embeddings": "embedding", "token_types": "embedding",
    "wpe": "position_embedding", "position_embeddings": "position_embedding",
    "embed_positions": "position_embedding", "position_embd": "position_embedding",
    "relative_attention_bias": "position_embedding",
    # attention
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_o",
    "query": "attn_q", "key": "attn_k", "value": "attn_v",
    "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
    "attn_q": "attn_q", "attn_k": "attn_k", "attn_v": "attn_v",
    "c_attn": "attn_qkv", "query_key_value": "attn_qkv", "qkv_proj": "attn_qkv",
    "Wqkv": "attn_qkv", "qkv": "attn_qkv", "W_pack": "attn_qkv", "attn_qkv": "attn_qkv",
    "out_proj": "attn_o", "attn_output": "attn_o",
    "q_a_proj": "attn_q", "q_b_proj": "attn_q",  # DeepSeek's low-rank (MLA) projections
    "kv_a_proj_with_mqa": "attn_qkv", "kv_b_proj": "attn_qkv",
    # mlp
    "gate_proj": "mlp_gate", "up_proj": "mlp_up", "down_proj": "mlp_down",
    "gate_up_proj": "mlp_gate_up",
    "c_fc": "mlp_up", "fc1": "mlp_up", "fc2": "mlp_down", "fc_in": "mlp_up", "fc_out": "mlp_down",
    "dense_h_to_4h": "mlp_up", "dense_4h_to_h": "mlp_down",
    "wi": "mlp_up", "wi_0": "mlp_gate", "wi_1": "mlp_up",
    "w1": "mlp_gate", "w3": "mlp_up", "w2": "mlp_down",
    "ffn_gate": "mlp_gate", "ffn_up": "mlp_up", "ffn_down": "mlp_down",
    # moe
    "router": "moe_router", "shared_expert_gate": "moe_router", "ffn_gate_inp": "moe_router",
    "ffn_gate_inp_shexp": "moe_router",
    "ffn_gate_exps": "moe_expert", "ffn_up_exps": "moe_expert", "ffn_down_exps": "moe_expert",
    "ffn_gate_shexp": "moe_expert", "ffn_up_shexp": "moe_expert",
    "ffn_down_shexp": "moe_expert",
    # head
    "lm_head": "lm_head", "embed_out": "lm_head",
}

_GATE_PARENTS = frozenset({"block_sparse_moe", "mlp", "moe", "feed_forward"})
_T5_ATTN = frozenset({"SelfAttention", "EncDecAttention"})
_T5_QKVO = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_o"}
_MLP_PARENTS = frozenset({"DenseReluDense", "mlp", "ffn", "feed_forward"})


def _strip_wrappers(parts: list[str]) -> list[str]:
    while len(parts) > 1 and parts[0] in _WRAPPERS:
        parts = parts[1:]
    return parts


def _module_kind(mod: tuple[str, ...]) -> str:
    """The kind of a module path (parameter name already removed)."""
    if not mod:
        return "other"
    last = mod[-1]
    prev = mod[-2] if len(mod) > 1 else ""
    if any(p in ("experts", "shared_expert", "shared_experts") for p in mod):
        return "moe_expert"
    if last == "gate" and prev in _GATE_PARENTS:
        return "moe_router"
    if "router" in mod:
        return "moe_router"
    if prev in _T5_ATTN and last in _T5_QKVO:
        return _T5_QKVO[last]
    if last == "wo":
        return "mlp_down" if prev in _MLP_PARENTS else "attn_o"
    if last == "shared" and len(mod) == 1:
        return "embedding"
    if last == "output" and len(mod) == 1:  # raw GGUF `output.weight`
        return "lm_head"
    if last == "decoder" and "predictions" in mod:  # BertForMaskedLM
        return "lm_head"
    if last == "c_proj":
        return "attn_o" if prev == "attn" else "mlp_down"
    if last == "dense":
        if prev in ("attention", "self_attn", "attn", "self_attention"):
            return "attn_o"
        if prev == "output":
            return "attn_o" if len(mod) > 2 and mod[-3] == "attention" else "mlp_down"
        if prev == "intermediate":
            return "mlp_up"
        return "other"
    kind = _SIMPLE.get(last)
    if kind is not None:
        return kind
    low = last.lower()
    if "norm" in low or low.startswith("ln_") or low == "ln":
        return "norm"
    return "other"


@dataclass(frozen=True)
class NameInfo:
    """What a name says about its tensor. `module_kind` ignores the weight/bias split."""

    kind: str
    module_kind: str
    block: int | None
    stack: str  # prefix before the block container ("" for one stack; "encoder", "decoder")
    local: str  # the name after `<container>.N.` (the whole name outside blocks)
    group: str  # tree group: attention|mlp|norms|other in a block; embeddings|head|other outside
    param_rank: int  # 0 weight, 1 bias, 2 anything else
    expert: int | None


@lru_cache(maxsize=4096)
def _classify_template(template: str) -> tuple[str, str, int]:
    """(kind, module_kind, param_rank) of a name whose numbers are replaced by `#`."""
    parts = _strip_wrappers(template.split("."))
    param = parts[-1] if len(parts) > 1 else ""
    if param in _WEIGHT_PARAMS:
        mod, rank = tuple(parts[:-1]), 0
    elif param in _BIAS_PARAMS:
        mod, rank = tuple(parts[:-1]), 1
    elif len(parts) > 1 and (param.startswith(("weight_", "scale", "qzeros", "g_idx"))
                             or param in ("inv_freq", "position_ids", "masked_bias")):
        mod, rank = tuple(parts[:-1]), 2
    else:  # a bare parameter (fused experts `experts.gate_up_proj`, `final_logits_bias`)
        mod, rank = tuple(parts), 0
    if rank == 1 and mod and mod[-1] == "attn":  # GPT-2's causal-mask buffer `attn.bias`
        return "other", "other", 2
    mkind = _module_kind(mod)
    if rank == 0 and mod and mod[-1].endswith("bias") and mkind == "other":
        return "bias", "other", 1  # `cls.predictions.bias`, `final_logits_bias`
    if rank == 1:
        return "bias", mkind, 1
    if rank == 2:
        return "other", mkind, 2
    return mkind, mkind, 0


_IN_BLOCK_GROUP = {
    "attn_q": "attention", "attn_k": "attention", "attn_v": "attention",
    "attn_qkv": "attention", "attn_o": "attention", "position_embedding": "attention",
    "mlp_gate": "mlp", "mlp_up": "mlp", "mlp_gate_up": "mlp", "mlp_down": "mlp",
    "moe_router": "mlp", "moe_expert": "mlp", "norm": "norms",
}


def _top_group(module_kind: str, local: str) -> str:
    if module_kind in ("embedding", "position_embedding"):
        return "embeddings"
    parts = _strip_wrappers(local.split("."))
    if module_kind == "lm_head":
        return "head"
    if "embeddings" in parts or parts[0].startswith("embed") or "_embd" in parts[0]:
        return "embeddings"
    if module_kind == "norm" or parts[0] in ("pooler", "cls"):
        return "head"
    return "other"


@lru_cache(maxsize=65536)
def name_info(name: str) -> NameInfo:
    """Everything the tree needs to know about one tensor name."""
    kind, mkind, rank = _classify_template(_NUM_RE.sub(".#", name))
    m = _BLOCK_RE.search(name)
    if m is not None:
        block: int | None = int(m.group(2))
        stack = ".".join(_strip_wrappers(name[: m.start()].split("."))) if m.start() else ""
        stack = "" if stack in _WRAPPERS else stack
        local = name[m.end() + 1:] or name
        group = _IN_BLOCK_GROUP.get(mkind, "other")
    else:
        block, stack, local = None, "", name
        group = _top_group(mkind, name)
    e = _EXPERT_RE.search(name)
    return NameInfo(kind, mkind, block, stack, local, group, rank,
                    int(e.group(1)) if e else None)


def kind_and_block(hf_name: str) -> tuple[str, int | None]:
    """(module kind, block index or None) of an HF-style (or raw GGUF) tensor name."""
    info = name_info(hf_name)
    return info.kind, info.block


# ---------------------------------------------------------------------------------------
# annotate: kinds, tied weights, notes

#: model types whose attention/MLP weights are Conv1D (stored in x out, the transpose of Linear)
_CONV1D_TYPES = frozenset({"gpt2", "imagegpt", "decision_transformer"})
_CONV1D_MODULES = frozenset({"c_attn", "c_proj", "c_fc"})
_LM_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForMaskedLM")


def _add_note(ref: TensorRef, note: str) -> None:
    if ref.note and note in ref.note:
        return
    ref.note = f"{ref.note}; {note}" if ref.note else note


def _config_value(config: dict[str, Any], key: str) -> Any:
    if key in config:
        return config[key]
    sub = config.get("text_config")
    return sub.get(key) if isinstance(sub, dict) else None


def _main_embedding(refs: list[TensorRef]) -> TensorRef | None:
    """The token embedding: T5's `shared`, else the embedding table with the most rows."""
    best: TensorRef | None = None
    for r in refs:
        if r.kind != "embedding" or r.block is not None:
            continue
        parts = _strip_wrappers((r.hf_name or r.name).split("."))
        if parts[0] == "shared":
            return r
        if best is None or (r.shape[:1] > best.shape[:1]):
            best = r
    return best


def _tie(ref: TensorRef, target: TensorRef, why: str) -> None:
    ref.tied_to = target.name
    _add_note(ref, f"tied to {target.display_name} ({why})")
    _add_note(target, f"also {ref.display_name} (tied, {why})")


def _storage_groups(ckpt: Checkpoint) -> Iterator[list[TensorRef]]:
    """Refs that share storage, where a reader can tell (`reader.storage_key(ref)`)."""
    seen: dict[Any, list[TensorRef]] = {}
    for r in ckpt.tensors:
        fn = getattr(r.reader, "storage_key", None)
        key = fn(r) if callable(fn) else None
        if key is not None:
            seen.setdefault((str(r.file), key), []).append(r)
    for group in seen.values():
        if len(group) > 1:
            yield group


def _detect_ties(ckpt: Checkpoint) -> None:
    refs = ckpt.tensors
    embed = _main_embedding(refs)
    config = ckpt.config or {}
    # 1. shared storage, as the reader reports it: keep the embedding (or the first one)
    for group in _storage_groups(ckpt):
        keep = embed if embed in group else group[0]
        for r in group:
            if r is not keep and r.tied_to is None:
                _tie(r, keep, "same storage")
    if embed is None:
        return
    # 2. T5: encoder/decoder embed_tokens are the `shared` table
    if _strip_wrappers(embed.display_name.split("."))[0] == "shared":
        for r in refs:
            if (r is not embed and r.kind == "embedding" and r.tied_to is None
                    and r.shape == embed.shape):
                _tie(r, embed, "T5 shared embedding")
    # 3. lm_head and tie_word_embeddings
    tie = _config_value(config, "tie_word_embeddings")
    heads = [r for r in refs if r.kind == "lm_head" and r.block is None]
    if heads:
        for h in heads:
            if tie is True and h.tied_to is None and h.shape == embed.shape:
                _tie(h, embed, "tie_word_embeddings")
        return
    archs = config.get("architectures") or []
    is_lm = any(str(a).endswith(_LM_ARCH_SUFFIXES) for a in archs)
    if (tie is True and is_lm) or (ckpt.format == "gguf" and any(r.block is not None
                                                                  for r in refs)):
        why = "tie_word_embeddings" if tie is True else "GGUF without output.weight"
        _add_note(embed, f"also the lm_head ({why})")


def _note_conv1d(ckpt: Checkpoint) -> None:
    model_type = str((ckpt.config or {}).get("model_type", ""))
    if model_type and model_type not in _CONV1D_TYPES:
        return
    for r in ckpt.tensors:
        info = name_info(r.hf_name or r.name)
        parts = info.local.split(".")
        if (info.block is not None and info.param_rank == 0 and len(r.shape) == 2
                and len(parts) >= 2 and parts[-2] in _CONV1D_MODULES):
            _add_note(r, "Conv1D: stored in x out")


def annotate(ckpt: Checkpoint) -> None:
    """Set `hf_name` (where the reader did not), `kind`, `block` and `tied_to` on every ref."""
    for r in ckpt.tensors:
        if r.hf_name is None and ckpt.format != "gguf":
            r.hf_name = r.name
        info = name_info(r.hf_name or r.name)
        r.kind, r.block = info.kind, info.block
    _detect_ties(ckpt)
    _note_conv1d(ckpt)


# ---------------------------------------------------------------------------------------
# the layer tree


@dataclass(eq=False)
class TreeNode:
    """One node of the layer tree.

    `key` is unique in the tree and stable across runs (`model`, `embeddings`, `block:3`,
    `decoder:block:3`, `block:3/attention`, `t:<stored name>` for a tensor), so the app can
    keep expansion state and map scan results to nodes. `group` says what the node is:
    model, embeddings, block, attention, mlp, experts, norms, head, other, or tensor.
    """

    label: str
    key: str
    children: list[TreeNode] = field(default_factory=list)
    tensor: TensorRef | None = None
    block: int | None = None
    group: str = "other"

    def iter_tensors(self) -> Iterator[TensorRef]:
        """Every tensor under this node, in tree order."""
        if self.tensor is not None:
            yield self.tensor
        for c in self.children:
            yield from c.iter_tensors()

    def walk(self) -> Iterator[TreeNode]:
        """This node and every node under it, depth first."""
        yield self
        for c in self.children:
            yield from c.walk()

    @property
    def n_tensors(self) -> int:
        return sum(1 for _ in self.iter_tensors())


def _leaf_key(ref: TensorRef, info: NameInfo) -> tuple[int, int, int, int, int, str]:
    # outside blocks the bigger table of a kind comes first (BERT: words before token types)
    size = -ref.numel if info.block is None else 0
    # inside an expert: gate, up, down, as in a dense MLP (Mixtral's w1, w3, w2)
    sub = 0
    if info.module_kind == "moe_expert":
        parts = info.local.split(".")
        mod = parts[-1] if parts[-1] in _SIMPLE or len(parts) < 2 else parts[-2]
        sub = _KIND_RANK.get(_SIMPLE.get(mod, "other"), 0)
    return (_KIND_RANK.get(info.module_kind, len(KINDS)),
            -1 if info.expert is None else info.expert, sub, info.param_rank, size, ref.name)


def _leaf(ref: TensorRef, info: NameInfo, group: str, label: str) -> TreeNode:
    return TreeNode(label=label, key=f"t:{ref.name}", tensor=ref, block=info.block, group=group)


def _stack_rank(stack: str) -> int:
    if "encoder" in stack or "vision" in stack:
        return 0
    return 2 if "decoder" in stack else 1


def build_tree(tensors: Iterable[TensorRef]) -> TreeNode:
    """The layer tree: model > embeddings | block N > attention | mlp | norms > tensor; head;
    other. Blocks sort numerically per stack (encoder before decoder). A tensor with `tied_to`
    set is left out: the tensor it is tied to carries a note instead.
    """
    top: dict[str, list[tuple[TensorRef, NameInfo]]] = {"embeddings": [], "head": [], "other": []}
    blocks: dict[tuple[str, int], list[tuple[TensorRef, NameInfo]]] = {}
    stack_first: dict[str, int] = {}
    for i, ref in enumerate(tensors):
        if ref.tied_to is not None:
            continue
        info = name_info(ref.hf_name or ref.name)
        if info.block is None:
            top[info.group].append((ref, info))
        else:
            stack_first.setdefault(info.stack, i)
            blocks.setdefault((info.stack, info.block), []).append((ref, info))

    root = TreeNode(label="model", key="model", group="model")
    if top["embeddings"]:
        root.children.append(_group_node("embeddings", "embeddings", top["embeddings"], None))
    several = len(stack_first) > 1
    order = sorted(blocks, key=lambda sb: (_stack_rank(sb[0]), stack_first[sb[0]], sb[1]))
    for stack, n in order:
        prefix = f"{stack}:" if stack else ""
        label = f"{stack.replace('.', ' ')} block {n}" if several and stack else f"block {n}"
        node = TreeNode(label=label, key=f"{prefix}block:{n}", block=n, group="block")
        by_group: dict[str, list[tuple[TensorRef, NameInfo]]] = {}
        for ref, info in blocks[(stack, n)]:
            by_group.setdefault(info.group, []).append((ref, info))
        for g in BLOCK_GROUPS:
            if g in by_group:
                node.children.append(_group_node(g, f"{node.key}/{g}", by_group[g], n))
        root.children.append(node)
    for g in ("head", "other"):
        if top[g]:
            root.children.append(_group_node(g, g, top[g], None))
    return root


def _group_node(group: str, key: str, items: list[tuple[TensorRef, NameInfo]],
                block: int | None) -> TreeNode:
    items = sorted(items, key=lambda ri: _leaf_key(*ri))
    node = TreeNode(label=group, key=key, block=block, group=group)
    in_block = block is not None
    experts = [ri for ri in items if ri[1].expert is not None]
    if group == "mlp" and len(experts) > 3:
        sub = TreeNode(label=f"experts ({len(experts)})", key=f"{key}/experts", block=block,
                       group="experts")
        sub.children = [_leaf(r, i, "experts", i.local) for r, i in experts]
        rest = [ri for ri in items if ri[1].expert is None]
        node.children = [_leaf(r, i, group, i.local) for r, i in rest]
        node.children.append(sub)
        return node
    node.children = [_leaf(r, i, group, i.local if in_block else r.display_name)
                     for r, i in items]
    return node


def tree_order(tensors: Iterable[TensorRef]) -> list[TensorRef]:
    """The tensors in layer-tree order (tied duplicates left out, as in the tree)."""
    return list(build_tree(tensors).iter_tensors())
