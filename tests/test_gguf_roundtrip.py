"""write_gguf and the GGUF reader agree with the safetensors a tiny llama came from."""

from __future__ import annotations

import numpy as np
import pytest

from wstui.checkpoint.gguf_names import gguf_to_hf, hf_to_gguf
from wstui.checkpoint.gguf_write import permute_qk, unpermute_qk, write_gguf

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    return model.state_dict(), cfg.to_dict()


def test_permute_is_inverted():
    w = np.arange(32 * 5, dtype=np.float32).reshape(32, 5)
    p = permute_qk(w, 4)
    assert not np.array_equal(p, w)
    assert np.array_equal(unpermute_qk(p, 4), w)
    b = np.arange(32, dtype=np.float32)
    assert np.array_equal(unpermute_qk(permute_qk(b, 2), 2), b)


def test_write_gguf_names_and_types(tiny_llama, tmp_path):
    sd, cfg = tiny_llama
    path = write_gguf(sd, cfg, tmp_path / "m.gguf", qtype="Q8_0")
    r = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.1.ffn_norm.weight"] == "F32"
    assert types["output.weight"] == "Q8_0"
    assert len(types) == len(sd)
    q = next(t for t in r.tensors if t.name == "blk.0.attn_k.weight")
    raw = gguf.quants.dequantize(q.data, q.tensor_type)
    want = permute_qk(sd["model.layers.0.self_attn.k_proj.weight"].numpy(), 2)
    np.testing.assert_allclose(raw, want, atol=np.abs(want).max() / 100)


def test_write_gguf_rejects_unknown_names(tiny_llama, tmp_path):
    sd, cfg = tiny_llama
    with pytest.raises(ValueError, match="no GGUF name"):
        write_gguf({"foo.bar": sd["model.norm.weight"]}, cfg, tmp_path / "x.gguf")


def test_names_round_trip_llama():
    for hf in ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
               "model.layers.11.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight",
               "model.layers.40.post_attention_layernorm.weight"]:
        assert gguf_to_hf(hf_to_gguf(hf, "llama"), "llama") == hf
    assert hf_to_gguf("model.layers.3.self_attn.q_proj.weight", "llama") == "blk.3.attn_q.weight"
    assert gguf_to_hf("output.weight", "llama") == "lm_head.weight"
    experts = gguf_to_hf("blk.2.ffn_gate_exps.weight", "llama")
    assert experts == "model.layers.2.mlp.experts.gate_proj"
    assert gguf_to_hf("blk.0.attn_q.weight", "no-such-arch") is None
    assert hf_to_gguf("model.layers.0.rotary_emb.inv_freq", "llama") is None


def _safetensors(tmp_path, sd) -> dict[str, np.ndarray]:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k).numpy() for k in f.keys()}  # noqa: SIM118


def test_gguf_matches_safetensors_after_hf_layout(tiny_llama, tmp_path):
    from wstui.checkpoint.gguf import open_files

    sd, cfg = tiny_llama
    st = _safetensors(tmp_path, sd)
    path = write_gguf(sd, cfg, tmp_path / "m.gguf", qtype="F32")
    refs, readers, meta = open_files([path])
    assert meta["llama.attention.head_count"] == 4
    assert meta["llama.attention.head_count_kv"] == 2
    assert {r.hf_name for r in refs} == set(st)
    permuted = 0
    for ref in refs:
        want = st[ref.hf_name]
        assert ref.shape == want.shape, ref.name
        np.testing.assert_array_equal(ref.load(hf_layout=True).numpy(), want)
        raw = ref.load().numpy()
        if ".attn_q." in ref.name or ".attn_k." in ref.name:
            assert not np.array_equal(raw, want), ref.name
            permuted += 1
        else:
            np.testing.assert_array_equal(raw, want)
    assert permuted == 4
    for r in readers:
        r.close()


def test_q8_gguf_close_to_safetensors(tiny_llama, tmp_path):
    from wstui.checkpoint.gguf import open_files

    sd, cfg = tiny_llama
    refs, _, _ = open_files([write_gguf(sd, cfg, tmp_path / "q8.gguf")])
    for ref in refs:
        want = sd[ref.hf_name].numpy()
        got = ref.load(hf_layout=True).numpy()
        err = np.sqrt(np.mean((got - want) ** 2) / np.mean(want**2))
        assert err < (1e-2 if want.ndim == 2 else 1e-7), ref.name
        assert ref.dtype == ("Q8_0" if want.ndim == 2 else "F32")


def _tiny_names(arch: str) -> list[str]:
    """State-dict names of a tiny random-init transformers model (built on the meta device)."""
    t = pytest.importorskip("transformers")
    common = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64)
    cfg, cls = {
        "llama": (lambda: t.LlamaConfig(num_key_value_heads=2, **common), "LlamaForCausalLM"),
        "qwen2": (lambda: t.Qwen2Config(num_key_value_heads=2, **common), "Qwen2ForCausalLM"),
        "gemma": (lambda: t.GemmaConfig(head_dim=8, **common), "GemmaForCausalLM"),
        "phi3": (lambda: t.Phi3Config(pad_token_id=0, **common), "Phi3ForCausalLM"),
        "gpt2": (lambda: t.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4),
                 "GPT2LMHeadModel"),
        "gptneox": (lambda: t.GPTNeoXConfig(**common), "GPTNeoXForCausalLM"),
        "bert": (lambda: t.BertConfig(**common), "BertModel"),
    }[arch]
    with torch.device("meta"):
        model = getattr(t, cls)(cfg())
    return list(model.state_dict())


# HF tensors llama.cpp's converter drops (tied heads, BERT's pooler): no GGUF name
_NO_GGUF = {"gemma": {"lm_head.weight"}, "bert": {"pooler.dense.weight", "pooler.dense.bias"}}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "phi3", "gpt2", "gptneox", "bert"])
def test_names_round_trip_through_transformers_models(arch):
    names = _tiny_names(arch)
    for hf in names:
        g = hf_to_gguf(hf, arch)
        if hf in _NO_GGUF.get(arch, set()):
            assert g is None, hf
            continue
        assert g is not None, hf
        assert gguf_to_hf(g, arch) == hf, (hf, g)


def test_open_checkpoint_end_to_end(tiny_llama, tmp_path):
    """resolve -> gguf.open_files -> naming: kinds and blocks come from the HF names."""
    from wstui.checkpoint import open_checkpoint

    sd, cfg = tiny_llama
    path = write_gguf(sd, cfg, tmp_path / "e2e.gguf", qtype="Q4_0")
    with open_checkpoint(path) as ckpt:
        assert ckpt.format == "gguf" and len(ckpt.tensors) == len(sd)
        assert ckpt.metadata["general.architecture"] == "llama"
        q = ckpt.tensor("model.layers.1.self_attn.q_proj.weight")
        assert (q.name, q.kind, q.block, q.dtype) == ("blk.1.attn_q.weight", "attn_q", 1, "Q4_0")
        assert ckpt.tensor("output.weight").kind == "lm_head"
        assert ckpt.tensor("token_embd.weight").kind == "embedding"
