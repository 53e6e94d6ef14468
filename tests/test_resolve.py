"""Path resolution: files by extension, folder preference order, cached HF repo ids."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wstui.checkpoint import CheckpointError, open_checkpoint
from wstui.checkpoint.resolve import hf_cache_dir


def _fake_cache(root: Path, repo: str, revs: list[str], main: str | None) -> Path:
    """A hub cache laid out like huggingface_hub's: refs/main, snapshots/<rev>/ files."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True)
    for i, rev in enumerate(revs):
        snap = repo_dir / "snapshots" / rev
        snap.mkdir(parents=True)
        # files in a snapshot are relative symlinks into blobs/, as huggingface_hub makes them
        save_file({f"rev{i}": torch.ones(2)}, blobs / f"weights{i}")
        (blobs / f"config{i}").write_text(json.dumps({"model_type": "llama", "rev": rev}))
        (snap / "model.safetensors").symlink_to(Path("../../blobs") / f"weights{i}")
        (snap / "config.json").symlink_to(Path("../../blobs") / f"config{i}")
        t = time.time() - 100 + i
        os.utime(snap, (t, t))
    if main is not None:
        (repo_dir / "refs").mkdir(parents=True)
        (repo_dir / "refs" / "main").write_text(main + "\n")
    return repo_dir


def _clear_hf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)


