"""The diff engine: matching across formats, the demo pair's planted changes, streaming,
errors, cancellation and the cache (DESIGN §5 compare, §8 wstui.diff/1)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch

from tests.scan_helpers import make_checkpoint, small_model
from wstui import jsonio
from wstui.checkpoint import open_checkpoint
from wstui.checkpoint.base import TensorRef
from wstui.demo import DemoPaths
from wstui.engine.diff import DiffEngine, match_tensors


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small SVDs slow down 5-10x with a multi-threaded BLAS on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def demo_report(demo_paths: DemoPaths):
    with open_checkpoint(demo_paths.base) as a, open_checkpoint(demo_paths.finetuned) as b:
        return DiffEngine(a, b, use_cache=False, device="cpu").run()


# ------------------------------------------------------------------------------ the demo pair
def test_demo_lowrank_updates_found_with_their_rank(demo_report, demo_manifest):
    lowrank = [c for c in demo_manifest["changes"] if c["change"] == "lowrank"]
    assert len(lowrank) == 3
    for c in lowrank:
        p = demo_report.pair(c["tensor"])
        assert p.rel_change == pytest.approx(c["rel_change"], abs=1e-3)
        assert 1 <= p.compare["delta_energy_rank_90"] <= c["rank"]


def test_demo_large_attention_change_ranked_first(demo_report, demo_manifest):
    full = next(c for c in demo_manifest["changes"] if c["change"] == "fullrank")
    first = demo_report.pairs[0]
    assert first.name == full["tensor"]
    assert first.compare["delta_energy_rank_90"] > 4 * max(
        c["rank"] for c in demo_manifest["changes"] if c["change"] == "lowrank")
    assert [f.code for f in first.result.findings] == ["large_change"]
    assert [(i.pair.name, i.finding.code) for i in demo_report.top_issues] == [
        (full["tensor"], "large_change")]


def test_demo_renamed_tensor_listed_on_both_sides(demo_report, demo_manifest):
    ren = next(c for c in demo_manifest["changes"] if c["change"] == "renamed")
    assert demo_report.only_in_a == [ren["tensor"]]
    assert demo_report.only_in_b == [ren["new_name"]]
    assert demo_report.shape_mismatch == []


def test_demo_untouched_tensors_unchanged(demo_report, demo_manifest):
    touched = {c["tensor"] for c in demo_manifest["changes"]}
    for p in demo_report.pairs:
        if p.name in touched or "compare" not in p.result.metrics:
            continue
        assert p.rel_change == 0.0 and p.compare["cosine"] == 1.0
        assert not p.result.findings


def test_demo_summaries_name_the_moved_blocks(demo_report, demo_manifest):
    s = demo_report.summary()
    blocks = [r for r in s["by_block"] if r["n_changed"]]
    assert [r["block"] for r in blocks] == [3, 2, 0, 4]  # by max rel_change
    assert blocks[0]["most_changed"] == "model.layers.3.self_attn.o_proj.weight"
    by_kind = {r["kind"]: r for r in s["by_kind"]}
    assert by_kind["mlp_gate"]["median_delta_energy_rank_90"] <= 4
    assert by_kind["attn_q"]["n_changed"] == 0 and by_kind["attn_q"]["most_changed"] is None


def test_json_strict_with_schema_keys(demo_report):
    doc = jsonio.loads_strict(jsonio.dumps(demo_report.to_dict()))
    assert doc["schema"] == "wstui.diff/1"
    for key in ("a", "b", "pairs", "only_in_a", "only_in_b", "shape_mismatch", "summary",
                "top_issues"):
        assert key in doc
    pair = doc["pairs"][0]
    assert {"name", "name_b", "shape", "metrics", "findings"} <= set(pair)
    assert "rel_change" in pair["metrics"]["compare"]
    assert set(doc["summary"]) == {"by_kind", "by_block"}


# ------------------------------------------------------------------------------ GGUF and self
def test_gguf_q8_matches_every_tensor_at_noise_level(demo_paths):
    with open_checkpoint(demo_paths.base) as a, open_checkpoint(demo_paths.gguf) as b:
        report = DiffEngine(a, b, use_cache=False, device="cpu", spectral=False).run()
    assert not report.only_in_a and not report.only_in_b and not report.shape_mismatch
    assert len(report.pairs) == len(a.tensors)
    compared = [p for p in report.pairs if p.rel_change is not None]
    assert len(compared) >= len(report.pairs) - 1  # the planted NaN tensor is skipped
    for p in compared:
        # Q8_0: one scale per 32 values; the planted outlier tensor is the worst, near 1e-2
        assert p.rel_change < 0.02, p.name
        assert p.compare["cosine"] > 0.999
    assert any(p.b.name.startswith("blk.") for p in report.pairs)


def test_gguf_f32_round_trip_is_exact(tmp_path, demo_paths):
    from safetensors.torch import load_file

    from wstui.checkpoint.gguf_write import write_gguf

    state = load_file(demo_paths.base / "model.safetensors")
    state = {k: v for k, v in state.items() if ".layers.0." in k or "layers" not in k}
    config = jsonio.loads_strict((demo_paths.base / "config.json").read_text())
    config["num_hidden_layers"] = 1
    path = write_gguf(state, config, tmp_path / "f32.gguf", qtype="F32")
    with open_checkpoint(demo_paths.base) as a, open_checkpoint(path) as b:
        report = DiffEngine(a, b, use_cache=False, device="cpu", spectral=False).run()
    assert {p.name for p in report.pairs} == set(state)
    qk = [p for p in report.pairs if p.a.kind in ("attn_q", "attn_k")]
    assert qk  # the q/k row permutation is undone
    for p in report.pairs:
        if p.rel_change is not None:
            assert p.rel_change < 1e-7, p.name


def test_checkpoint_against_itself(demo_paths):
    with open_checkpoint(demo_paths.base) as a, open_checkpoint(demo_paths.base) as b:
        report = DiffEngine(a, b, use_cache=False, device="cpu",
                            tensors="model.layers.1.*").run()
    assert len(report.pairs) == 9 and not report.only_in_a and not report.only_in_b
    for p in report.pairs:
        c = p.compare
        assert c["rel_change"] == 0.0 and c["l2_distance"] == 0.0 and c["frac_changed"] == 0.0
        if len(p.shape) == 2:
            assert c["delta_energy_rank_90"] == 0 and c["delta_alpha"] in (0.0, None)
    assert report.top_issues == []


# ------------------------------------------------------------------------------ matching
def _ref(name: str, shape: tuple[int, ...], kind: str = "other", **kw) -> TensorRef:
    return TensorRef(name=name, shape=shape, dtype="F32", nbytes=0, file=Path("x"),
                     hf_name=kw.pop("hf_name", name), kind=kind, **kw)


def test_match_by_hf_name_across_stored_names():
    a = [_ref("model.layers.0.self_attn.q_proj.weight", (8, 8), "attn_q")]
    b = [_ref("blk.0.attn_q.weight", (8, 8), "attn_q",
              hf_name="model.layers.0.self_attn.q_proj.weight")]
    m = match_tensors(a, b)
    assert [(p.a.name, p.b.name) for p in m.pairs] == [
        ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight")]


def test_match_resized_vocab_tied_head_and_mismatch():
    a = [_ref("model.embed_tokens.weight", (100, 8), "embedding"),
         _ref("model.layers.0.mlp.up_proj.weight", (16, 8), "mlp_up", block=0),
         _ref("model.norm.weight", (8,), "norm")]
    b = [_ref("model.embed_tokens.weight", (104, 8), "embedding"),
         _ref("model.layers.0.mlp.up_proj.weight", (8, 16), "mlp_up", block=0),
         _ref("lm_head.weight", (104, 8), "lm_head"),
         _ref("extra.weight", (3,))]
    m = match_tensors(a, b)
    emb = next(p for p in m.pairs if p.b.name == "model.embed_tokens.weight")
    assert emb.rows == 100 and emb.shape == (100, 8) and "resized" in emb.note
    head = next(p for p in m.pairs if p.b.name == "lm_head.weight")
    assert head.a.name == "model.embed_tokens.weight" and "tied" in head.note
    assert head.rows == 100
    assert m.shape_mismatch == [{"name": "model.layers.0.mlp.up_proj.weight",
                                 "name_b": "model.layers.0.mlp.up_proj.weight",
                                 "shape_a": [16, 8], "shape_b": [8, 16]}]
    assert m.only_in_a == ["model.norm.weight"] and m.only_in_b == ["extra.weight"]


def test_resized_vocab_compares_common_rows(tmp_path):
    emb = torch.randn(20, 6)
    a = make_checkpoint(tmp_path / "a", {"model.embed_tokens.weight": emb})
    b = make_checkpoint(tmp_path / "b", {"model.embed_tokens.weight": torch.cat(
        [emb, torch.randn(4, 6)])})
    report = DiffEngine(a, b, use_cache=False, device="cpu").run()
    (p,) = report.pairs
    assert p.rel_change == 0.0 and p.result.shape == (20, 6)
    assert "the first 20 rows" in p.note


# ------------------------------------------------------------------------------ engine
def _pair_of_models(tmp_path):
    """A small model and a copy whose matrices are scaled by 1.5 (rel_change 0.5)."""
    base = small_model(0)
    other = {k: (v * 1.5 if v.dtype.is_floating_point and v.dim() == 2 else v)
             for k, v in base.items()}
    return make_checkpoint(tmp_path / "a", base), make_checkpoint(tmp_path / "b", other)


def test_cheap_ranking_streams_before_any_spectrum(tmp_path):
    a, b = _pair_of_models(tmp_path)
    seen: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def on_result(name, result):
        with lock:
            seen.append((name, "delta_energy_rank_90" in result.metrics.get("compare", {})))

    engine = DiffEngine(a, b, use_cache=False, device="cpu", workers=2)
    report = engine.run(on_result)
    first_heavy = next(i for i, (_, heavy) in enumerate(seen) if heavy)
    cheap_before = {n for n, heavy in seen[:first_heavy] if not heavy}
    compared = [p for p in report.pairs if p.rel_change is not None]
    assert len(cheap_before) >= len(compared) - engine.workers
    assert engine.t_cheap_done is not None and engine.t_cheap_done <= report.elapsed_s
    assert all(math.isclose(p.rel_change, 0.5, rel_tol=1e-5) for p in compared
               if len(p.shape) == 2)
    assert engine.progress().done == engine.progress().total


def test_error_on_one_pair_recorded_rest_go_on(tmp_path):
    base = small_model(0)
    a = make_checkpoint(tmp_path / "a", base, fail={"model.layers.0.mlp.up_proj.weight"})
    b = make_checkpoint(tmp_path / "b", base)
    report = DiffEngine(a, b, use_cache=False, device="cpu").run()
    bad = report.pair("model.layers.0.mlp.up_proj.weight")
    assert "truncated data" in bad.result.errors["load"]
    assert bad is report.pairs[-1] or bad.rel_change is None
    ok = [p for p in report.pairs if p.rel_change is not None]
    assert len(ok) == len(report.pairs) - 2  # the failed one and the integer position_ids
    assert report.pair("position_ids").result.skipped["compare"]


def test_at_most_workers_pairs_resident(tmp_path):
    base = small_model(0, layers=3)
    a = make_checkpoint(tmp_path / "a", base, delay_s=0.01)
    b = make_checkpoint(tmp_path / "b", base, delay_s=0.01)
    DiffEngine(a, b, use_cache=False, device="cpu", workers=2).run()
    reader = a.readers[0]
    assert reader.loads > 0 and reader.max_in_flight <= 2 + 1


def test_cancel_stops_early_and_keeps_done_results(tmp_path):
    base = small_model(0, layers=4)
    a = make_checkpoint(tmp_path / "a", base, delay_s=0.05)
    b = make_checkpoint(tmp_path / "b", base)
    engine = DiffEngine(a, b, use_cache=False, device="cpu", workers=1)
    engine.start()
    engine.cancel()
    assert engine.wait(5.0)
    report = engine.report()
    assert not report.complete and engine.progress().phase == "cancelled"
    assert sum(1 for p in report.pairs if p.result.metrics) < len(report.pairs)


def test_cache_keyed_on_both_files(tmp_path):
    cache = tmp_path / "cache.sqlite"
    a, b = _pair_of_models(tmp_path)
    first = DiffEngine(a, b, cache_path=cache, device="cpu").run()
    engine = DiffEngine(a, b, cache_path=cache, device="cpu")
    again = engine.run()
    n_compared = sum(1 for p in first.pairs if p.result.metrics)
    assert engine.progress().cached == n_compared and engine.progress().total == 0
    assert [p.compare for p in again.pairs] == [p.compare for p in first.pairs]
    # a different B (same tensor names, other file) is not served from A's entries
    c = make_checkpoint(tmp_path / "c", small_model(1))
    engine = DiffEngine(a, c, cache_path=cache, device="cpu", spectral=False)
    engine.run()
    assert engine.progress().cached == 0


def test_out_of_device_memory_falls_back_to_cpu(tmp_path, monkeypatch):
    import analyzers

    a, b = _pair_of_models(tmp_path)
    real = analyzers.compare
    devices = []

    def fake(ta, tb, **kw):
        devices.append(kw["options"]["device"])
        if kw["options"]["device"] != "cpu":
            from analyzers.core import TensorResult

            r = TensorResult(name=kw["name"])
            r.errors["compare"] = "OutOfMemoryError: CUDA out of memory"
            return r
        return real(ta, tb, **kw)

    import dataclasses

    from analyzers import core

    spec = core.registry("pair")["compare"]  # the engine runs the registered pair analyzer
    monkeypatch.setitem(core._REGISTRY, "compare", dataclasses.replace(spec, fn=fake))
    engine = DiffEngine(a, b, use_cache=False, device="cpu", spectral=False)
    engine.device = "cuda"  # as if a GPU were there and full
    report = engine.run()
    assert "cuda" in devices and "cpu" in devices
    assert all(not p.result.errors for p in report.pairs)
    assert report.pair("model.layers.0.mlp.up_proj.weight").rel_change == pytest.approx(0.5)


def test_compare_passes_split_without_overlap():
    """The engine's two passes: elementwise only, then spectra only; together the full set."""
    import analyzers

    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 24, generator=g)
    b = a + 0.3 * torch.randn(40, 1, generator=g) @ torch.randn(1, 24, generator=g)
    full = analyzers.compare(a, b)
    cheap = analyzers.compare(a, b, options={"compare_spectral": False})
    heavy = analyzers.compare(a, b, options={"compare_elementwise": False})
    assert "delta_energy_rank_90" not in cheap.metrics["compare"]
    assert "rel_change" not in heavy.metrics["compare"] and not heavy.findings
    assert {**cheap.metrics["compare"], **heavy.metrics["compare"]} == full.metrics["compare"]
    assert heavy.metrics["compare"]["delta_energy_rank_90"] == 1
    same = analyzers.compare(a, a.clone(), options={"compare_elementwise": False})
    assert same.metrics["compare"]["delta_energy_rank_90"] == 0


