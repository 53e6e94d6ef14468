"""A corpus of broken checkpoints, built in a temporary folder, one per way a file can be bad.

Each `Case` says what to open, which file the one-line error must name, and words the message
must contain. Everything is made from small valid files, then damaged byte by byte; the unsafe
pickles are written as raw pickle opcodes and are never unpickled by anything but torch's
weights-only unpickler (which refuses them).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def _evil_pickle(module: str) -> bytes:
    """Protocol-2 opcodes: PROTO 2, GLOBAL module.system, MARK 'echo' TUPLE, REDUCE, STOP.

    Plain `pickle.load` would call os.system("echo"); only torch's weights-only unpickler ever
    sees these bytes, and it refuses at the GLOBAL.
    """
    return (
        b"\x80\x02c" + module.encode() + b"\nsystem\n"
        + b"(X\x04\x00\x00\x00echot" + b"R."
    )


#: every case `build_corpus` writes (static, so that tests parametrize without building it)
CASE_NAMES = (
    "missing_path", "empty_folder", "config_without_weights", "folder_without_weights",
    "unsupported_extension", "no_read_permission", "directory_as_weight_file",
    "directory_named_by_index", "broken_symlink", "index_missing_shard_st",
    "index_missing_shard_bin", "index_not_json", "st_truncated", "st_truncated_in_header",
    "st_shorter_than_length_field", "st_header_length_too_large", "st_header_not_json",
    "st_header_not_utf8", "st_header_not_object", "st_offsets_outside_data",
    "st_offsets_reversed", "st_overlapping_tensors", "st_dtype_shape_disagree", "st_bad_shape",
    "st_entry_not_object", "st_no_tensors", "bin_pickle_imports_code",
    "bin_zip_pickle_imports_code", "bin_truncated", "bin_garbage", "bin_not_a_state_dict",
    "bin_torchscript_archive",
    "gguf_bad_magic", "gguf_truncated", "gguf_truncated_in_header",
    # issue 13: non-regular files (a FIFO's open blocked forever)
    "fifo_as_weight_file", "fifo_in_folder", "fifo_named_by_index", "fifo_as_index",
    "fifo_bin", "fifo_gguf", "socket_in_folder", "char_device_as_weight_file",
    # issue 13: metadata that raised ValueError, RecursionError, TypeError, OverflowError
    "st_header_huge_int", "st_header_deep_nesting", "index_huge_int", "index_deep_nesting",
    "index_weight_map_list", "index_weight_map_dict", "gguf_string_length_near_2_63",
    "gguf_key_length_near_2_63", "gguf_key_too_long", "gguf_array_count_near_2_63",
    "gguf_nested_arrays_truncated",
    "name_too_long", "repo_id_too_long", "unreadable_folder", "execute_only_folder",
    "unsearchable_folder",
    # issue 13: results that were silently wrong
    "gguf_duplicate_name", "gguf_duplicate_across_shards", "index_shard_absolute",
    "index_shard_dotdot",
    # issue 13: a non-pickle .bin was called an unsafe pickle
    "bin_empty", "bin_is_gguf", "bin_is_safetensors", "bin_zip_not_torch", "bin_plain_pickle",
    "bin_legacy_truncated",
)

#: cases that are refused for what the file is, not for what it would run: never "unsafe"
NOT_UNSAFE = ("bin_truncated", "bin_garbage", "bin_empty", "bin_is_gguf", "bin_is_safetensors",
              "bin_zip_not_torch", "bin_plain_pickle", "bin_legacy_truncated")


@dataclass
class Case:
    """A broken input: `target` is what the user passes, `names` the file the error names."""

    target: Path | str
    names: Path
    words: tuple[str, ...] = ()
    cli: bool = False  # also checked through `python -m wstui ls`
    #: "env": variables to set; "deny_list": folders that cannot be listed; "deny_stat":
    #: folders whose entries cannot be reached (root ignores chmod: the test simulates these)
    extra: dict = field(default_factory=dict)


def _st_header(
    path: Path, header: dict | bytes, data: bytes = b"", hlen: int | None = None
) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if hlen is None else hlen) + raw + data)
    return path


def _gguf(path: Path) -> Path:
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_tensor("blk.0.attn_q.weight", np.ones((8, 32), np.float32))
    w.add_tensor("blk.0.attn_k.weight", np.ones((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def gguf_raw(kv: bytes = b"", n_kv: int = 0, tensors: bytes = b"", n_tensors: int = 0,
             tail: bytes = b"") -> bytes:
    """A GGUF v3 file from raw metadata and tensor-info bytes (for what GGUFWriter refuses)."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kv + tensors + tail


