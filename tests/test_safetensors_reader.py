"""safetensors reader: header-only open, upcasting, integer tensors, folders and shards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wstui.checkpoint import CheckpointError, open_checkpoint
from wstui.checkpoint.safetensors import SafetensorsReader


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, 6, generator=g)
    return {
        "model.layers.0.self_attn.q_proj.weight": base.to(torch.bfloat16),
        "model.layers.0.self_attn.k_proj.weight": base.to(torch.float16),
        "model.layers.0.mlp.up_proj.weight": base,
        "model.layers.0.mlp.down_proj.weight": base.to(torch.float64),
        "model.layers.0.e4m3.weight": base.to(torch.float8_e4m3fn),
        "model.layers.0.e5m2.weight": base.to(torch.float8_e5m2),
        "model.position_ids": torch.arange(10, dtype=torch.int64)[None],
        "model.mask": torch.ones(3, dtype=torch.bool),
        "model.norm.weight": torch.ones(6),
        "model.empty": torch.zeros(0, 4),
    }


def test_single_file_lists_and_upcasts(tmp_path: Path) -> None:
    sd = _tensors()
    path = tmp_path / "m.safetensors"
    save_file(sd, path, metadata={"format": "pt"})
    with open_checkpoint(path) as ckpt:
        assert ckpt.format == "safetensors"
        assert ckpt.files == [path]
        assert ckpt.metadata["safetensors_metadata"] == {"format": "pt"}
        by = {t.name: t for t in ckpt.tensors}
        assert set(by) == set(sd)
        expected_dtype = {
            "model.layers.0.self_attn.q_proj.weight": "BF16",
            "model.layers.0.self_attn.k_proj.weight": "F16",
            "model.layers.0.mlp.up_proj.weight": "F32",
            "model.layers.0.mlp.down_proj.weight": "F64",
            "model.layers.0.e4m3.weight": "F8_E4M3",
            "model.layers.0.e5m2.weight": "F8_E5M2",
            "model.position_ids": "I64",
            "model.mask": "BOOL",
        }
        for name, dt in expected_dtype.items():
            assert by[name].dtype == dt
        for name, t in sd.items():
            ref = by[name]
            assert ref.shape == tuple(t.shape)
            assert ref.nbytes == t.numel() * t.element_size()
            if t.is_floating_point():
                assert ref.analyzable
                got = ref.load()
                assert got.dtype == torch.float32
                assert torch.equal(got, t.to(torch.float32)), name
            else:
                assert not ref.analyzable
                assert "not analyzed" in ref.note
                with pytest.raises(CheckpointError):
                    ref.load()
        f64 = by["model.layers.0.mlp.down_proj.weight"].load(dtype=torch.float64)
        assert torch.equal(f64, sd["model.layers.0.mlp.down_proj.weight"])


def test_load_returns_independent_copies(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(4, 4)}, path)
    with open_checkpoint(path) as ckpt:
        a = ckpt.tensor("w").load()
        a.zero_()
        assert torch.equal(ckpt.tensor("w").load(), torch.ones(4, 4))
    # the loaded tensor outlives the closed reader; the closed reader loads no more
    assert a.sum().item() == 0
    with pytest.raises(CheckpointError, match="closed"):
        ckpt.tensor("w").load()


def test_open_reads_header_only_and_load_one_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(1000)}, path)
    reader = SafetensorsReader(path)
    assert reader._shared._fd is None  # nothing held open after reading the header
    refs = {r.name: r for r in reader.refs()}
    reads: list[int] = []
    real_read = reader._read_into

    def counting_read(buf: memoryview, off: int, name: str) -> None:
        reads.append(len(buf))
        real_read(buf, off, name)

    monkeypatch.setattr(reader, "_read_into", counting_read)
    got = reader.load(refs["a"], device="cpu", dtype=None, hf_layout=False)
    assert torch.equal(got, torch.arange(6.0).reshape(2, 3))
    assert reads == [24]  # exactly the bytes of "a"
    reader.close()
    assert reader._shared._fd is None


def test_file_shrinking_after_open(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(4, 4)}, path)
    reader = SafetensorsReader(path)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="file ends early"):
        reader.load(reader.refs()[0], device="cpu", dtype=None, hf_layout=False)
    reader.close()


def test_folder_and_sharded_index(tmp_path: Path) -> None:
    sd = _tensors()
    names = sorted(sd)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": {n: sd[n] for n in names[:half]},
        "model-00002-of-00002.safetensors": {n: sd[n] for n in names[half:]},
    }
    for fname, part in shards.items():
        save_file(part, tmp_path / fname)
    index = {"metadata": {}, "weight_map": {n: f for f, p in shards.items() for n in p}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for target in (tmp_path, tmp_path / "model.safetensors.index.json"):
        with open_checkpoint(target) as ckpt:
            assert ckpt.format == "safetensors"
            assert [f.name for f in ckpt.files] == sorted(shards)
            assert {t.name for t in ckpt.tensors} == set(sd)
            assert ckpt.config == {"model_type": "llama"}
            w = ckpt.tensor("model.layers.0.self_attn.q_proj.weight").load()
            assert torch.equal(w, sd["model.layers.0.self_attn.q_proj.weight"].float())


def test_folder_of_unindexed_files(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "a.safetensors")
    save_file({"b": torch.ones(3)}, tmp_path / "b.safetensors")
    with open_checkpoint(tmp_path) as ckpt:
        assert {t.name for t in ckpt.tensors} == {"a", "b"}
        assert ckpt.config is None


def test_duplicate_tensor_across_files(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "a.safetensors")
    save_file({"a": torch.ones(2)}, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match="also in"):
        open_checkpoint(tmp_path)


def test_a_failed_open_closes_the_shards_already_open(tmp_path: Path, monkeypatch) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "a.safetensors")
    save_file({"a": torch.ones(2)}, tmp_path / "b.safetensors")
    closed: list[Path] = []
    real_close = SafetensorsReader.close

    def close(self: SafetensorsReader) -> None:
        closed.append(self.path)
        real_close(self)

    monkeypatch.setattr(SafetensorsReader, "close", close)
    with pytest.raises(CheckpointError, match="also in"):
        open_checkpoint(tmp_path)
    assert sorted(p.name for p in closed) == ["a.safetensors", "b.safetensors"]


def test_open_does_not_import_torch(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(4, 4, dtype=torch.bfloat16)}, path)
    code = (
        "import sys; from wstui.checkpoint import open_checkpoint\n"
        f"c = open_checkpoint({str(path)!r}); assert len(c.tensors) == 1\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.real
def test_real_minilm_opens_without_torch(minilm_dir: Path) -> None:
    code = (
        "import sys; from wstui.checkpoint import open_checkpoint\n"
        f"c = open_checkpoint({str(minilm_dir)!r})\n"
        "assert len(c.tensors) == 104, len(c.tensors)\n"
        "assert c.config['model_type'] == 'bert'\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_load_off_cpu_moves_then_upcasts(tmp_path: Path) -> None:
    """The non-CPU path, checked on the meta device (no GPU needed)."""
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(3, 2, dtype=torch.bfloat16)}, path)
    with open_checkpoint(path) as ckpt:
        t = ckpt.tensor("w").load(device="meta")
        assert t.device.type == "meta" and t.dtype == torch.float32 and t.shape == (3, 2)
        same = ckpt.tensor("w").load(device="cpu:0", dtype=torch.bfloat16)
        same.zero_()
        assert ckpt.tensor("w").load().sum().item() == 6


def test_concurrent_loads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "m.safetensors"
    sd = {f"w{i}": torch.full((16, 16), float(i)) for i in range(16)}
    save_file(sd, path)
    with open_checkpoint(path) as ckpt, ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda n: ckpt.tensor(n).load(), sd))
        assert all(torch.equal(g, sd[n]) for g, n in zip(got, sd))
