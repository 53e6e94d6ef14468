"""Module kinds, blocks, tied weights and the layer tree, on name lists (no weights, no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wstui.checkpoint.base import Checkpoint, TensorRef
from wstui.checkpoint.naming import KINDS, annotate, build_tree, kind_and_block, tree_order


def ref(name: str, shape: tuple[int, ...] = (8, 8), hf_name: str | None = None) -> TensorRef:
    return TensorRef(name=name, shape=shape, dtype="F32", nbytes=4 * 64, file=Path("x"),
                     hf_name=hf_name)


def ckpt(names: list[str] | list[TensorRef], config: dict | None = None,
         fmt: str = "safetensors") -> Checkpoint:
    refs = [n if isinstance(n, TensorRef) else ref(n) for n in names]
    return Checkpoint(path=Path("x"), format=fmt, files=[Path("x")], tensors=refs, config=config)


KIND_CASES = {
    # Llama / Mistral / Qwen2 / Gemma
    "model.embed_tokens.weight": ("embedding", None),
    "model.layers.11.self_attn.q_proj.weight": ("attn_q", 11),
    "model.layers.0.self_attn.k_proj.weight": ("attn_k", 0),
    "model.layers.0.self_attn.v_proj.weight": ("attn_v", 0),
    "model.layers.0.self_attn.o_proj.weight": ("attn_o", 0),
    "model.layers.0.self_attn.q_proj.bias": ("bias", 0),
    "model.layers.0.mlp.gate_proj.weight": ("mlp_gate", 0),
    "model.layers.0.mlp.up_proj.weight": ("mlp_up", 0),
    "model.layers.0.mlp.down_proj.weight": ("mlp_down", 0),
    "model.layers.0.input_layernorm.weight": ("norm", 0),
    "model.layers.0.post_attention_layernorm.weight": ("norm", 0),
    "model.layers.0.self_attn.q_norm.weight": ("norm", 0),
    "model.norm.weight": ("norm", None),
    "lm_head.weight": ("lm_head", None),
    "model.layers.0.self_attn.rotary_emb.inv_freq": ("other", 0),
    "model.layers.3.mlp.gate_up_proj.weight": ("mlp_gate_up", 3),
    "model.layers.3.self_attn.qkv_proj.weight": ("attn_qkv", 3),
    # GPT-2
    "transformer.wte.weight": ("embedding", None),
    "transformer.wpe.weight": ("position_embedding", None),
    "transformer.h.5.attn.c_attn.weight": ("attn_qkv", 5),
    "transformer.h.5.attn.c_proj.weight": ("attn_o", 5),
    "transformer.h.5.mlp.c_fc.weight": ("mlp_up", 5),
    "transformer.h.5.mlp.c_proj.weight": ("mlp_down", 5),
    "transformer.h.5.mlp.c_proj.bias": ("bias", 5),
    "transformer.h.5.ln_1.weight": ("norm", 5),
    "transformer.ln_f.weight": ("norm", None),
    "h.5.attn.bias": ("other", 5),  # the causal-mask buffer of old GPT-2 checkpoints
    # GPT-NeoX
    "gpt_neox.embed_in.weight": ("embedding", None),
    "gpt_neox.layers.2.attention.query_key_value.weight": ("attn_qkv", 2),
    "gpt_neox.layers.2.attention.dense.weight": ("attn_o", 2),
    "gpt_neox.layers.2.mlp.dense_h_to_4h.weight": ("mlp_up", 2),
    "gpt_neox.layers.2.mlp.dense_4h_to_h.weight": ("mlp_down", 2),
    "gpt_neox.final_layer_norm.weight": ("norm", None),
    "embed_out.weight": ("lm_head", None),
    # BERT
    "embeddings.word_embeddings.weight": ("embedding", None),
    "embeddings.position_embeddings.weight": ("position_embedding", None),
    "embeddings.token_type_embeddings.weight": ("embedding", None),
    "embeddings.LayerNorm.weight": ("norm", None),
    "embeddings.LayerNorm.bias": ("bias", None),
    "encoder.layer.4.attention.self.query.weight": ("attn_q", 4),
    "encoder.layer.4.attention.self.key.weight": ("attn_k", 4),
    "encoder.layer.4.attention.self.value.weight": ("attn_v", 4),
    "encoder.layer.4.attention.output.dense.weight": ("attn_o", 4),
    "encoder.layer.4.attention.output.LayerNorm.weight": ("norm", 4),
    "encoder.layer.4.intermediate.dense.weight": ("mlp_up", 4),
    "encoder.layer.4.output.dense.weight": ("mlp_down", 4),
    "encoder.layer.4.output.LayerNorm.weight": ("norm", 4),
    "pooler.dense.weight": ("other", None),
    "cls.predictions.decoder.weight": ("lm_head", None),
    "cls.predictions.bias": ("bias", None),
    "embeddings.position_ids": ("other", None),
    # T5
    "shared.weight": ("embedding", None),
    "encoder.block.1.layer.0.SelfAttention.q.weight": ("attn_q", 1),
    "encoder.block.1.layer.0.SelfAttention.k.weight": ("attn_k", 1),
    "encoder.block.1.layer.0.SelfAttention.v.weight": ("attn_v", 1),
    "encoder.block.1.layer.0.SelfAttention.o.weight": ("attn_o", 1),
    "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
        ("position_embedding", 0),
    "decoder.block.1.layer.1.EncDecAttention.q.weight": ("attn_q", 1),
    "decoder.block.1.layer.2.DenseReluDense.wi.weight": ("mlp_up", 1),
    "decoder.block.1.layer.2.DenseReluDense.wi_0.weight": ("mlp_gate", 1),
    "decoder.block.1.layer.2.DenseReluDense.wi_1.weight": ("mlp_up", 1),
    "decoder.block.1.layer.2.DenseReluDense.wo.weight": ("mlp_down", 1),
    "decoder.block.1.layer.2.layer_norm.weight": ("norm", 1),
    "encoder.final_layer_norm.weight": ("norm", None),
    # Mixtral (on disk and fused in memory) and Qwen-MoE
    "model.layers.7.block_sparse_moe.gate.weight": ("moe_router", 7),
    "model.layers.7.block_sparse_moe.experts.3.w1.weight": ("moe_expert", 7),
    "model.layers.7.block_sparse_moe.experts.3.w2.weight": ("moe_expert", 7),
    "model.layers.7.mlp.experts.gate_up_proj": ("moe_expert", 7),
    "model.layers.7.mlp.experts.down_proj": ("moe_expert", 7),
    "model.layers.7.mlp.gate.weight": ("moe_router", 7),
    "model.layers.7.mlp.experts.12.gate_proj.weight": ("moe_expert", 7),
    "model.layers.7.mlp.shared_expert.up_proj.weight": ("moe_expert", 7),
    "model.layers.7.mlp.shared_expert_gate.weight": ("moe_router", 7),
    # Falcon, GPT-J, DeepSeek (MLA)
    "transformer.h.1.self_attention.query_key_value.weight": ("attn_qkv", 1),
    "transformer.h.1.self_attention.dense.weight": ("attn_o", 1),
    "transformer.h.1.mlp.fc_in.weight": ("mlp_up", 1),
    "transformer.h.1.mlp.fc_out.weight": ("mlp_down", 1),
    "model.layers.4.self_attn.q_a_proj.weight": ("attn_q", 4),
    "model.layers.4.self_attn.kv_b_proj.weight": ("attn_qkv", 4),
    "model.layers.4.self_attn.kv_a_layernorm.weight": ("norm", 4),
    # Meta's original Llama names
    "layers.2.attention.wq.weight": ("attn_q", 2),
    "layers.2.attention.wo.weight": ("attn_o", 2),
    "layers.2.feed_forward.w1.weight": ("mlp_gate", 2),
    "layers.2.feed_forward.w2.weight": ("mlp_down", 2),
    "layers.2.feed_forward.w3.weight": ("mlp_up", 2),
    "tok_embeddings.weight": ("embedding", None),
    # raw GGUF names (when the reader could not map them)
    "token_embd.weight": ("embedding", None),
    "blk.9.attn_q.weight": ("attn_q", 9),
    "blk.9.attn_output.weight": ("attn_o", 9),
    "blk.9.ffn_gate.weight": ("mlp_gate", 9),
    "blk.9.ffn_down.weight": ("mlp_down", 9),
    "blk.9.ffn_gate_inp.weight": ("moe_router", 9),
    "blk.9.ffn_up_exps.weight": ("moe_expert", 9),
    "blk.9.attn_norm.weight": ("norm", 9),
    "output_norm.weight": ("norm", None),
    "output.weight": ("lm_head", None),
    "something.else": ("other", None),
}


@pytest.mark.parametrize("name", list(KIND_CASES))
def test_kind_and_block(name: str) -> None:
    assert kind_and_block(name) == KIND_CASES[name]
    assert KIND_CASES[name][0] in KINDS


def test_wrappers_only_matter_for_matching() -> None:
    for wrapped in ("base_model.model.model.layers.1.self_attn.q_proj.weight",
                    "_orig_mod.model.layers.1.self_attn.q_proj.weight"):
        assert kind_and_block(wrapped) == ("attn_q", 1)
    c = ckpt(["model.layers.1.self_attn.q_proj.weight"])
    annotate(c)
    assert c.tensors[0].hf_name == "model.layers.1.self_attn.q_proj.weight"


def test_annotate_keeps_reader_hf_name_and_gguf_raw_names() -> None:
    mapped = ref("blk.0.attn_k.weight", hf_name="model.layers.0.self_attn.k_proj.weight")
    raw = ref("blk.0.ffn_up.weight")
    c = ckpt([mapped, raw], fmt="gguf")
    annotate(c)
    assert (mapped.kind, mapped.block) == ("attn_k", 0)
    assert mapped.hf_name == "model.layers.0.self_attn.k_proj.weight"
    assert (raw.kind, raw.block, raw.hf_name) == ("mlp_up", 0, None)


LLAMA = [
    "model.embed_tokens.weight",
    *[f"model.layers.{i}.{m}.weight" for i in range(12) for m in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
        "post_attention_layernorm")],
    "model.norm.weight",
    "lm_head.weight",
]


def test_tree_shape_and_numeric_block_order() -> None:
    import random

    names = LLAMA[:]
    random.Random(0).shuffle(names)  # files list tensors alphabetically (layers.10 < layers.2)
    c = ckpt(names)
    annotate(c)
    root = build_tree(c.tensors)
    labels = [n.label for n in root.children]
    assert labels == ["embeddings", *[f"block {i}" for i in range(12)], "head"]
    block2 = root.children[3]
    assert (block2.key, block2.block, block2.group) == ("block:2", 2, "block")
    assert [g.label for g in block2.children] == ["attention", "mlp", "norms"]
    attn = block2.children[0]
    assert [t.tensor.kind for t in attn.children] == ["attn_q", "attn_k", "attn_v", "attn_o"]
    assert attn.children[0].label == "self_attn.q_proj.weight"
    assert attn.children[0].key == "t:model.layers.2.self_attn.q_proj.weight"
    assert [t.tensor.kind for t in block2.children[1].children] == [
        "mlp_gate", "mlp_up", "mlp_down"]
    head = root.children[-1]
    assert [t.tensor.name for t in head.children] == ["model.norm.weight", "lm_head.weight"]
    order = tree_order(c.tensors)
    assert len(order) == len(LLAMA)
    assert order[0].name == "model.embed_tokens.weight"
    assert order[1].name == "model.layers.0.self_attn.q_proj.weight"
    keys = [n.key for n in root.walk()]
    assert len(keys) == len(set(keys))


def test_biases_stay_with_their_module() -> None:
    names = [f"transformer.h.0.{m}.{p}" for m in ("attn.c_attn", "attn.c_proj", "ln_1")
             for p in ("bias", "weight")]
    c = ckpt(names, config={"model_type": "gpt2"})
    annotate(c)
    block = build_tree(c.tensors).children[0]
    attn = block.children[0]
    assert [t.label for t in attn.children] == [
        "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias"]
    assert [t.label for t in block.children[1].children] == ["ln_1.weight", "ln_1.bias"]
    assert "Conv1D" in (c.tensor("transformer.h.0.attn.c_attn.weight").note or "")
    assert c.tensor("transformer.h.0.attn.c_attn.bias").note is None


def test_conv1d_note_only_for_gpt2() -> None:
    c = ckpt(["transformer.h.0.attn.c_attn.weight"], config={"model_type": "gpt_bigcode"})
    annotate(c)
    assert c.tensors[0].note is None


def test_t5_encoder_and_decoder_blocks_are_distinct() -> None:
    names = [f"{s}.block.{i}.layer.0.SelfAttention.q.weight" for s in ("decoder", "encoder")
             for i in (1, 0)] + ["shared.weight", "encoder.embed_tokens.weight"]
    c = ckpt(names, config={"tie_word_embeddings": True})
    annotate(c)
    root = build_tree(c.tensors)
    assert [n.label for n in root.children] == [
        "embeddings", "encoder block 0", "encoder block 1", "decoder block 0", "decoder block 1"]
    assert [n.key for n in root.children[1:]] == [
        "encoder:block:0", "encoder:block:1", "decoder:block:0", "decoder:block:1"]
    enc = c.tensor("encoder.embed_tokens.weight")
    assert enc.tied_to == "shared.weight"
    assert [t.name for t in root.children[0].iter_tensors()] == ["shared.weight"]


def test_single_stack_blocks_have_plain_labels() -> None:
    c = ckpt([f"encoder.layer.{i}.attention.self.query.weight" for i in range(3)])
    annotate(c)
    assert [n.label for n in build_tree(c.tensors).children] == ["block 0", "block 1", "block 2"]


def test_tied_lm_head_is_shown_once_with_a_note() -> None:
    c = ckpt(["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"],
             config={"tie_word_embeddings": True, "architectures": ["LlamaForCausalLM"]})
    annotate(c)
    head, embed = c.tensor("lm_head.weight"), c.tensor("model.embed_tokens.weight")
    assert head.tied_to == "model.embed_tokens.weight"
    assert "lm_head.weight" in embed.note
    assert [t.name for t in tree_order(c.tensors)] == ["model.embed_tokens.weight",
                                                       "model.norm.weight"]
    assert c.n_params == 128  # the tied copy is not counted twice


def test_untied_lm_head_is_kept() -> None:
    c = ckpt(["model.embed_tokens.weight", "lm_head.weight"],
             config={"tie_word_embeddings": False})
    annotate(c)
    assert c.tensor("lm_head.weight").tied_to is None
    assert c.tensor("model.embed_tokens.weight").note is None


def test_absent_lm_head_notes_the_embedding_for_lms_only() -> None:
    lm = ckpt(["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"],
              config={"tie_word_embeddings": True, "architectures": ["GemmaForCausalLM"]})
    annotate(lm)
    assert "lm_head" in lm.tensor("model.embed_tokens.weight").note
    encoder = ckpt(["embeddings.word_embeddings.weight", "encoder.layer.0.output.dense.weight"],
                   config={"tie_word_embeddings": True, "architectures": ["BertModel"]})
    annotate(encoder)
    assert encoder.tensor("embeddings.word_embeddings.weight").note is None
    gguf = ckpt([ref("token_embd.weight", hf_name="model.embed_tokens.weight"),
                 ref("blk.0.attn_q.weight", hf_name="model.layers.0.self_attn.q_proj.weight")],
                fmt="gguf")
    annotate(gguf)
    assert "lm_head" in gguf.tensor("token_embd.weight").note


def test_shared_storage_from_the_reader() -> None:
    class Reader:
        def storage_key(self, r: TensorRef) -> object:
            return 0 if r.kind in ("embedding", "lm_head") else None

        def load(self, *a: object, **k: object) -> None: ...
        def close(self) -> None: ...

    refs = [ref("wte.weight"), ref("lm_head.weight"), ref("h.0.mlp.c_fc.weight")]
    for r in refs:
        r.reader = Reader()
    c = ckpt(refs, config={"tie_word_embeddings": False})
    annotate(c)
    assert refs[1].tied_to == "wte.weight"
    assert refs[2].tied_to is None


def test_moe_experts_get_their_own_node_in_numeric_order() -> None:
    names = ["model.layers.0.block_sparse_moe.gate.weight"] + [
        f"model.layers.0.block_sparse_moe.experts.{e}.w{w}.weight"
        for e in (10, 2, 0, 1) for w in (1, 2, 3)]
    c = ckpt(names)
    annotate(c)
    mlp = build_tree(c.tensors).children[0].children[0]
    assert mlp.label == "mlp"
    assert mlp.children[0].tensor.kind == "moe_router"
    experts = mlp.children[1]
    assert (experts.group, experts.label) == ("experts", "experts (12)")
    assert [t.label for t in experts.children][:4] == [
        "block_sparse_moe.experts.0.w1.weight", "block_sparse_moe.experts.0.w3.weight",
        "block_sparse_moe.experts.0.w2.weight", "block_sparse_moe.experts.1.w1.weight"]
    assert experts.children[-1].label.startswith("block_sparse_moe.experts.10.")


def test_big_tree_builds_from_name_lists() -> None:
    """80 blocks x 9 tensors: the app builds this at start-up (timed in bench/, not here)."""
    names = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"] + [
        n.replace("layers.0.", f"layers.{i}.") for i in range(80) for n in LLAMA[1:10]]
    c = ckpt(names)
    annotate(c)
    root = build_tree(c.tensors)
    assert len(root.children) == 82
    assert root.children[80].label == "block 79"
    assert root.n_tensors == len(names)


def test_naming_imports_no_torch() -> None:
    code = ("import sys, wstui.checkpoint.naming as n; n.kind_and_block('lm_head.weight');"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_expert_parts_sort_gate_up_down() -> None:
    c = ckpt(["model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.experts.gate_up_proj",
              "model.layers.0.mlp.shared_expert.down_proj.weight",
              "model.layers.0.mlp.shared_expert.up_proj.weight",
              "model.layers.0.mlp.shared_expert.gate_proj.weight"])
    annotate(c)
    mlp = build_tree(c.tensors).children[0].children[0]
    assert [t.label for t in mlp.children] == [
        "mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.up_proj.weight",
        "mlp.experts.gate_up_proj", "mlp.experts.down_proj",
        "mlp.shared_expert.down_proj.weight"]