def gguf_str(text: str | bytes, length: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def gguf_nested_arrays(depth: int) -> bytes:
    """One KV value: an array of one array of one array ... of an empty u8 array."""
    one = struct.pack("<IQ", 9, 1)  # element type ARRAY, count 1
    return one * depth + struct.pack("<IQ", 0, 0)


def _set_ggml_type(data: bytearray, name: bytes, ggml_type: int) -> None:
    """Patch the type id of one tensor info (after name, n_dims:u32, dims:u64 x n_dims)."""
    i = data.index(name) + len(name)
    (n_dims,) = struct.unpack_from("<I", data, i)
    struct.pack_into("<I", data, i + 4 + 8 * n_dims, ggml_type)


def build_corpus(root: Path) -> dict[str, Case]:
    """Write every bad input under `root`; returns case name -> Case."""
    root.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Case] = {}

    def case(name: str, target: Path | str, names: Path | None = None, *words: str,
             cli: bool = False) -> None:
        cases[name] = Case(target, names if names is not None else Path(target), words, cli)

    good_st = root / "good.safetensors"
    save_file({"a": torch.arange(12.0).reshape(3, 4), "b": torch.ones(4)}, good_st)
    good_bytes = good_st.read_bytes()
    good_bin = root / "good.bin"
    torch.save({"a": torch.arange(12.0).reshape(3, 4)}, good_bin)

    # --- paths and folders
    case("missing_path", root / "nope.safetensors", None, "does not exist", cli=True)
    (root / "empty").mkdir()
    case("empty_folder", root / "empty", None, "empty", cli=True)
    (root / "config_only").mkdir()
    (root / "config_only" / "config.json").write_text('{"model_type": "llama"}')
    case("config_without_weights", root / "config_only", None, "config.json", "no weight")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("hello")
    case("folder_without_weights", root / "notes", None, "no weight files")
    (root / "weights.npz").write_bytes(b"PK")
    case("unsupported_extension", root / "weights.npz", None, "unsupported file type")
    noperm = root / "noperm.safetensors"
    noperm.write_bytes(good_bytes)
    noperm.chmod(0)
    case("no_read_permission", noperm, None, "permission denied")
    (root / "dir_shard").mkdir()
    (root / "dir_shard" / "model.safetensors").mkdir()
    case("directory_as_weight_file", root / "dir_shard", root / "dir_shard" / "model.safetensors",
         "is a directory")
    (root / "dir_in_index").mkdir()
    (root / "dir_in_index" / "shard.safetensors").mkdir()
    (root / "dir_in_index" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "shard.safetensors"}})
    )
    case("directory_named_by_index", root / "dir_in_index",
         root / "dir_in_index" / "shard.safetensors", "is a directory")
    (root / "broken_link").mkdir()
    (root / "broken_link" / "model.safetensors").symlink_to(root / "blobs" / "missing")
    case("broken_symlink", root / "broken_link", root / "broken_link" / "model.safetensors",
         "broken link")

    # --- sharded indexes
    for fmt, index_name, shard in (
        ("st", "model.safetensors.index.json", "model-00002-of-00002.safetensors"),
        ("bin", "pytorch_model.bin.index.json", "pytorch_model-00002-of-00002.bin"),
    ):
        folder = root / f"index_{fmt}"
        folder.mkdir()
        first = folder / shard.replace("00002-of", "00001-of")
        if fmt == "st":
            save_file({"a": torch.ones(2)}, first)
        else:
            torch.save({"a": torch.ones(2)}, first)
        (folder / index_name).write_text(
            json.dumps({"weight_map": {"a": first.name, "b": shard}})
        )
        case(f"index_missing_shard_{fmt}", folder, folder / index_name, shard, "does not exist",
             cli=fmt == "st")
    (root / "index_bad").mkdir()
    (root / "index_bad" / "model.safetensors.index.json").write_text("{weight_map: nope")
    case("index_not_json", root / "index_bad", root / "index_bad" / "model.safetensors.index.json",
         "not valid JSON")

    # --- safetensors damage
    p = root / "truncated.safetensors"
    p.write_bytes(good_bytes[:-10])
    case("st_truncated", p, None, "truncated", cli=True)
    p = root / "truncated_in_header.safetensors"
    p.write_bytes(good_bytes[:20])
    case("st_truncated_in_header", p, None, "larger than the file")
    p = root / "tiny.safetensors"
    p.write_bytes(b"\x01\x02")
    case("st_shorter_than_length_field", p, None, "too short")
    case("st_header_length_too_large",
         _st_header(root / "hlen.safetensors", {"a": {}}, hlen=10**9), None,
         "header length 1000000000", "larger than the file", cli=True)
    case("st_header_not_json", _st_header(root / "notjson.safetensors", b"{'a': oops}  "), None,
         "not valid JSON", cli=True)
    case("st_header_not_utf8", _st_header(root / "binary.safetensors", b"\xff\xfe\x00{"), None,
         "not valid JSON")
    case("st_header_not_object", _st_header(root / "list.safetensors", b"[1, 2]"), None,
         "not a JSON object")
    f32 = {"dtype": "F32", "shape": [2, 2]}
    case("st_offsets_outside_data",
         _st_header(root / "outside.safetensors",
                    {"a": {**f32, "data_offsets": [16, 32]}}, bytes(16)),
         None, "outside the data")
    case("st_offsets_reversed",
         _st_header(root / "reversed.safetensors",
                    {"a": {**f32, "data_offsets": [16, 0]}}, bytes(16)),
         None, "bad data_offsets")
    case("st_overlapping_tensors",
         _st_header(root / "overlap.safetensors",
                    {"a": {**f32, "data_offsets": [0, 16]}, "b": {**f32, "data_offsets": [8, 24]}},
                    bytes(24)),
         None, "overlap")
    case("st_dtype_shape_disagree",
         _st_header(root / "mismatch.safetensors",
                    {"a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16)),
         None, "BF16", "needs 8 bytes", "span 16")
    case("st_bad_shape",
         _st_header(root / "shape.safetensors",
                    {"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}}, bytes(16)),
         None, "bad shape")
    case("st_entry_not_object",
         _st_header(root / "entry.safetensors", {"a": [1, 2]}), None, "not an object")

    case("st_no_tensors",
         _st_header(root / "nothing.safetensors", {"__metadata__": {"format": "pt"}}), None,
         "holds no tensors")

    # --- PyTorch pickles
    p = root / "evil_raw.bin"
    p.write_bytes(_evil_pickle("posix"))
    case("bin_pickle_imports_code", p, None, "unsafe", "posix.system", cli=True)
    with zipfile.ZipFile(good_bin) as src, zipfile.ZipFile(root / "evil_zip.pt", "w") as dst:
        for info in src.infolist():
            payload = src.read(info)
            if info.filename.endswith("data.pkl"):
                payload = _evil_pickle("os")
            dst.writestr(info, payload)
    case("bin_zip_pickle_imports_code", root / "evil_zip.pt", None, "unsafe", "os.system")
    p = root / "truncated.bin"
    p.write_bytes(good_bin.read_bytes()[:200])
    case("bin_truncated", p, None, "truncated or corrupt")
    p = root / "garbage.pt"
    p.write_bytes(b"this is not a pickle at all " * 8)
    case("bin_garbage", p, None, "not a PyTorch checkpoint", "neither a zip archive nor a pickle")
    p = root / "list.pt"
    torch.save([torch.ones(2)], p)
    case("bin_not_a_state_dict", p, None, "holds a list")

    p = root / "scripted.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated, and still what people have
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), p)
    case("bin_torchscript_archive", p, None, "TorchScript", "unsafe")

    # --- GGUF damage (the reader is helper "gguf"'s; the corpus checks it end to end)
    good_gguf = _gguf(root / "good.gguf")
    data = good_gguf.read_bytes()
    p = root / "badmagic.gguf"
    p.write_bytes(b"GGML" + data[4:])
    case("gguf_bad_magic", p, None, "magic", cli=True)
    p = root / "truncated.gguf"
    p.write_bytes(data[: len(data) - 64])
    case("gguf_truncated", p, None, "truncated")
    p = root / "truncated_header.gguf"
    p.write_bytes(data[:40])
    case("gguf_truncated_in_header", p, None, "GGUF")
    unknown = bytearray(data)
    _set_ggml_type(unknown, b"blk.0.attn_k.weight", 99)
    (root / "unknown_type.gguf").write_bytes(bytes(unknown))  # opens: see the test

    _issue13_cases(root, case, cases, good_bytes, good_bin, data)
    return cases


def _issue13_cases(root: Path, case: Callable[..., None], cases: dict[str, Case],
                   good_st: bytes, good_bin: Path, good_gguf: bytes) -> None:
    """The hostile inputs of issue 13 that must be refused with one line at open."""
    # --- not regular files: opening a FIFO blocks until a writer comes
    os.mkfifo(root / "pipe.safetensors")
    case("fifo_as_weight_file", root / "pipe.safetensors", None, "FIFO", "not a regular")
    (root / "fifo_folder").mkdir()
    os.mkfifo(root / "fifo_folder" / "model.safetensors")
    case("fifo_in_folder", root / "fifo_folder", root / "fifo_folder" / "model.safetensors",
         "FIFO")
    (root / "fifo_index").mkdir()
    os.mkfifo(root / "fifo_index" / "model-00001-of-00001.safetensors")
    (root / "fifo_index" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00001.safetensors"}}))
    case("fifo_named_by_index", root / "fifo_index",
         root / "fifo_index" / "model-00001-of-00001.safetensors", "FIFO")
    (root / "fifo_index_json").mkdir()
    os.mkfifo(root / "fifo_index_json" / "model.safetensors.index.json")
    case("fifo_as_index", root / "fifo_index_json",
         root / "fifo_index_json" / "model.safetensors.index.json", "FIFO")
    os.mkfifo(root / "pipe.bin")
    case("fifo_bin", root / "pipe.bin", None, "FIFO")
    os.mkfifo(root / "pipe.gguf")
    case("fifo_gguf", root / "pipe.gguf", None, "FIFO")
    (root / "sock").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock" / "model.safetensors"))
    case("socket_in_folder", root / "sock", root / "sock" / "model.safetensors", "socket")
    (root / "devnull").mkdir()
    (root / "devnull" / "model.safetensors").symlink_to("/dev/null")
    case("char_device_as_weight_file", root / "devnull",
         root / "devnull" / "model.safetensors", "character device")

    # --- metadata: huge integers and deep nesting in JSON
    huge = b'{"a": {"dtype": "F32", "shape": [' + b"7" * 5000 + b'], "data_offsets": [0, 16]}}'
    case("st_header_huge_int", _st_header(root / "huge_int.safetensors", huge, bytes(16)),
         None, "header", "not usable JSON", "digits")
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    case("st_header_deep_nesting", _st_header(root / "deep.safetensors", deep), None,
         "header", "nested too deep")
    for name, body, words in (
        ("index_huge_int", b'{"metadata": {"total_size": ' + b"9" * 5000 + b'}, "weight_map": {}}',
         ("index", "not usable JSON", "digits")),
        ("index_deep_nesting", b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
         ("index", "nested too deep")),
        ("index_weight_map_list", json.dumps({"weight_map": {"a": ["x.safetensors"]}}).encode(),
         ("'a'", "list", "not a shard file name")),
        ("index_weight_map_dict", json.dumps({"weight_map": {"a": {"f": 1}}}).encode(),
         ("'a'", "dict", "not a shard file name")),
    ):
        (root / name).mkdir()
        (root / name / "model.safetensors.index.json").write_bytes(body)
        case(name, root / name, root / name / "model.safetensors.index.json", *words)

    # --- GGUF lengths near 2^63 and nested arrays (OverflowError, RecursionError)
    p = root / "strlen.gguf"
    p.write_bytes(gguf_raw(gguf_str("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2)
                           + gguf_str(b"abc", length=2**63 - 5) + gguf_str("b"), n_kv=1))
    case("gguf_string_length_near_2_63", p, None, "truncated GGUF")
    p = root / "keylen.gguf"
    p.write_bytes(gguf_raw(gguf_str(b"key", length=2**63 + 7), n_kv=1))
    case("gguf_key_length_near_2_63", p, None, "truncated GGUF")
    p = root / "longkey.gguf"
    p.write_bytes(gguf_raw(gguf_str("k" * 100_000) + struct.pack("<I", 4) + bytes(4), n_kv=1))
    case("gguf_key_too_long", p, None, "metadata key of 100000 bytes")
    p = root / "count.gguf"
    p.write_bytes(gguf_raw(gguf_str("x") + struct.pack("<IIQ", 9, 4, 2**63 - 1), n_kv=1))
    case("gguf_array_count_near_2_63", p, None, "truncated GGUF")
    p = root / "nested_truncated.gguf"
    p.write_bytes(gguf_raw(gguf_str("x") + struct.pack("<I", 9)
                           + gguf_nested_arrays(5000)[:-30], n_kv=1))
    case("gguf_nested_arrays_truncated", p, None, "truncated GGUF")

    # --- paths too long, folders that cannot be listed or entered
    case("name_too_long", root / ("x" * 300 + ".safetensors"), None, "too long")
    (root / "hub").mkdir()
    cases_repo = "org/" + "r" * 300
    case("repo_id_too_long", cases_repo, Path("org--" + "r" * 300), "too long")
    cases["repo_id_too_long"].extra = {"env": {"HF_HUB_CACHE": str(root / "hub")}}
    for name, mode, key in (("unreadable_folder", 0o300, "deny_list"),
                            ("execute_only_folder", 0o100, "deny_list"),
                            ("unsearchable_folder", 0o600, "deny_stat")):
        folder = root / name
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(good_st)
        folder.chmod(mode)
        case(name, folder, None, "permission denied")
        cases[name].extra = {key: [str(folder)]}

    # --- silently wrong: duplicate GGUF names, shards outside the folder
    dup = good_gguf.replace(b"blk.0.attn_k.weight", b"blk.0.attn_q.weight")
    (root / "dup.gguf").write_bytes(dup)
    case("gguf_duplicate_name", root / "dup.gguf", None, "blk.0.attn_q.weight", "twice")
    (root / "dup_shards").mkdir()
    (root / "dup_shards" / "a-00001-of-00002.gguf").write_bytes(good_gguf)
    (root / "dup_shards" / "a-00002-of-00002.gguf").write_bytes(good_gguf)
    case("gguf_duplicate_across_shards", root / "dup_shards",
         root / "dup_shards" / "a-00002-of-00002.gguf", "blk.0.attn_q.weight", "also in",
         "a-00001-of-00002.gguf")
    for name, shard in (("index_shard_absolute", str(root / "good.safetensors")),
                        ("index_shard_dotdot", "../good.safetensors")):
        (root / name).mkdir()
        (root / name / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"a": shard}}))
        case(name, root / name, root / name / "model.safetensors.index.json",
             "outside the checkpoint folder")

    # --- .bin files that are no pickle at all
    (root / "empty.bin").write_bytes(b"")
    case("bin_empty", root / "empty.bin", None, "empty")
    (root / "gguf_named.bin").write_bytes(good_gguf)
    case("bin_is_gguf", root / "gguf_named.bin", None, "GGUF file", "rename it .gguf")
    (root / "st_named.bin").write_bytes(good_st)
    case("bin_is_safetensors", root / "st_named.bin", None, "safetensors file")
    with zipfile.ZipFile(root / "npz_named.bin", "w") as z:
        z.writestr("a.npy", b"\x93NUMPY")
    case("bin_zip_not_torch", root / "npz_named.bin", None, "zip archive", "no data.pkl")
    (root / "plain_pickle.bin").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    case("bin_plain_pickle", root / "plain_pickle.bin", None, "not a PyTorch checkpoint")
    legacy = root / "legacy.bin"
    torch.save({"a": torch.ones(64)}, legacy, _use_new_zipfile_serialization=False)
    (root / "legacy_truncated.bin").write_bytes(legacy.read_bytes()[:-5])
    case("bin_legacy_truncated", root / "legacy_truncated.bin", None, "truncated")