def test_one_load_per_pair_gives_the_same_numbers(tmp_path):
    a, b = _pair_of_models(tmp_path)
    reader = a.readers[0]
    first = DiffEngine(a, b, use_cache=False, device="cpu", ranking_first=True).run()
    compared = sum(1 for p in first.pairs if p.result.metrics)
    matrices = sum(1 for p in first.pairs if "delta_energy_rank_90" in p.compare)
    assert reader.loads == compared + matrices  # the spectral pass loads again
    engine = DiffEngine(a, b, use_cache=False, device="cpu", ranking_first=False)
    once = engine.run()
    assert reader.loads == 2 * compared + matrices  # one load per pair
    assert [p.compare for p in once.pairs] == [p.compare for p in first.pairs]
    assert engine.progress().done == engine.progress().total


def test_torch_bin_against_safetensors_with_tied_head(tmp_path):
    """A .bin whose lm_head shares the embedding's storage against a safetensors file that
    stores lm_head apart: every tensor pairs up by name and nothing changed."""
    from safetensors.torch import save_file

    state = {k: v for k, v in small_model(0).items() if v.dtype.is_floating_point}
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    (tmp_path / "bin").mkdir()
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    save_file({k: v.clone() for k, v in state.items()}, str(tmp_path / "m.safetensors"))
    with open_checkpoint(tmp_path / "bin") as a, open_checkpoint(tmp_path / "m.safetensors") as b:
        assert a.format == "torch" and b.format == "safetensors"
        report = DiffEngine(a, b, use_cache=False, device="cpu", spectral=False).run()
    assert not report.only_in_a and not report.only_in_b
    assert {p.name for p in report.pairs} == set(state)
    assert all(p.rel_change == 0.0 for p in report.pairs)
    head = report.pair("lm_head.weight")
    assert head.a.tied_to == "model.embed_tokens.weight" and "tied to" in head.note


