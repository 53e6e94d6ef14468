"""PyTorch pickle reader: weights-only, pread loads, nested state dicts, shards, dtypes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wstui.checkpoint import CheckpointError, open_checkpoint
from wstui.checkpoint.torch_bin import TorchReader, dtype_name, unwrap


def _sd() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 6, generator=g)
    return {
        "layers.0.q.weight": w.to(torch.bfloat16),
        "layers.0.k.weight": w.to(torch.float16),
        "layers.0.v.weight": w,
        "layers.0.e4m3.weight": w.to(torch.float8_e4m3fn),
        "layers.0.e5m2.weight": w.to(torch.float8_e5m2),
        "position_ids": torch.arange(5),
    }


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth"])
def test_single_file(tmp_path: Path, suffix: str) -> None:
    sd = _sd()
    path = tmp_path / f"weights{suffix}"
    torch.save(sd, path)
    with open_checkpoint(path) as ckpt:
        assert ckpt.format == "torch"
        by = {t.name: t for t in ckpt.tensors}
        assert list(by) == list(sd)
        assert [by[n].dtype for n in sd] == ["BF16", "F16", "F32", "F8_E4M3", "F8_E5M2", "I64"]
        for name, t in sd.items():
            ref = by[name]
            assert ref.shape == tuple(t.shape)
            assert ref.nbytes == t.numel() * t.element_size()
            if t.is_floating_point():
                assert torch.equal(ref.load(), t.float()), name
            else:
                assert not ref.analyzable and "not analyzed" in ref.note


def test_not_mapped_and_independent_copies(tmp_path: Path) -> None:
    """Opening reads the pickle only; a load reads the tensor's bytes into a fresh buffer (no
    map: a map's page past the end of a file that shrank is SIGBUS)."""
    path = tmp_path / "w.bin"
    torch.save({"w": torch.ones(4, 4)}, path)
    reader = TorchReader(path)
    assert reader.mode == "disk" and reader.tensors["w"].device.type == "meta"
    ref = reader.refs()[0]
    a = reader.load(ref, device="cpu", dtype=torch.float32, hf_layout=False)
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the checkpoint is never mapped into the process
        assert str(path) not in maps.read_text()
    a.zero_()
    b = reader.load(ref, device="cpu", dtype=torch.float32, hf_layout=False)
    assert torch.equal(b, torch.ones(4, 4))
    reader.close()
    assert reader.tensors is None
    with pytest.raises(CheckpointError, match="closed"):
        reader.load(ref, device="cpu", dtype=torch.float32, hf_layout=False)


def test_legacy_non_zip_format(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"w": torch.arange(6.0)}, path, _use_new_zipfile_serialization=False)
    with open_checkpoint(path) as ckpt:
        assert torch.equal(ckpt.tensor("w").load(), torch.arange(6.0))


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "module", "model_state_dict"])
def test_nested_state_dict(tmp_path: Path, wrapper: str) -> None:
    sd = {"a.weight": torch.ones(3, 2), "a.bias": torch.zeros(3)}
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}, wrapper: sd}, path)
    with open_checkpoint(path) as ckpt:
        assert [t.name for t in ckpt.tensors] == ["a.weight", "a.bias"]


def test_unwrap_flattens_and_drops_non_tensors() -> None:
    obj = {"step": 1, "encoder": {"w": torch.ones(1)}, "head": torch.ones(2), "names": ["x"]}
    assert list(unwrap(obj)) == ["encoder.w", "head"]
    assert list(unwrap({"module": {"model": {"w": torch.ones(1)}}})) == ["w"]
    step = {"global_step": torch.tensor(5), "state_dict": {"w": torch.ones(2)}}
    assert list(unwrap(step)) == ["w"]


def test_tied_storage_is_marked(tmp_path: Path) -> None:
    emb = torch.randn(10, 4)
    path = tmp_path / "tied.bin"
    torch.save({"lm_head.weight": emb, "model.embed_tokens.weight": emb}, path)
    with open_checkpoint(path) as ckpt:
        # the reader reports shared storage, naming keeps the embedding as the original
        assert ckpt.tensor("lm_head.weight").tied_to == "model.embed_tokens.weight"
        assert ckpt.tensor("model.embed_tokens.weight").tied_to is None
        assert ckpt.n_params == 40


def test_sharded_index_and_folder(tmp_path: Path) -> None:
    sd = _sd()
    names = list(sd)
    shards = {
        "pytorch_model-00001-of-00002.bin": {n: sd[n] for n in names[:3]},
        "pytorch_model-00002-of-00002.bin": {n: sd[n] for n in names[3:]},
    }
    for fname, part in shards.items():
        torch.save(part, tmp_path / fname)
    index = {"metadata": {}, "weight_map": {n: f for f, p in shards.items() for n in p}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    for target in (tmp_path, tmp_path / "pytorch_model.bin.index.json"):
        with open_checkpoint(target) as ckpt:
            assert ckpt.format == "torch"
            assert [f.name for f in ckpt.files] == list(shards)
            assert [t.name for t in ckpt.tensors] == names
            q = ckpt.tensor("layers.0.q.weight").load()
            assert torch.equal(q, sd["layers.0.q.weight"].float())


def test_transformers_state_dict_bin(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    cfg.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "torch"
        assert ckpt.config["model_type"] == "llama"
        sd = model.state_dict()
        for ref in ckpt.tensors:
            assert torch.equal(ref.load(), sd[ref.name].float())


def test_dtype_names() -> None:
    assert dtype_name(torch.bfloat16) == "BF16"
    assert dtype_name(torch.int64) == "I64"
    assert dtype_name(torch.bool) == "BOOL"


def test_no_tensors(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError, match="no tensors"):
        open_checkpoint(path)


def test_load_off_cpu(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    torch.save({"w": torch.ones(3, 2, dtype=torch.float16)}, path)
    with open_checkpoint(path) as ckpt:
        t = ckpt.tensor("w").load(device="meta")
        assert t.device.type == "meta" and t.dtype == torch.float32
