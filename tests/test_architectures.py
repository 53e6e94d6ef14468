"""Kinds and tree for a tiny random-init model of every covered family, written by
`save_pretrained` (safetensors) and by `torch.save(state_dict)` (.bin), opened like a user would.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.models import FAMILIES, build_family_dirs
from wstui.checkpoint import open_checkpoint
from wstui.checkpoint.naming import build_tree

pytest.importorskip("transformers")

L = 2  # layers in every tiny config
E = 4  # Mixtral experts

_LLAMA = {"embedding": 1, "attn_q": L, "attn_k": L, "attn_v": L, "attn_o": L, "mlp_gate": L,
          "mlp_up": L, "mlp_down": L, "norm": 2 * L + 1, "lm_head": 1}

#: kinds of the tensors the tree shows (tied copies left out), per family and format
EXPECTED: dict[str, dict[str, dict[str, int]]] = {
    "llama": {"safetensors": _LLAMA, "bin": _LLAMA},
    "mistral": {"safetensors": _LLAMA, "bin": _LLAMA},
    "qwen2": {"safetensors": {**_LLAMA, "bias": 3 * L}, "bin": {**_LLAMA, "bias": 3 * L}},
    # Gemma ties lm_head: absent from safetensors, a shared-storage copy in the .bin
    "gemma": {"safetensors": {**_LLAMA, "lm_head": 0}, "bin": {**_LLAMA, "lm_head": 0}},
    "gpt2": {fmt: {"embedding": 1, "position_embedding": 1, "attn_qkv": L, "attn_o": L,
                   "mlp_up": L, "mlp_down": L, "norm": 2 * L + 1, "bias": 6 * L + 1}
             for fmt in ("safetensors", "bin")},
    "gpt_neox": {fmt: {"embedding": 1, "attn_qkv": L, "attn_o": L, "mlp_up": L, "mlp_down": L,
                       "norm": 2 * L + 1, "bias": 6 * L + 1, "lm_head": 1}
                 for fmt in ("safetensors", "bin")},
    "bert": {fmt: {"embedding": 2, "position_embedding": 1, "attn_q": L, "attn_k": L,
                   "attn_v": L, "attn_o": L, "mlp_up": L, "mlp_down": L, "norm": 2 * L + 1,
                   "bias": 8 * L + 2, "other": 1} for fmt in ("safetensors", "bin")},
    # T5: shared is the one embedding; encoder/decoder embed_tokens and lm_head are tied to it
    "t5": {fmt: {"embedding": 1, "position_embedding": 2, "attn_q": 3 * L, "attn_k": 3 * L,
                 "attn_v": 3 * L, "attn_o": 3 * L, "mlp_up": 2 * L, "mlp_down": 2 * L,
                 "norm": 5 * L + 2} for fmt in ("safetensors", "bin")},
    # Mixtral: one tensor per expert on disk, fused 3-D experts in memory (the .bin)
    "mixtral": {
        "safetensors": {"embedding": 1, "attn_q": L, "attn_k": L, "attn_v": L, "attn_o": L,
                        "moe_router": L, "moe_expert": 3 * E * L, "norm": 2 * L + 1,
                        "lm_head": 1},
        "bin": {"embedding": 1, "attn_q": L, "attn_k": L, "attn_v": L, "attn_o": L,
                "moe_router": L, "moe_expert": 2 * L, "norm": 2 * L + 1, "lm_head": 1},
    },
}

#: tensors tied to another one (left out of the tree), per family and format
TIED = {("gemma", "bin"): 1, ("gpt2", "bin"): 1, ("t5", "bin"): 3}


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Every family built once per session, saved both ways."""
    root = tmp_path_factory.mktemp("families")
    return {fam: build_family_dirs(fam, root) for fam in FAMILIES}


CASES = [(fam, fmt) for fam in FAMILIES for fmt in ("safetensors", "bin")]


@pytest.mark.parametrize(("family", "fmt"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_kinds_and_tree(family: str, fmt: str, family_dirs: dict) -> None:
    with open_checkpoint(family_dirs[family][fmt]) as ckpt:
        assert ckpt.format == ("safetensors" if fmt == "safetensors" else "torch")
        root = build_tree(ckpt.tensors)
        shown = list(root.iter_tensors())
        tied = [t for t in ckpt.tensors if t.tied_to is not None]
        assert len(shown) + len(tied) == len(ckpt.tensors)
        assert len(tied) == TIED.get((family, fmt), 0)
        want = {k: v for k, v in EXPECTED[family][fmt].items() if v}
        assert dict(Counter(t.kind for t in shown)) == want

        labels = [n.label for n in root.children]
        assert labels[0] == "embeddings"
        if family == "t5":
            assert labels[1:-1] == [f"{s} block {i}" for s in ("encoder", "decoder")
                                    for i in range(L)]
        else:
            assert labels[1:1 + L] == [f"block {i}" for i in range(L)]
        assert labels[-1] == "head"
        for node in root.children:
            if node.group != "block":
                continue
            groups = [c.group for c in node.children]
            assert groups[0] == "attention"
            assert groups == sorted(groups, key=["attention", "mlp", "norms", "other"].index)
            assert all(t.block == node.block for t in node.iter_tensors())
        assert all(t.block is None for n in root.children if n.group != "block"
                   for t in n.iter_tensors())


def test_ties_and_notes(family_dirs: dict) -> None:
    with open_checkpoint(family_dirs["gemma"]["bin"]) as ckpt:
        assert ckpt.tensor("lm_head.weight").tied_to == "model.embed_tokens.weight"
    with open_checkpoint(family_dirs["gemma"]["safetensors"]) as ckpt:
        assert "lm_head" in ckpt.tensor("model.embed_tokens.weight").note
    with open_checkpoint(family_dirs["t5"]["bin"]) as ckpt:
        assert {t.name for t in ckpt.tensors if t.tied_to == "shared.weight"} == {
            "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
        assert ckpt.n_params == sum(t.numel for t in ckpt.tensors) - 3 * 128 * 32
    with open_checkpoint(family_dirs["gpt2"]["safetensors"]) as ckpt:
        c_attn = ckpt.tensor("transformer.h.0.attn.c_attn.weight")
        assert c_attn.shape == (32, 96)  # Conv1D: in x out
        assert "Conv1D" in c_attn.note
    with open_checkpoint(family_dirs["llama"]["bin"]) as ckpt:
        assert all(t.tied_to is None and t.note is None for t in ckpt.tensors)


def test_gguf_names_give_the_same_tree(family_dirs: dict, tmp_path: Path) -> None:
    """A llama written as GGUF (llama.cpp names) lists the same kinds and blocks in the same
    order as the safetensors it came from."""
    import json

    from safetensors.torch import load_file

    from wstui.checkpoint.gguf_write import write_gguf
    from wstui.checkpoint.naming import tree_order

    src = family_dirs["llama"]["safetensors"]
    config = json.loads((src / "config.json").read_text())
    path = write_gguf(load_file(src / "model.safetensors"), config, tmp_path / "llama.gguf")
    with open_checkpoint(src) as st, open_checkpoint(path) as gg:
        want = [(t.hf_name, t.kind, t.block) for t in tree_order(st.tensors)]
        got = [(t.hf_name, t.kind, t.block) for t in tree_order(gg.tensors)]
        assert got == want
        assert gg.tensor("blk.1.attn_q.weight").kind == "attn_q"