def test_spectral_pass_reuses_the_spectra_of_cached_scans(tmp_path, monkeypatch):
    """After scans of A and B, the diff computes only ΔW's spectrum (one of three) and takes
    A's and B's alphas and σ picks from the scans' cached `spectral` results."""
    import importlib

    from wstui.engine.scan import ScanEngine

    cmp = importlib.import_module("analyzers.compare")  # the attribute is the function

    base = small_model(3)
    g = torch.Generator().manual_seed(1)  # fixed: an unseeded B made the test depend on luck
    other = {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in base.items()}
    ca = make_checkpoint(tmp_path / "a", base)
    cb = make_checkpoint(tmp_path / "b", other)
    db = tmp_path / "cache.sqlite"
    scans = {}
    for side, ck in (("a", ca), ("b", cb)):
        scans[side] = ScanEngine(ck, methods=["spectral"], cache_path=db, device="cpu").run()
    calls = []
    real = cmp.singular_values
    monkeypatch.setattr(cmp, "singular_values", lambda m: calls.append(m.shape) or real(m))
    report = DiffEngine(ca, cb, cache_path=db, device="cpu", ranking_first=False).run()
    matrices = [p for p in report.pairs if len(p.shape) == 2]
    assert matrices and len(calls) == len(matrices)  # ΔW only
    for p in matrices:
        c = p.compare
        assert c["alpha_a"] == scans["a"].entry(p.name).result.metrics["spectral"]["alpha"]
        assert c["alpha_b"] == scans["b"].entry(p.name).result.metrics["spectral"]["alpha"]
        assert p.result.data["compare"]["spectrum_a"] == (
            scans["a"].entry(p.name).result.data["spectral"]["spectrum"])
    fresh = DiffEngine(ca, cb, use_cache=False, device="cpu", ranking_first=False).run()
    for p, q in zip(matrices, (p for p in fresh.pairs if len(p.shape) == 2)):
        assert p.compare["delta_stable_rank"] == pytest.approx(q.compare["delta_stable_rank"])
        assert p.compare["alpha_a"] == pytest.approx(q.compare["alpha_a"], abs=1e-6)
