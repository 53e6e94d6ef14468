"""`wstui sensitivity` and `Scope.sensitivity`: the same document, its schema, the CSV, the
model built from our readers, and bad input as one line with exit 2."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.sens_models import save_llama_dir, tiny_llama
from wstui import jsonio
from wstui.cli import main

#: small settings so that a run on the tiny model takes seconds
FAST = ["--tokens", "64", "--topk", "5", "--seeds", "0,1", "--quiet"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_llama_dir(tmp_path_factory.mktemp("sens") / "tiny", seed=0)


def _strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "timings"}


def test_model_built_from_our_readers_matches_transformers(llama_dir: Path):
    from wstui.checkpoint import open_checkpoint
    from wstui.lm.build import build_lm

    ref = tiny_llama(0)
    ids = torch.randint(0, 64, (1, 20), generator=torch.Generator().manual_seed(0))
    with open_checkpoint(llama_dir) as ckpt:
        lm = build_lm(ckpt)
        with torch.no_grad():
            assert torch.allclose(lm.model(ids).logits, ref(ids).logits, atol=1e-5)
    assert not any(p.is_meta for p in lm.model.parameters())
    assert not any(b.is_meta for b in lm.model.buffers())


def test_cli_and_scope_give_the_same_document(llama_dir: Path, tmp_path: Path):
    from wstui.api import Scope

    out = tmp_path / "s.json"
    assert main(["sensitivity", str(llama_dir), *FAST, "--json", str(out),
                 "--csv", str(tmp_path / "s.csv"), "--no-cache"]) == 0
    cli_doc = jsonio.loads_strict(out.read_text(encoding="utf-8"))
    with Scope(llama_dir, use_cache=False) as s:
        api_doc = s.sensitivity(tokens=64, topk=5, seeds=(0, 1))
    assert _strip(cli_doc) == _strip(jsonio.strict(api_doc))

    doc = cli_doc
    assert doc["schema"] == "wstui.sensitivity/1"
    assert doc["text"]["source"] == "wstui:data/calibration.txt"
    assert doc["text"]["tokens"] == 64 and len(doc["text"]["sha256"]) == 64
    assert doc["perplexity"] > 1
    names = {t["name"] for t in doc["tensors"]}
    assert "model.layers.0.mlp.down_proj.weight" in names
    for t in doc["tensors"]:
        assert {"name", "hf_name", "kind", "block", "shape", "grad_x_weight", "fisher", "wanda",
                "hutchinson", "hutchinson_stderr"} <= set(t)
        assert t["grad_x_weight"] >= 0 and t["fisher"] >= 0
    assert [t["metric"] for t in doc["topk"]] == ["grad_x_weight", "fisher", "wanda"]
    top = doc["topk"][0]
    assert top["mode"] == "global" and len(top["weights"]) == 5
    scores = [w["score"] for w in top["weights"]]
    assert scores == sorted(scores, reverse=True)
    targets = [(r["target"], r["metric"], r["seed"]) for r in doc["perturbation"]]
    assert ("top_k", "grad_x_weight", None) in targets
    assert ("random_k", None, 0) in targets and ("random_k", None, 1) in targets
    assert ("bottom_k", "grad_x_weight", None) in targets
    for r in doc["perturbation"]:
        assert r["ppl_ratio"] == pytest.approx(r["ppl"] / doc["perplexity"])
    assert set(doc["stability"]["halves"]) >= {"grad_x_weight", "fisher", "wanda"}
    assert len(doc["massive_activations"]["layers"]) == 2
    assert "by_kind" in doc["summary"] and "static" in doc["summary"]
    assert doc["summary"]["static"]["n_matrices"] == 16  # 7 per block x 2, embedding, lm_head

    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(doc["tensors"])
    assert {"name", "grad_x_weight", "fisher", "wanda", "alpha"} <= set(rows[0])


def test_head_and_layerwise_modes(llama_dir: Path):
    from wstui.api import Scope

    with Scope(llama_dir, use_cache=False) as s:
        doc = s.sensitivity(tokens=32, topk=3, seeds=(0,), metrics=("grad_x_weight",),
                            mode="head", stability=False, static=False, controls=())
        lw = s.sensitivity(tokens=32, topk=3, seeds=(0,), metrics=("magnitude",),
                           mode="layerwise", stability=False, static=False, controls=())
    heads = [(t["tensor"], t["head"]) for t in doc["topk"]]
    # q and o split in 4 heads, k and v in 2 (num_key_value_heads), in both blocks
    assert ("model.layers.0.self_attn.q_proj.weight", 3) in heads
    assert ("model.layers.1.self_attn.k_proj.weight", 1) in heads
    assert ("model.layers.1.self_attn.k_proj.weight", 2) not in heads
    assert len(heads) == 2 * (4 + 2 + 2 + 4)
    for t in doc["topk"]:
        for w in t["weights"]:
            head_rows = w["col"] if t["tensor"].endswith("o_proj.weight") else w["row"]
            assert head_rows // 8 == t["head"]  # head_dim 8
    assert [t["block"] for t in lw["topk"]] == [0, 1, None]


def test_eval_files(llama_dir: Path, tmp_path: Path):
    from wstui.api import Scope

    mc = tmp_path / "hs.jsonl"
    mc.write_text("\n".join(json.dumps({"ctx": "The river", "endings": [" runs", " flies"],
                                        "label": i % 2}) for i in range(3)), encoding="utf-8")
    lw = tmp_path / "lambada.jsonl"
    lw.write_text(json.dumps({"text": "the bread and the river"}) + "\n", encoding="utf-8")
    with Scope(llama_dir, use_cache=False) as s:
        for f, kind in ((mc, "multiple_choice"), (lw, "last_word")):
            doc = s.sensitivity(tokens=32, topk=2, seeds=(0,), metrics=("magnitude",),
                                stability=False, static=False, eval_file=f)
            assert doc["eval"]["kind"] == kind and 0 <= doc["eval"]["accuracy"] <= 1
            assert all(0 <= r["accuracy"] <= 1 for r in doc["perturbation"])


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> str:
    capsys.readouterr()  # drop what building the test folders printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def test_bad_input_is_one_line_and_exit_2(llama_dir: Path, tmp_path: Path, minilm_dir: Path,
                                          capsys: pytest.CaptureFixture):
    _one_line_exit_2(["sensitivity", str(minilm_dir), *FAST], capsys, "not a causal LM")
    no_tok = tmp_path / "no_tok"
    save_llama_dir(no_tok, tokenizer=False)
    _one_line_exit_2(["sensitivity", str(no_tok), *FAST], capsys, "no tokenizer")
    short = tmp_path / "short.txt"
    short.write_text("Too short.", encoding="utf-8")
    _one_line_exit_2(["sensitivity", str(llama_dir), *FAST, "--text", str(short)], capsys,
                     "shorter than --tokens 64", str(short))
    _one_line_exit_2(["sensitivity", str(llama_dir), *FAST, "--eval", str(tmp_path / "nope")],
                     capsys, "--eval", "nope")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "a", "endings": ["b"], "label": 0}\n', encoding="utf-8")
    _one_line_exit_2(["sensitivity", str(llama_dir), *FAST, "--eval", str(bad)], capsys,
                     "line 1")
    _one_line_exit_2(["sensitivity", str(llama_dir), *FAST, "--eval", str(tmp_path)], capsys,
                     "directory")
    _one_line_exit_2(["sensitivity", str(llama_dir), *FAST, "--mode", "rows"], capsys, "--mode")
    _one_line_exit_2(["sensitivity", str(llama_dir), *FAST, "--metrics", "taylor"], capsys,
                     "taylor")
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    (weights_only / "model.safetensors").write_bytes(
        (llama_dir / "model.safetensors").read_bytes())
    _one_line_exit_2(["sensitivity", str(weights_only / "model.safetensors"), *FAST], capsys,
                     "no config.json")


def test_cold_paths_do_not_import_transformers(llama_dir: Path):
    code = ("import sys, contextlib, io\n"
            "from wstui.cli import main\n"
            f"main(['ls', {str(llama_dir)!r}])\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['sensitivity', '--help'])\n"
            "print('transformers' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_the_study_is_a_model_task_on_the_pool_with_progress_and_cancel(llama_dir: Path):
    """Issue 11: the sensitivity runner is a model-scope task of the one pool: its steps come
    as the pool's `Progress` (phase "model", the step as `current`), the static metrics follow
    as tensor tasks of the same job, and a cancel stops it at its next step."""
    import time

    from wstui.checkpoint import open_checkpoint
    from wstui.engine.model import Cancelled
    from wstui.engine.sensitivity import run_sensitivity

    fast = dict(tokens=64, topk=5, seeds=(0, 1), stability=False, use_cache=False)
    seen: list = []
    with open_checkpoint(llama_dir) as ckpt:
        doc = run_sensitivity(ckpt, on_progress=seen.append, **fast)
    assert doc["schema"] == "wstui.sensitivity/1" and doc["summary"]["static"]["n_matrices"]
    steps = [p.current for p in seen if p.phase == "model"]
    assert "building the model" in steps and "super weights" in steps
    assert seen[-1].phase == "done" and seen[-1].done == seen[-1].total > 1

    jobs: list = []
    said: list[str] = []

    def say(msg: str) -> None:
        said.append(msg)
        if msg == "perplexity":
            jobs[0].cancel()

    with open_checkpoint(llama_dir) as ckpt:
        t0 = time.perf_counter()
        with pytest.raises(Cancelled):
            run_sensitivity(ckpt, progress=say, job_hook=jobs.append, **fast)
        assert time.perf_counter() - t0 < 30
    assert "super weights" not in said and jobs[0].cancelled and jobs[0].done