def test_cache_dir_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_hf_env(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert hf_cache_dir() == tmp_path / "hfhome" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert hf_cache_dir() == tmp_path / "hubcache"


def test_repo_id_uses_refs_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_hf_env(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _fake_cache(tmp_path, "org/tiny", ["aaa", "bbb"], main="aaa")
    with open_checkpoint("org/tiny") as ckpt:
        assert ckpt.path == tmp_path / "models--org--tiny" / "snapshots" / "aaa"
        assert [t.name for t in ckpt.tensors] == ["rev0"]
        assert ckpt.config["rev"] == "aaa"
        assert ckpt.metadata["repo_id"] == "org/tiny"


def test_repo_id_with_missing_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_hf_env(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    repo = _fake_cache(tmp_path, "org/tiny", ["aaa"], main="aaa")
    (repo / "blobs" / "weights0").unlink()  # an interrupted download
    with pytest.raises(CheckpointError, match="broken link") as err:
        open_checkpoint("org/tiny")
    assert str(repo / "snapshots" / "aaa" / "model.safetensors") in str(err.value)


def test_folder_with_only_gguf(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    w = gguf.GGUFWriter(tmp_path / "m.gguf", "llama")
    w.add_block_count(1)
    w.add_tensor("blk.0.attn_v.weight", np.ones((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "gguf"
        assert ckpt.tensors[0].hf_name == "model.layers.0.self_attn.v_proj.weight"


def test_repo_id_newest_snapshot_without_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_hf_env(monkeypatch)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    _fake_cache(tmp_path / "hf" / "hub", "org/tiny", ["old", "new"], main=None)
    with open_checkpoint("org/tiny") as ckpt:
        assert ckpt.path.name == "new"


def test_repo_id_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_hf_env(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as err:
        open_checkpoint("org/missing-model")
    msg = str(err.value)
    assert "\n" not in msg
    assert "org/missing-model" in msg
    assert "not in the local Hugging Face cache" in msg
    assert "never downloads" in msg
    assert str(tmp_path / "empty") in msg


def test_existing_path_wins_over_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "tiny").mkdir(parents=True)
    save_file({"local": torch.ones(2)}, tmp_path / "org" / "tiny" / "model.safetensors")
    with open_checkpoint("org/tiny") as ckpt:
        assert [t.name for t in ckpt.tensors] == ["local"]


def test_folder_prefers_safetensors_over_bin(tmp_path: Path) -> None:
    save_file({"st": torch.ones(2)}, tmp_path / "model.safetensors")
    torch.save({"pt": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    torch.save({"args": 1}, tmp_path / "training_args.bin")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "safetensors"
    (tmp_path / "model.safetensors").unlink()
    with open_checkpoint(tmp_path) as ckpt:  # training_args.bin is not a weight file
        assert ckpt.format == "torch"
        assert [f.name for f in ckpt.files] == ["pytorch_model.bin"]
        assert ckpt.notes == []  # nothing else beside it


def _tiny_gguf(path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_tensor("blk.0.attn_v.weight", np.ones((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_folder_with_several_checkpoints_says_so(tmp_path: Path) -> None:
    """Issue 15.12: a folder holding safetensors and a GGUF opens the safetensors and names
    the GGUF in a note; a folder of several GGUF checkpoints is refused with their names
    (a split set counts once)."""
    save_file({"st": torch.ones(2)}, tmp_path / "model.safetensors")
    _tiny_gguf(tmp_path / "model-q8_0.gguf")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "safetensors"
        assert len(ckpt.notes) == 1 and "model-q8_0.gguf" in ckpt.notes[0]
        assert "opened its safetensors weights" in ckpt.notes[0]
    ggufs = tmp_path / "ggufs"
    ggufs.mkdir()
    _tiny_gguf(ggufs / "m-q4.gguf")
    _tiny_gguf(ggufs / "m-q8.gguf")
    with pytest.raises(CheckpointError, match=r"holds 2 GGUF checkpoints.*m-q4\.gguf, m-q8"):
        open_checkpoint(ggufs)
    with open_checkpoint(ggufs / "m-q8.gguf") as ckpt:  # naming one opens it
        assert ckpt.format == "gguf"


def test_bad_config_json_is_a_note(tmp_path: Path) -> None:
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{not json")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.config is None
        assert any("config.json" in n for n in ckpt.metadata["notes"])


def test_config_beside_a_single_file(tmp_path: Path) -> None:
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with open_checkpoint(tmp_path / "model.safetensors") as ckpt:
        assert ckpt.config == {"model_type": "gpt2"}


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unsupported file type \.npz") as err:
        open_checkpoint(path)
    assert str(path) in str(err.value)


def test_index_disagreeing_with_shards_is_noted(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2), "stray": torch.ones(1)}, tmp_path / "s1.safetensors")
    save_file({"b": torch.ones(2)}, tmp_path / "s2.safetensors")
    weight_map = {"a": "s1.safetensors", "b": "s1.safetensors", "ghost": "s2.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with open_checkpoint(tmp_path) as ckpt:
        assert {t.name for t in ckpt.tensors} == {"a", "b", "stray"}
        notes = " | ".join(ckpt.metadata["notes"])
        assert "in no shard, e.g. ghost" in notes
        assert "in another shard, e.g. b" in notes
        assert "not in the index, e.g. stray" in notes


def test_consistent_index_has_no_notes(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors"}})
    )
    with open_checkpoint(tmp_path) as ckpt:
        assert "notes" not in ckpt.metadata
        assert ckpt.metadata["index"].endswith("model.safetensors.index.json")


def test_bare_repo_id_in_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_hf_env(monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    _fake_cache(tmp_path / "hub", "gpt2", ["r1"], main="r1")
    with open_checkpoint("gpt2") as ckpt:
        assert ckpt.metadata["repo_id"] == "gpt2"
    with pytest.raises(CheckpointError, match="does not exist"):
        open_checkpoint("not-cached-and-not-a-path")


def test_consolidated_duplicate_is_skipped(tmp_path: Path) -> None:
    save_file({"model.embed_tokens.weight": torch.ones(2)}, tmp_path / "model.safetensors")
    save_file({"tok_embeddings.weight": torch.ones(2)}, tmp_path / "consolidated.safetensors")
    with open_checkpoint(tmp_path) as ckpt:
        assert [f.name for f in ckpt.files] == ["model.safetensors"]
    (tmp_path / "model.safetensors").unlink()
    with open_checkpoint(tmp_path) as ckpt:
        assert [f.name for f in ckpt.files] == ["consolidated.safetensors"]
