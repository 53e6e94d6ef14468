"""`wstui ls`: the table, the summary line, `--json` (wstui.ls/1), no torch, bad input."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from wstui import jsonio
from wstui.cli import main
from wstui.render.numbers import human_bytes, human_count

LS_FIELDS = {"name", "hf_name", "shape", "dtype", "kind", "block", "nbytes", "analyzable"}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-block Llama-named safetensors file (numpy-written: no torch in this module)."""
    rng = np.random.default_rng(0)
    h, tensors = 16, {}
    tensors["model.embed_tokens.weight"] = rng.standard_normal((64, h), dtype=np.float32)
    for i in (10, 2, 0):  # stored order is not tree order (block 10 before block 2)
        p = f"model.layers.{i}."
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[p + f"self_attn.{m}.weight"] = rng.standard_normal((h, h), dtype=np.float32)
        for m, shape in (("gate_proj", (32, h)), ("up_proj", (32, h)), ("down_proj", (h, 32))):
            tensors[p + f"mlp.{m}.weight"] = rng.standard_normal(shape, dtype=np.float32)
        tensors[p + "input_layernorm.weight"] = np.ones(h, np.float16)
    tensors["model.norm.weight"] = np.ones(h, np.float32)
    tensors["lm_head.weight"] = rng.standard_normal((64, h), dtype=np.float32)
    tensors["model.rotary.position_ids"] = np.arange(8, dtype=np.int64)
    path = tmp_path_factory.mktemp("ls") / "tiny.safetensors"
    save_file(tensors, str(path))
    return path


def test_table_in_tree_order_with_summary(tiny_llama: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ls", str(tiny_llama)]) == 0
    out = capsys.readouterr().out
    for word in ("block", "kind", "name", "shape", "dtype", "size"):
        assert word in out.splitlines()[0]
    names = [w for line in out.splitlines() for w in line.split() if w.startswith(("model.",
                                                                                 "lm_head."))]
    assert names[0] == "model.embed_tokens.weight"
    assert names.index("model.layers.0.self_attn.q_proj.weight") < names.index(
        "model.layers.2.self_attn.q_proj.weight") < names.index(
        "model.layers.10.self_attn.q_proj.weight")
    assert names[-3:] == ["model.norm.weight", "lm_head.weight", "model.rotary.position_ids"]
    q = next(line for line in out.splitlines() if "layers.0.self_attn.q_proj" in line)
    assert "attn_q" in q and "16x16" in q and "F32" in q and "1.0 KiB" in q
    summary = out.strip().splitlines()[-1]
    assert "safetensors" in summary and "1 file" in summary and "28 tensors" in summary
    assert "params" in summary and "F32 24" in summary and "F16 3" in summary
    assert "I64 1" in summary


def test_json_is_wstui_ls_1(tiny_llama: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ls.json"
    assert main(["ls", str(tiny_llama), "--json", str(out)]) == 0
    doc = jsonio.loads_strict(out.read_text())
    assert doc["schema"] == "wstui.ls/1" and doc["wstui_version"]
    assert doc["checkpoint"]["n_tensors"] == 28 == len(doc["tensors"])
    assert doc["checkpoint"]["format"] == "safetensors"
    assert doc["checkpoint"]["dtypes"] == {"F32": 24, "F16": 3, "I64": 1}
    first = doc["tensors"][0]
    assert set(first) >= LS_FIELDS
    assert first["name"] == "model.embed_tokens.weight" and first["kind"] == "embedding"
    by_name = {t["name"]: t for t in doc["tensors"]}
    q = by_name["model.layers.10.self_attn.q_proj.weight"]
    assert (q["kind"], q["block"], q["shape"], q["nbytes"]) == ("attn_q", 10, [16, 16], 1024)
    assert q["hf_name"] == q["name"] and q["analyzable"] is True
    assert by_name["model.rotary.position_ids"]["analyzable"] is False
    blocks = [t["block"] for t in doc["tensors"] if t["block"] is not None]
    assert blocks == sorted(blocks)


def test_tied_weights_listed_once_in_the_tree_and_counted_once(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    w = torch.randn(64, 16)
    state = {"model.embed_tokens.weight": w, "lm_head.weight": w,
             "model.layers.0.mlp.up_proj.weight": torch.randn(32, 16)}
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    out = tmp_path / "ls.json"
    assert main(["ls", str(tmp_path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 tied" in text and "tied to model.embed_tokens.weight" in text
    doc = jsonio.loads_strict(out.read_text())
    assert doc["checkpoint"]["n_params"] == 64 * 16 + 32 * 16
    assert doc["tensors"][-1]["name"] == "lm_head.weight"
    assert doc["tensors"][-1]["tied_to"] == "model.embed_tokens.weight"


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ls", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "missing.safetensors" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    assert main(["ls", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_ls_imports_no_torch(tiny_llama: Path, tmp_path: Path) -> None:
    driver = (
        "import sys\n"
        "from wstui.cli import main\n"
        f"rc = main(['ls', {str(tiny_llama)!r}, '--json', {str(tmp_path / 'x.json')!r}])\n"
        "assert rc == 0, rc\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "sys.exit('imported: ' + ', '.join(bad[:5]) if bad else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "attn_q" in run.stdout


def test_human_units() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"
    assert human_count(22_713_728) == "22.7M"
    assert human_count(7_241_732_096) == "7.2B"
    assert human_count(1_600_000_000_000) == "1.6T"
    assert human_count(999) == "999"


@pytest.mark.real
def test_minilm(minilm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "minilm.json"
    assert main(["ls", str(minilm_dir), "--json", str(out)]) == 0
    assert "104 tensors" in capsys.readouterr().out
    doc = jsonio.loads_strict(out.read_text())
    tensors = doc["tensors"]
    assert len(tensors) == 104 == doc["checkpoint"]["n_tensors"]
    kinds = Counter(t["kind"] for t in tensors)
    assert kinds == {"attn_q": 6, "attn_k": 6, "attn_v": 6, "attn_o": 6, "mlp_up": 6,
                     "mlp_down": 6, "norm": 13, "bias": 50, "embedding": 2,
                     "position_embedding": 1, "other": 2}
    by_name = {t["name"]: t for t in tensors}
    assert by_name["embeddings.word_embeddings.weight"]["kind"] == "embedding"
    assert by_name["encoder.layer.5.attention.output.dense.weight"]["kind"] == "attn_o"
    assert by_name["encoder.layer.5.output.dense.weight"]["kind"] == "mlp_down"
    assert by_name["encoder.layer.5.intermediate.dense.weight"]["block"] == 5
    assert by_name["embeddings.position_ids"]["analyzable"] is False
    assert [t["block"] for t in tensors if t["block"] is not None] == sorted(
        t["block"] for t in tensors if t["block"] is not None)
