"""Every bad input is one `CheckpointError` line naming the file; the CLI prints it, exits 2."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badinput_corpus import CASE_NAMES, NOT_UNSAFE, Case, build_corpus
from wstui.checkpoint import CheckpointError, open_checkpoint

_ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return build_corpus(tmp_path_factory.mktemp("badinput"))


CLI_CASES = ["missing_path", "empty_folder", "index_missing_shard_st", "st_truncated",
             "st_header_length_too_large", "st_header_not_json", "bin_pickle_imports_code",
             "gguf_bad_magic"]


@pytest.fixture
def deny_unreadable(monkeypatch: pytest.MonkeyPatch, corpus: dict[str, Case]) -> None:
    """root reads a chmod-000 file anyway: make `open` refuse it as it would for anyone else."""
    if not _ROOT_USER:
        return
    denied = str(corpus["no_read_permission"].names)
    real_open, real_os_open = builtins.open, os.open

    def guarded(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == denied:
            raise PermissionError(13, "Permission denied", denied)
        return real_open(file, *args, **kwargs)

    def guarded_os(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == denied:
            raise PermissionError(13, "Permission denied", denied)
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(os, "open", guarded_os)


@pytest.fixture
def case_env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
             corpus: dict[str, Case]) -> None:
    """What a case needs around it: environment variables, and folders that cannot be listed
    (`deny_list`) or entered (`deny_stat`). The corpus chmods them; root ignores that, so for
    root the OS calls pathlib makes are refused as they would be for anyone else."""
    extra = corpus[request.node.callspec.params["name"]].extra
    for key, value in extra.get("env", {}).items():
        monkeypatch.setenv(key, value)
    if not _ROOT_USER:
        return
    no_list = {os.path.abspath(p) for p in extra.get("deny_list", ())}
    no_stat = {os.path.abspath(p) for p in extra.get("deny_stat", ())}
    if not (no_list or no_stat):
        return

    def where(path: object) -> str:  # no realpath: it would call the patched lstat
        return os.path.abspath(os.fspath(path)) if isinstance(path, (str, Path)) else ""

    for fn in ("scandir", "listdir", "stat", "lstat", "open"):
        real = getattr(os, fn)

        def guarded(path, *args, _real=real, _fn=fn, **kwargs):  # type: ignore[no-untyped-def]
            at = where(path)
            listing = _fn in ("scandir", "listdir")
            if (listing and at in no_list) or (not listing and os.path.dirname(at) in no_stat):
                raise PermissionError(13, "Permission denied", str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, fn, guarded)


def test_corpus_builds_every_named_case(corpus: dict[str, Case]) -> None:
    assert tuple(corpus) == CASE_NAMES


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_line_naming_the_file(
    name: str, corpus: dict[str, Case], deny_unreadable: None, case_env: None
) -> None:
    case = corpus[name]
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(case.target).close()
    msg = str(err.value)
    assert "\n" not in msg
    assert str(case.names) in msg, msg
    problem = msg.replace(str(case.names), "")  # the words must be in the problem, not the path
    for word in case.words:
        assert word in problem, msg


@pytest.mark.parametrize("name", NOT_UNSAFE)
def test_a_file_that_is_no_pickle_is_not_called_unsafe(name: str, corpus: dict[str, Case]) -> None:
    """Issue 13: any non-pickle .bin was "an unsafe pickle"; the message says what it is."""
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(corpus[name].target)
    assert "unsafe" not in str(err.value)


def test_unknown_ggml_type_lists_tensor_and_opens_the_rest(corpus: dict[str, Case]) -> None:
    path = corpus["gguf_bad_magic"].names.parent / "unknown_type.gguf"
    with open_checkpoint(path) as ckpt:
        k = next(t for t in ckpt.tensors if t.name == "blk.0.attn_k.weight")
        q = next(t for t in ckpt.tensors if t.name == "blk.0.attn_q.weight")
        assert not k.analyzable and "99" in (k.note or "")
        assert q.analyzable and float(q.load().sum()) == 8 * 32
        with pytest.raises(CheckpointError):
            k.load()


def test_unsafe_pickle_never_ran(corpus: dict[str, Case], tmp_path: Path) -> None:
    """The refusal happens before any call: the pickled os.system reference is never resolved."""
    for name in ("bin_pickle_imports_code", "bin_zip_pickle_imports_code"):
        with pytest.raises(CheckpointError, match="unsafe"):
            open_checkpoint(corpus[name].target)


@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_prints_one_line_and_exits_2(name: str, corpus: dict[str, Case]) -> None:
    pytest.importorskip("wstui.commands.ls", reason="`wstui ls` not written yet")
    case = corpus[name]
    proc = subprocess.run(
        [sys.executable, "-m", "wstui", "ls", str(case.target)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(case.names) in lines[0]
    assert proc.stdout.strip() == ""


def test_cli_cases_are_flagged_in_the_corpus(corpus: dict[str, Case]) -> None:
    assert sorted(CLI_CASES) == sorted(n for n, c in corpus.items() if c.cli)


# ------------------------------------------------------------------------------------------
# issue 13: inputs that still open, with what was wrong said on the tensor or the checkpoint


def _torch_file(path: Path, obj: object) -> Path:
    import torch

    torch.save(obj, path)
    return path


def test_torch_keys_a_dot_b_and_nested_a_b_stay_two_tensors(tmp_path: Path) -> None:
    """`{"a.b": x, "a": {"b": y}}` flattened to one name, so x was never analyzed."""
    import torch

    path = _torch_file(tmp_path / "clash.bin", {"a.b": torch.zeros(2), "a": {"b": torch.ones(2)}})
    with open_checkpoint(path) as ckpt:
        assert [t.name for t in ckpt.tensors] == ["a.b", "a['b']"]
        assert torch.equal(ckpt.tensor("a.b").load(), torch.zeros(2))
        assert torch.equal(ckpt.tensor("a['b']").load(), torch.ones(2))


def test_torch_dict_nested_5000_deep_opens(tmp_path: Path) -> None:
    import sys

    import torch

    obj: dict = {"w": torch.ones(3)}
    for _ in range(5000):
        obj = {"n": obj}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # torch.save pickles recursively; our reader does not recurse
    try:
        _torch_file(tmp_path / "deep.bin", obj)
    finally:
        sys.setrecursionlimit(limit)
    with open_checkpoint(tmp_path / "deep.bin") as ckpt:
        (ref,) = ckpt.tensors
        assert ref.name == "n." * 5000 + "w"
        assert torch.equal(ref.load(), torch.ones(3))


def test_lone_surrogates_in_names_are_escaped(tmp_path: Path) -> None:
    """A JSON `\\ud800` or a pickled lone surrogate is not UTF-8: printing, caching or writing
    it failed later. The name keeps every other character and shows the escape."""
    import struct

    import torch

    header = b'{"x\\ud800.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
    st = tmp_path / "s.safetensors"
    st.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0))
    pt = _torch_file(tmp_path / "s.bin", {"y\ud800.weight": torch.ones(2)})
    for path, want in ((st, "x\\ud800.weight"), (pt, "y\\ud800.weight")):
        with open_checkpoint(path) as ckpt:
            (ref,) = ckpt.tensors
            assert ref.name == want
            ref.name.encode("utf-8")  # no UnicodeEncodeError anywhere downstream
            assert ref.load().shape == (2,)


def test_block_number_of_5000_digits_is_no_block(tmp_path: Path) -> None:
    """int() of a 5000-digit string raises ValueError; such a name is simply not in a block."""
    import torch
    from safetensors.torch import save_file

    name = "model.layers." + "1" * 5000 + ".mlp.up_proj.weight"
    save_file({name: torch.ones(2, 2)}, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ckpt:
        assert ckpt.tensors[0].block is None


@pytest.mark.parametrize("body, words", [
    (b'{"model_type": "llama", "hidden_size": ' + b"1" * 5000 + b"}", "digits"),
    (b'{"model_type": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deep"),
    (b'{"model_type": "llama", "architectures": 5}', "architectures ignored"),
    (b'{"architectures": [1, {"x": 2}], "tie_word_embeddings": true}', "architectures ignored"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_bad_config_json_is_a_note_not_a_failure(
    body: bytes, words: str, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"lm_head.weight": torch.ones(4, 2), "model.embed_tokens.weight": torch.ones(4, 2)},
              tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_bytes(body)
    with open_checkpoint(tmp_path) as ckpt:
        assert len(ckpt.tensors) == 2
        (note,) = ckpt.notes
        assert "\n" not in note and str(tmp_path / "config.json") in note and words in note


def test_config_json_fifo_is_a_note_and_never_opened(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    os.mkfifo(tmp_path / "config.json")
    with open_checkpoint(tmp_path) as ckpt:  # would block forever on open()
        assert ckpt.config is None
        assert any("FIFO" in n for n in ckpt.notes)


def test_index_naming_tensors_no_shard_holds_is_a_note(tmp_path: Path) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2)}, tmp_path / "s1.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "s1.safetensors", "ghost": "s1.safetensors"}}))
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.notes == [
            f"{tmp_path / 'model.safetensors.index.json'}: 1 tensor(s) in no shard, e.g. ghost"
        ]
        assert ckpt.notes == ckpt.metadata["notes"]


def test_refs_main_not_utf8_falls_back_to_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import save_file

    repo = tmp_path / "models--org--tiny"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file({"w": torch.ones(2)}, snap / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_bytes(b"\xff\xfe\x00garbage")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with open_checkpoint("org/tiny") as ckpt:
        assert ckpt.path == snap


def test_gguf_arrays_nested_5000_deep_are_skipped(tmp_path: Path) -> None:
    """The walker recursed once per level: RecursionError. Now an explicit stack."""
    import struct

    import numpy as np

    from tests.badinput_corpus import gguf_nested_arrays, gguf_raw, gguf_str

    kv = gguf_str("general.architecture") + struct.pack("<I", 8) + gguf_str("llama")
    kv += gguf_str("x.nested") + struct.pack("<I", 9) + gguf_nested_arrays(5000)
    info = gguf_str("blk.0.attn_q.weight") + struct.pack("<IQQIQ", 2, 32, 2, 0, 0)
    body = gguf_raw(kv, 2, info, 1)
    pad = -len(body) % 32
    path = tmp_path / "nested.gguf"
    path.write_bytes(body + bytes(pad) + np.arange(64, dtype=np.float32).tobytes())
    with open_checkpoint(path) as ckpt:
        assert ckpt.metadata["gguf.arrays"]["x.nested"] == 1
        assert float(ckpt.tensors[0].load().sum()) == sum(range(64))


def test_gguf_string_value_over_1_mib_is_skipped_not_read(tmp_path: Path) -> None:
    import struct

    import numpy as np

    from tests.badinput_corpus import gguf_raw, gguf_str

    kv = gguf_str("general.architecture") + struct.pack("<I", 8) + gguf_str("llama")
    kv += gguf_str("tokenizer.chat_template") + struct.pack("<I", 8) + gguf_str("x" * (3 << 20))
    info = gguf_str("blk.0.attn_q.weight") + struct.pack("<IQQIQ", 2, 32, 1, 0, 0)
    body = gguf_raw(kv, 2, info, 1)
    path = tmp_path / "long.gguf"
    path.write_bytes(body + bytes(-len(body) % 32) + np.ones(32, dtype=np.float32).tobytes())
    with open_checkpoint(path) as ckpt:
        assert "tokenizer.chat_template" not in ckpt.metadata
        assert ckpt.metadata["general.architecture"] == "llama"
        assert float(ckpt.tensors[0].load().sum()) == 32


def test_complex_tensors_are_called_complex(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    c = torch.ones(2, dtype=torch.complex64)
    save_file({"c": c, "w": torch.ones(2)}, tmp_path / "c.safetensors")
    _torch_file(tmp_path / "c.bin", {"c": c, "w": torch.ones(2)})
    for path in (tmp_path / "c.safetensors", tmp_path / "c.bin"):
        with open_checkpoint(path) as ckpt:
            ref = ckpt.tensor("c")
            assert not ref.analyzable
            assert ref.note == "complex tensor (C64): listed, not analyzed", path


def _shorten_record(path: Path, suffix: bytes, size: int) -> None:
    """Set the sizes a torch zip's local and central headers give one record, in place."""
    import struct

    data = bytearray(path.read_bytes())
    # (signature, offset of the name length, of the name, of the two sizes)
    for sig, n_at, name_at, sizes_at in ((b"PK\x01\x02", 28, 46, 20), (b"PK\x03\x04", 26, 30, 18)):
        start = 0
        while (start := data.find(sig, start)) >= 0:
            (n_name,) = struct.unpack_from("<H", data, start + n_at)
            if bytes(data[start + name_at:start + name_at + n_name]).endswith(suffix):
                struct.pack_into("<II", data, start + sizes_at, size, size)
            start += 4
    path.write_bytes(bytes(data))


