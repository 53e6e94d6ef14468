"""Write a llama-family HF state dict as GGUF, the way llama.cpp's converter lays it out.

Used for the demo's GGUF copy and by tests: llama.cpp tensor names (via `gguf_names`), the
q/k row permutation that llama.cpp's rope expects, matrices quantized with `gguf.quants`,
1-D tensors (norms, biases) kept as F32, and just enough `llama.*` metadata to describe the
shapes. No tokenizer is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wstui.checkpoint.gguf_names import hf_to_gguf

#: HF buffers that are not weights and that llama.cpp's converter drops as well
_SKIP_SUFFIXES = (".rotary_emb.inv_freq",)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, interleave the two rope halves.

    HF rotates (x[i], x[i + d/2]) pairs; llama.cpp's "normal" rope rotates (x[2i], x[2i+1]).
    Rows of each head go from [half0, half1] to [h0[0], h1[0], h0[1], h1[1], ...].
    Works on weights (rows, cols) and biases (rows,).
    """
    rows = w.shape[0]
    return (
        w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute_qk`: back to HF's row order."""
    rows = w.shape[0]
    return (
        w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _qtype(name: str):
    import gguf

    try:
        return gguf.GGMLQuantizationType[name.upper()]
    except KeyError:
        raise ValueError(f"unknown ggml type {name!r}") from None


def _encode(arr: np.ndarray, qtype) -> tuple[np.ndarray, Any]:
    """(data, raw_dtype) for GGUFWriter.add_tensor; falls back to F16 like llama.cpp when the
    row length is not a multiple of the block size."""
    import gguf
    from gguf.constants import GGML_QUANT_SIZES

    t = gguf.GGMLQuantizationType
    if qtype == t.F32:
        return arr.astype(np.float32), None
    if qtype == t.F16:
        return arr.astype(np.float16), None
    block, _ = GGML_QUANT_SIZES[qtype]
    if arr.shape[-1] % block != 0:
        return arr.astype(np.float16), None
    try:
        data = gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), qtype)
    except NotImplementedError:
        raise ValueError(f"gguf.quants cannot quantize to {qtype.name}") from None
    return data, qtype


def _cfg(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if config.get(k) is not None:
            return config[k]
    return default


def write_gguf(
    state_dict: Mapping[str, Any],
    config: Mapping[str, Any],
    path: str | Path,
    *,
    qtype: str = "Q8_0",
) -> Path:
    """Write `state_dict` (HF llama names; torch tensors or numpy arrays) to `path` as GGUF.

    `config` is the HF config as a dict (config.json). Matrices are stored as `qtype`
    (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1); 1-D tensors as F32. `lm_head` is
    dropped when `tie_word_embeddings` is set (llama.cpp reuses `token_embd`).
    Raises ValueError for a name llama.cpp's table does not know.
    """
    import gguf

    path = Path(path)
    arch = "llama"
    n_head = int(_cfg(config, "num_attention_heads"))
    n_kv = int(_cfg(config, "num_key_value_heads", default=n_head))
    hidden = int(_cfg(config, "hidden_size"))
    n_layer = int(_cfg(config, "num_hidden_layers"))
    q = _qtype(qtype)
    tied = bool(config.get("tie_word_embeddings", False))

    tensors: list[tuple[str, np.ndarray, Any]] = []
    unknown: list[str] = []
    for name, value in state_dict.items():
        if name.endswith(_SKIP_SUFFIXES) or (tied and name == "lm_head.weight"):
            continue
        gname = hf_to_gguf(name, arch)
        if gname is None:
            unknown.append(name)
            continue
        arr = _to_numpy(value)
        if ".attn_q." in gname:
            arr = permute_qk(arr, n_head)
        elif ".attn_k." in gname:
            arr = permute_qk(arr, n_kv)
        if arr.ndim <= 1:
            tensors.append((gname, arr.astype(np.float32), None))
        else:
            data, raw = _encode(arr, q)
            tensors.append((gname, data, raw))
    if unknown:
        raise ValueError(f"no GGUF name for {', '.join(unknown[:5])}")

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(path, arch)
    try:
        w.add_name(str(config.get("_name_or_path") or "wstui"))
        w.add_block_count(n_layer)
        w.add_context_length(int(_cfg(config, "max_position_embeddings", default=2048)))
        w.add_embedding_length(hidden)
        if config.get("intermediate_size"):
            w.add_feed_forward_length(int(config["intermediate_size"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_dimension_count(int(_cfg(config, "head_dim", default=hidden // n_head)))
        w.add_layer_norm_rms_eps(float(_cfg(config, "rms_norm_eps", default=1e-6)))
        theta = _cfg(config, "rope_theta") or (config.get("rope_parameters") or {}).get(
            "rope_theta"
        )
        if theta:
            w.add_rope_freq_base(float(theta))
        if config.get("vocab_size"):
            w.add_vocab_size(int(config["vocab_size"]))
        if config.get("num_local_experts"):
            w.add_expert_count(int(config["num_local_experts"]))
            w.add_expert_used_count(int(config.get("num_experts_per_tok", 2)))
        w.add_file_type(_file_type(q))
        for gname, data, raw in tensors:
            w.add_tensor(gname, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return path


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    # torch tensor: float32 on the CPU (BF16 has no numpy dtype)
    return value.detach().to("cpu").float().numpy()


def _file_type(q) -> int:
    import gguf

    try:
        return int(gguf.LlamaFileType[f"MOSTLY_{q.name}"])
    except KeyError:
        return int(gguf.LlamaFileType.ALL_F32 if q.name == "F32" else gguf.LlamaFileType.GUESSED)
