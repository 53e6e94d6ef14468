"""Issue 13, the readers: a file that shrinks or changes under a scan, values float32 cannot
hold, views that would materialise far more than the file stores.

Each reader reads a tensor's own bytes with a positional read, so a file truncated after
open gives a one-line `CheckpointError` for the tensors it lost (never SIGBUS, which killed
the process silently when GGUF and `.bin` were memory-mapped), and the scan engine records it
on the tensor and goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from wstui.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from wstui.engine.scan import ScanEngine

FORMATS = ("safetensors", "gguf", "torch")
N_TENSORS = 8


def _tensors(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"blk.{i}.ffn_up.weight": torch.randn(64, 128, generator=g).to(dtype)
            for i in range(N_TENSORS)}


def build(fmt: str, folder: Path, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """One small checkpoint of `fmt` holding `tensors` (8 float32 matrices by default)."""
    tensors = _tensors() if tensors is None else tensors
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        path = folder / "m.safetensors"
        save_file(tensors, path)
    elif fmt == "torch":
        path = folder / "m.bin"
        torch.save(tensors, path)
    else:
        import gguf

        path = folder / "m.gguf"
        w = gguf.GGUFWriter(path, "llama")
        w.add_block_count(N_TENSORS)
        for name, t in tensors.items():
            w.add_tensor(name, t.numpy())
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def _load_all(ckpt: Checkpoint) -> tuple[list[str], list[str]]:
    loaded, errors = [], []
    for ref in ckpt.tensors:
        try:
            ref.load()
            loaded.append(ref.name)
        except CheckpointError as exc:
            errors.append(str(exc))
    return loaded, errors


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_after_open_is_one_line_per_tensor(fmt: str, tmp_path: Path) -> None:
    path = build(fmt, tmp_path)
    with open_checkpoint(path) as ckpt:
        os.truncate(path, path.stat().st_size // 2)
        loaded, errors = _load_all(ckpt)
    assert not loaded and len(errors) == N_TENSORS  # the size check refuses every tensor
    for msg in errors:
        assert "\n" not in msg and str(path) in msg and "file ends early" in msg, msg
        assert "blk." in msg  # names the tensor


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_past_a_shrunk_end_is_an_error_even_past_the_size_check(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the size check cannot close (the file shrinks between the check and the
    read): the positional read comes back short. A memory map would raise SIGBUS here."""
    from wstui.checkpoint import gguf, safetensors, torch_bin

    for mod in (gguf, safetensors, torch_bin):
        monkeypatch.setattr(mod, "check_unchanged", lambda *a, **k: None)
    path = build(fmt, tmp_path)
    with open_checkpoint(path) as ckpt:
        os.truncate(path, path.stat().st_size // 2)
        loaded, errors = _load_all(ckpt)
    assert loaded and errors, (loaded, errors)  # the first half still loads
    assert all("file ends early" in m and str(path) in m for m in errors), errors


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_changed_after_open_is_refused(fmt: str, tmp_path: Path) -> None:
    path = build(fmt, tmp_path)
    with open_checkpoint(path) as ckpt:
        data = bytearray(path.read_bytes())
        data[-8:] = bytes(8)
        path.write_bytes(bytes(data))  # same size, new bytes, new mtime
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        loaded, errors = _load_all(ckpt)
    assert not loaded and all("changed since it was opened" in m for m in errors), errors


_SCAN_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from wstui.checkpoint import open_checkpoint
    from wstui.checkpoint import gguf, safetensors, torch_bin
    from wstui.engine.scan import ScanEngine
    path, race = sys.argv[1], sys.argv[2] == "race"
    if race:  # let every read reach the file, as when it shrinks after the size check
        for mod in (gguf, safetensors, torch_bin):
            if hasattr(mod, "check_unchanged"):
                mod.check_unchanged = lambda *a, **k: None
    ckpt = open_checkpoint(path)
    ckpt.tensors[0].load()  # the scan has begun: a memory-mapping reader has its map now
    os.truncate(path, os.path.getsize(path) // 2)
    report = ScanEngine(ckpt, methods=["stats"], device="cpu", workers=2,
                        use_cache=False).run()
    failed = {n: r.errors["load"] for n, r in report.tensors.items() if "load" in r.errors}
    print(json.dumps({"n": len(ckpt.tensors), "failed": failed,
                      "analyzed": sum(1 for r in report.tensors.values() if r.metrics)}))
""")


@pytest.mark.parametrize("race", ["race", "checked"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_scan_of_a_file_truncated_mid_scan_survives(fmt: str, race: str, tmp_path: Path) -> None:
    """In a subprocess, through the engine: the process is not killed by a signal (main
    died of SIGBUS for GGUF and .bin) and every lost tensor has its load error."""
    path = build(fmt, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _SCAN_SCRIPT, str(path), race],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"], out
    assert out["analyzed"] + len(out["failed"]) == out["n"] == N_TENSORS
    assert all("file ends early" in m for m in out["failed"].values()), out
    if race == "race":
        assert out["analyzed"] > 0  # what lies before the cut is still analyzed


# --------------------------------------------------------------------------- F64 range

def _f64(values: list[float]) -> dict[str, torch.Tensor]:
    return {"blk.0.ffn_up.weight": torch.tensor(values, dtype=torch.float64).reshape(2, 2),
            "blk.1.ffn_up.weight": torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("values, words", [
    ([1e300, -2.0, 1.0, 0.5], "do not fit float32"),
    ([1e-300, -2e-300, 0.0, 1e-301], "smallest normal"),
])
def test_f64_beyond_float32_is_refused_not_inf_or_dead(
    fmt: str, values: list[float], words: str, tmp_path: Path
) -> None:
    """1e300 was a critical "Inf values" finding and 1e-300 all dead units: values float32
    cannot hold are a load error on that tensor; an F64 tensor that fits loads exactly."""
    path = build(fmt, tmp_path, _f64(values))
    with open_checkpoint(path) as ckpt:
        bad, good = ckpt.tensor("blk.0.ffn_up.weight"), ckpt.tensor("blk.1.ffn_up.weight")
        with pytest.raises(CheckpointError, match=words) as err:
            bad.load()
        assert "blk.0.ffn_up.weight" in str(err.value) and "\n" not in str(err.value)
        assert torch.equal(good.load(), _f64(values)["blk.1.ffn_up.weight"].float())
        assert bad.load(dtype=torch.float64).dtype == torch.float64  # asked for: no check
        report = ScanEngine(ckpt, methods=["stats", "sparsity"], device="cpu", workers=1,
                            use_cache=False).run()
    res = report.tensors["blk.0.ffn_up.weight"]
    assert words in res.errors["load"]
    assert not res.findings  # no nonfinite, no dead_units


# --------------------------------------------------------------------------- views

def test_stride0_view_is_listed_not_materialised(tmp_path: Path) -> None:
    """A 1.6 KB file held torch.ones(1).expand(20000, 20000), and a scan took 2.1 GB."""
    path = tmp_path / "expand.bin"
    torch.save({"big.weight": torch.ones(1).expand(20000, 20000),
                "overlap.weight": torch.arange(5.0).as_strided((3, 3), (1, 1)),
                "ok.weight": torch.ones(4, 4)}, path)
    assert path.stat().st_size < 4096
    with open_checkpoint(path) as ckpt:
        big, overlap = ckpt.tensor("big.weight"), ckpt.tensor("overlap.weight")
        assert not big.analyzable and "repeats 1 stored value(s) as 400000000" in big.note
        assert big.nbytes == 4  # the bytes really stored
        assert not overlap.analyzable and "overlapping" in overlap.note
        with pytest.raises(CheckpointError, match="repeats"):
            big.load()
        assert torch.equal(ckpt.tensor("ok.weight").load(), torch.ones(4, 4))
        report = ScanEngine(ckpt, methods=["stats"], device="cpu", workers=1,
                            use_cache=False).run()
    assert not report.tensors["big.weight"].metrics
    assert report.tensors["ok.weight"].metrics


def test_views_and_shared_storage_still_load(tmp_path: Path) -> None:
    """A transposed view, a slice with an offset and two names on one storage (tied) read
    exactly their elements."""
    base = torch.arange(48.0).reshape(6, 8)
    sd = {"t.weight": base.t(), "s.weight": base[2:5, 1:7], "lm_head.weight": base,
          "model.embed_tokens.weight": base, "h.weight": torch.ones(3, dtype=torch.bfloat16)}
    path = tmp_path / "views.bin"
    torch.save(sd, path)
    with open_checkpoint(path) as ckpt:
        for name, t in sd.items():
            got = ckpt.tensor(name).load()
            assert got.is_contiguous() and torch.equal(got, t.float()), name
        assert ckpt.tensor("lm_head.weight").tied_to == "model.embed_tokens.weight"


def test_quantized_tensor_falls_back_to_the_map(tmp_path: Path) -> None:
    """torch cannot build a quantized tensor on the meta device: that file is mapped, and
    its float tensors still load (the size check guards the map)."""
    path = tmp_path / "q.bin"
    with pytest.warns(UserWarning):
        q = torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)
    torch.save({"q": q, "w": torch.ones(2, 3)}, path)
    with open_checkpoint(path) as ckpt:
        assert ckpt.readers[0].mode == "mapped"
        assert not ckpt.tensor("q").analyzable
        assert torch.equal(ckpt.tensor("w").load(), torch.ones(2, 3))
        os.truncate(path, 100)
        with pytest.raises(CheckpointError, match="file ends early"):
            ckpt.tensor("w").load()


def test_gguf_f64_loads_through_numpy(tmp_path: Path) -> None:
    path = build("gguf", tmp_path, {"blk.0.ffn_up.weight": torch.ones(2, 32, dtype=torch.float64)})
    with open_checkpoint(path) as ckpt:
        ref = ckpt.tensors[0]
        assert ref.dtype == "F64"
        assert torch.equal(ref.load(), torch.ones(2, 32))


def test_loaded_gguf_tensor_does_not_alias_the_file(tmp_path: Path) -> None:
    path = build("gguf", tmp_path)
    with open_checkpoint(path) as ckpt:
        a = ckpt.tensors[0].load()
        a.zero_()
        assert ckpt.tensors[0].load().abs().sum() > 0
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(path) not in maps.read_text()