def test_torch_record_shorter_than_its_storage_is_listed_not_loaded(tmp_path: Path) -> None:
    """A zip record shorter than the storage the pickle declares: a map read past it into
    the next record (garbage values); the tensor is listed and not loaded, the others are."""
    import torch

    path = _torch_file(tmp_path / "short.bin", {"a": torch.ones(16), "b": torch.ones(4)})
    _shorten_record(path, b"/data/0", 8)
    with open_checkpoint(path) as ckpt:
        assert ckpt.readers[0].mode == "disk"
        a = ckpt.tensor("a")
        assert not a.analyzable and "declares 64 bytes, the file holds 8" in (a.note or "")
        with pytest.raises(CheckpointError, match="declares"):
            a.load()
        assert torch.equal(ckpt.tensor("b").load(), torch.ones(4))


def _patch_record(path: Path, suffix: bytes, payload: bytes) -> None:
    """Replace one record's bytes in place (same length), with its CRC in both headers."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    crc = zlib.crc32(payload)
    for sig, n_at, name_at, crc_at in ((b"PK\x01\x02", 28, 46, 16), (b"PK\x03\x04", 26, 30, 14)):
        start = 0
        while (start := data.find(sig, start)) >= 0:
            n_name, n_extra = struct.unpack_from("<HH", data, start + n_at)
            if bytes(data[start + name_at:start + name_at + n_name]).endswith(suffix):
                struct.pack_into("<I", data, start + crc_at, crc)
                if sig == b"PK\x03\x04":
                    at = start + 30 + n_name + n_extra
                    data[at:at + len(payload)] = payload
            start += 4
    path.write_bytes(bytes(data))


def test_big_endian_torch_zip_is_byteswapped(tmp_path: Path) -> None:
    """A file saved on a big-endian machine says so in its `byteorder` record ("big", one
    length shorter than "little", so the test sets the reader's flag the record would set and
    stores the values big-endian in place)."""
    import torch

    want = torch.arange(6.0).reshape(2, 3)
    path = _torch_file(tmp_path / "be.bin", {"w": want, "h": want.to(torch.bfloat16)})
    _patch_record(path, b"/data/0", want.numpy().astype(">f4").tobytes())
    bf16 = want.to(torch.bfloat16).view(torch.int16).numpy().astype(">i2").tobytes()
    _patch_record(path, b"/data/1", bf16)
    with open_checkpoint(path) as ckpt:
        reader = ckpt.readers[0]
        assert reader.mode == "disk" and not reader._big
        reader._big = True
        assert torch.equal(ckpt.tensor("w").load(), want)
        assert torch.equal(ckpt.tensor("h").load(), want)


def test_torch_zip_rewritten_by_another_tool(tmp_path: Path) -> None:
    """torch computes the meta offsets from its own writer's layout; a zip rewritten by
    another tool puts records elsewhere: loaded exactly (in memory), or a short record is one
    line, never values read from the wrong place."""
    import zipfile

    import torch

    good = _torch_file(tmp_path / "good.bin", {"a": torch.arange(16.0), "b": torch.ones(4)})
    for name, cut in (("repacked.bin", None), ("repacked_short.bin", 8)):
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / name, "w") as dst:
            for info in src.infolist():
                payload = src.read(info)
                if cut and info.filename.endswith("/data/0"):
                    payload = payload[:cut]
                dst.writestr(info, payload)
    with open_checkpoint(tmp_path / "repacked.bin") as ckpt:
        assert ckpt.readers[0].mode == "memory"
        assert torch.equal(ckpt.tensor("a").load(), torch.arange(16.0))
    with pytest.raises(CheckpointError, match="record size") as err:
        open_checkpoint(tmp_path / "repacked_short.bin")
    assert "\n" not in str(err.value)


def test_oversized_index_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wstui.checkpoint import resolve

    monkeypatch.setattr(resolve, "MAX_JSON", 64)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"a": "s.safetensors"}, "metadata": {"pad": "' + "x" * 64
                     + '"}}')
    with pytest.raises(CheckpointError, match="more than 64 is refused") as err:
        open_checkpoint(tmp_path)
    assert str(index) in str(err.value)


def test_safetensors_metadata_keeps_only_str_to_str(tmp_path: Path) -> None:
    import json
    import struct

    meta = {"format": "pt", "deep": [[[1]]], "n": 5, "s\ud800": "v\udcff"}
    header = json.dumps({"__metadata__": meta,
                         "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    with open_checkpoint(path) as ckpt:
        assert ckpt.metadata["safetensors_metadata"] == {"format": "pt", "s\\ud800": "v\\udcff"}
