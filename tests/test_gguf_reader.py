"""The hand-written GGUF reader: every writable ggml type reads back, K-quants match
`gguf.quants`, metadata arrays are skipped, and broken files fail with one clear line."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from wstui.checkpoint.base import CheckpointError
from wstui.checkpoint.gguf import open_files, to_hf_layout

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
Q = gguf.GGMLQuantizationType


def write(path: Path, tensors, *, arch: str = "llama", vocab: int = 0, kv=None) -> Path:
    """A GGUF with `tensors` [(name, array, raw ggml type or None)] and optional tokenizer."""
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(2)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_array(f"{arch}.attention.sliding_window_pattern", [1, 0, 1])
    for k, v in (kv or {}).items():
        w.add_uint32(k, v)
    if vocab:
        w.add_tokenizer_model("gpt2")
        w.add_token_list([f"tok{i}" for i in range(vocab)])
        w.add_token_scores([0.0] * vocab)
        w.add_token_merges([f"a{i} b{i}" for i in range(vocab // 2)])
    for name, data, raw in tensors:
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def by_name(refs):
    return {r.name: r for r in refs}


RNG = np.random.default_rng(0)
W = RNG.standard_normal((48, 256)).astype(np.float32)

# (type, max relative RMS error against the float32 original)
TYPES = [("F32", 0.0), ("F16", 1e-3), ("BF16", 1e-2), ("Q8_0", 1e-2), ("Q4_0", 0.15),
         ("Q4_1", 0.15), ("Q5_0", 0.08), ("Q5_1", 0.08)]


@pytest.mark.parametrize(("qname", "tol"), TYPES)
def test_types_read_back_within_quantization_error(tmp_path, qname, tol):
    qt = Q[qname]
    data = gguf.quants.quantize(W, qt)
    raw = None if qname in ("F32", "F16") else qt
    path = write(tmp_path / f"{qname}.gguf", [("blk.0.ffn_up.weight", data, raw)])
    refs, readers, _ = open_files([path])
    ref = refs[0]
    assert ref.dtype == qname and ref.shape == (48, 256) and ref.analyzable
    assert ref.nbytes == gguf.quants.quant_shape_to_byte_shape((48, 256), qt)[-1] * 48
    got = ref.load().numpy()
    assert got.dtype == np.float32 and got.shape == W.shape
    np.testing.assert_array_equal(got, gguf.quants.dequantize(data, qt).reshape(W.shape))
    rel = np.sqrt(np.mean((got - W) ** 2) / np.mean(W**2))
    assert rel <= tol
    assert ref.load(dtype=torch.float16).dtype == torch.float16
    for r in readers:
        r.close()


def _kquant_blocks(qt, n_blocks: int) -> np.ndarray:
    """Random K-quant blocks whose f16 scales are finite (random bytes could be NaN/Inf)."""
    _, type_size = gguf.GGML_QUANT_SIZES[qt]
    b = RNG.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scales = RNG.uniform(0.001, 0.05, size=(n_blocks, 2)).astype(np.float16).view(np.uint8)
    if qt == Q.Q6_K:  # d is the last f16 of the block
        b[:, -2:] = scales[:, :2]
    else:  # Q2_K..Q5_K start with d, dmin (two f16)
        b[:, :4] = scales
    return b


@pytest.mark.parametrize("qname", ["Q4_K", "Q6_K", "Q5_K"])
def test_kquant_matches_gguf_dequantize(tmp_path, qname):
    qt = Q[qname]
    rows, cols = 8, 512  # 2 super-blocks of 256 per row
    blocks = _kquant_blocks(qt, rows * cols // 256).reshape(rows, -1)
    path = write(tmp_path / "k.gguf", [("blk.0.ffn_down.weight", blocks, qt)])
    (ref,), _, _ = open_files([path])
    assert (ref.dtype, ref.shape, ref.nbytes) == (qname, (rows, cols), blocks.size)
    got = ref.load().numpy()
    want = gguf.quants.dequantize(blocks, qt)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, want)


def test_shapes_in_pytorch_order_3d_and_1d(tmp_path):
    experts = RNG.standard_normal((4, 16, 32)).astype(np.float32)
    norm = RNG.standard_normal(32).astype(np.float32)
    path = write(tmp_path / "s.gguf", [("blk.0.ffn_down_exps.weight", experts, None),
                                       ("blk.0.attn_norm.weight", norm, None)])
    refs, _, _ = open_files([path])
    t = by_name(refs)
    assert t["blk.0.ffn_down_exps.weight"].shape == (4, 16, 32)
    np.testing.assert_array_equal(t["blk.0.ffn_down_exps.weight"].load().numpy(), experts)
    assert t["blk.0.attn_norm.weight"].shape == (32,)
    assert t["blk.0.attn_norm.weight"].hf_name == "model.layers.0.input_layernorm.weight"
    assert t["blk.0.ffn_down_exps.weight"].hf_name == "model.layers.0.mlp.experts.down_proj"


def test_metadata_scalars_kept_arrays_skipped(tmp_path, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("open_files must not use gguf.GGUFReader")

    monkeypatch.setattr(gguf, "GGUFReader", forbidden)
    monkeypatch.setattr(gguf.gguf_reader, "GGUFReader", forbidden)
    path = write(tmp_path / "tok.gguf", [("token_embd.weight", W, None)], vocab=50_000)
    refs, _, meta = open_files([path])
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 2
    assert meta["llama.attention.head_count"] == 4
    assert meta["llama.attention.head_count_kv"] == 2
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["llama.attention.sliding_window_pattern"] == [1, 0, 1]  # small array kept
    assert "tokenizer.ggml.tokens" not in meta
    assert meta["gguf.arrays"] == {"tokenizer.ggml.tokens": 50_000,
                                   "tokenizer.ggml.scores": 50_000,
                                   "tokenizer.ggml.merges": 25_000}
    np.testing.assert_array_equal(refs[0].load().numpy(), W)


def test_split_files_share_metadata(tmp_path):
    q = RNG.standard_normal((32, 64)).astype(np.float32)
    a = write(tmp_path / "m-00001-of-00002.gguf", [("token_embd.weight", W, None)])
    b_path = tmp_path / "m-00002-of-00002.gguf"
    w = gguf.GGUFWriter(b_path, "llama")  # a shard without the arch's head counts
    w.add_tensor("blk.0.attn_q.weight", q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    refs, readers, meta = open_files([a, b_path])
    assert [r.name for r in refs] == ["token_embd.weight", "blk.0.attn_q.weight"]
    assert len(readers) == 2 and meta["llama.attention.head_count"] == 4
    from wstui.checkpoint.gguf_write import unpermute_qk

    got = by_name(refs)["blk.0.attn_q.weight"].load(hf_layout=True).numpy()
    np.testing.assert_array_equal(got, unpermute_qk(q, 4))


def test_to_hf_layout_other_archs():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert to_hf_layout("blk.0.attn_qkv.weight", x, {"general.architecture": "gpt2"}).shape \
        == (4, 3)
    np.testing.assert_array_equal(
        to_hf_layout("blk.1.attn_norm.weight", x[0], {"general.architecture": "gemma"}),
        x[0] - 1)
    qwen = {"general.architecture": "qwen2", "qwen2.attention.head_count": 1}
    assert to_hf_layout("blk.0.attn_q.weight", x, qwen) is x  # qwen2 is not permuted


# ---------------------------------------------------------------- bad input


def assert_one_line(err: CheckpointError, path: Path, *words: str) -> None:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg, msg


@pytest.fixture
def good(tmp_path) -> Path:
    return write(tmp_path / "good.gguf",
                 [("blk.0.attn_q.weight", W[:32, :64].copy(), None),
                  ("blk.0.attn_k.weight", W[:16, :64].copy(), None)], vocab=100)


def test_bad_magic(tmp_path, good):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + good.read_bytes()[4:])
    with pytest.raises(CheckpointError) as e:
        open_files([bad])
    assert_one_line(e.value, bad, "magic")


def test_unsupported_version(tmp_path, good):
    bad = tmp_path / "v9.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<I", 9) + good.read_bytes()[8:])
    with pytest.raises(CheckpointError) as e:
        open_files([bad])
    assert_one_line(e.value, bad, "version 9")


@pytest.mark.parametrize("keep", [0, 10, 200, -100])
def test_truncated(tmp_path, good, keep):
    data = good.read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[:keep])
    with pytest.raises(CheckpointError) as e:
        open_files([bad])
    assert_one_line(e.value, bad, "truncated")


def test_unknown_ggml_type_lists_tensor_and_opens_the_rest(tmp_path, good):
    data = bytearray(good.read_bytes())
    name = b"blk.0.attn_k.weight"
    i = data.index(name) + len(name)
    n_dims = struct.unpack_from("<I", data, i)[0]
    type_at = i + 4 + 8 * n_dims
    assert struct.unpack_from("<I", data, type_at)[0] == 0  # F32
    struct.pack_into("<I", data, type_at, 99)
    bad = tmp_path / "t99.gguf"
    bad.write_bytes(bytes(data))
    refs, _, _ = open_files([bad])
    t = by_name(refs)
    k = t["blk.0.attn_k.weight"]
    assert not k.analyzable and k.note == "unsupported ggml type 99" and k.shape == (16, 64)
    with pytest.raises(CheckpointError):
        k.load()
    np.testing.assert_array_equal(t["blk.0.attn_q.weight"].load().numpy(), W[:32, :64])


def test_directory_and_missing(tmp_path):
    with pytest.raises(CheckpointError) as e:
        open_files([tmp_path])
    assert "directory" in str(e.value)
    with pytest.raises(CheckpointError):
        open_files([tmp_path / "nope.gguf"])
