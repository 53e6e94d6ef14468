"""ScanEngine: phase order, prioritize, request, errors, cancellation, bounded residency.

These tests use stand-in analyzers registered in a private registry, so that they do not
depend on the real analyzers' speed and can count and order calls.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from analyzers import core
from analyzers.core import Output
from tests.scan_helpers import CALLS, install_fakes, make_checkpoint, small_model
from wstui.checkpoint.select import select_tensors
from wstui.engine.scan import BIG_NUMEL, ScanEngine, validate_methods


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    monkeypatch.setenv("WSTUI_CACHE_DIR", str(tmp_path / "cache"))
    install_fakes(monkeypatch)


@pytest.fixture
def ckpt(tmp_path):
    with make_checkpoint(tmp_path / "m", small_model()) as c:
        yield c


def test_cheap_phase_runs_before_heavy(fake_registry, ckpt):
    eng = ScanEngine(ckpt, workers=1, use_cache=False)
    report = eng.run()
    assert report.complete
    phases = ["heavy" if a == "fspec" else "cheap" for a, _ in CALLS]
    first_heavy = phases.index("heavy")
    assert all(p == "heavy" for p in phases[first_heavy:])
    # every float tensor got every method; the integer one was skipped with a reason
    res = report.tensors
    assert res["model.layers.0.self_attn.q_proj.weight"].metrics["fspec"]["sv_max"] > 0
    assert "fspec" in res["model.norm.weight"].skipped
    assert res["position_ids"].skipped["fstats"] == "integer tensor"
    assert not any(name == "position_ids" for _, name in CALLS)


def test_prioritize_moves_tensor_to_front(fake_registry, tmp_path):
    c = make_checkpoint(tmp_path / "m", small_model(layers=4), delay_s=0.02)
    eng = ScanEngine(c, workers=1, use_cache=False)
    target = "model.layers.3.mlp.down_proj.weight"
    eng.prioritize(target)  # before start: applied once the queue exists
    eng.run()
    names = [n for _, n in CALLS]
    # both phases of the prioritized tensor come before any other tensor
    assert names[:3] == [target] * 3
    c.close()


def test_prioritize_while_running(fake_registry, tmp_path):
    c = make_checkpoint(tmp_path / "m", small_model(layers=4), delay_s=0.05)
    eng = ScanEngine(c, workers=1, use_cache=False)
    eng.start()
    time.sleep(0.12)
    target = "model.layers.3.self_attn.k_proj.weight"
    eng.prioritize(target)
    assert eng.wait(30)
    names = [n for a, n in CALLS if a == "fstats"]
    assert names.index(target) <= 4  # the head task(s) already taken may finish first
    spec_names = [n for a, n in CALLS if a == "fspec"]
    assert spec_names[0] == target
    c.close()


def test_request_runs_extra_methods_first(fake_registry, tmp_path):
    c = make_checkpoint(tmp_path / "m", small_model(layers=3), delay_s=0.03)
    seen: list[tuple[str, set[str]]] = []
    eng = ScanEngine(c, workers=1, use_cache=False, methods=["fstats", "fspec"])
    eng.start(on_result=lambda n, r: seen.append((n, set(r.metrics))))
    time.sleep(0.05)
    target = "model.layers.2.mlp.up_proj.weight"
    eng.request(target, ["fslow"])
    assert eng.wait(30)
    slow_at = CALLS.index(("fslow", target))
    assert slow_at < len([1 for a, _ in CALLS if a == "fstats"])  # before the cheap phase ended
    assert eng.snapshot()[target].metrics["fslow"] == {"ok": True}
    # a repeated request is served from the results at once
    n_before = len(CALLS)
    eng.request(target, ["fslow"])
    assert eng.wait(5)
    assert len(CALLS) == n_before
    assert any(n == target and "fslow" in m for n, m in seen)
    c.close()


def test_request_after_scan_finished(fake_registry, ckpt):
    eng = ScanEngine(ckpt, workers=2, use_cache=False, methods=["fstats"])
    eng.run()
    assert eng.done
    eng.request("model.layers.1.mlp.up_proj.weight", ["fspec"])
    assert eng.wait(10)
    r = eng.snapshot()["model.layers.1.mlp.up_proj.weight"]
    assert "fspec" in r.metrics and "fstats" in r.metrics


def test_error_in_one_analyzer_is_recorded_and_scan_goes_on(fake_registry, ckpt):
    eng = ScanEngine(ckpt, workers=2, use_cache=False, methods=["fstats", "fboom"])
    report = eng.run()
    res = report.tensors
    q = res["model.layers.0.self_attn.q_proj.weight"]
    assert "kaboom" in q.errors["fboom"]
    assert "fstats" in q.metrics
    assert res["model.layers.0.self_attn.k_proj.weight"].metrics["fboom"] == {"ok": True}
    d = report.to_dict()
    entry = next(t for t in d["tensors"] if t["name"] == q.name)
    assert entry["errors"][0]["analyzer"] == "fboom"


def test_load_error_is_recorded(fake_registry, tmp_path):
    bad = "model.layers.1.mlp.up_proj.weight"
    c = make_checkpoint(tmp_path / "m", small_model(), fail={bad})
    report = ScanEngine(c, workers=2, use_cache=False).run()
    assert "truncated" in report.tensors[bad].errors["load"]
    assert "fspec" in report.tensors["model.layers.1.mlp.down_proj.weight"].metrics
    c.close()


def test_bounded_residency(fake_registry, tmp_path):
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(64, 32) for i in range(12)}
    c = make_checkpoint(tmp_path / "m", tensors, delay_s=0.01)
    eng = ScanEngine(c, workers=2, use_cache=False)
    eng.run()
    reader = c.readers[0]
    assert reader.loads == 24  # each tensor loaded once per phase
    assert reader.max_in_flight <= eng.workers + 1
    assert eng.max_loads_in_flight <= eng.workers
    c.close()


def _big_square(tmp_path, n: int, delay_s: float = 0.05):
    side = int(BIG_NUMEL**0.5) + 1
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(side, side) for i in range(n)}
    tensors["model.norm.weight"] = torch.ones(8)
    return make_checkpoint(tmp_path / "m", tensors, delay_s=delay_s)


def test_big_tensors_share_the_cpu_within_the_memory_budget(fake_registry, tmp_path):
    """Elementwise work on big tensors runs side by side on the CPU (numpy uses one core),
    as many at once as their bytes fit in 4x the largest tensor: two of three equal ones."""
    c = _big_square(tmp_path, 3)
    eng = ScanEngine(c, workers=3, use_cache=False, methods=["fstats"])
    eng.run()
    assert eng.max_loads_in_flight == 2
    assert eng.mem_budget == 16.0 * c.tensors[0].numel
    c.close()


def test_a_big_spectrum_that_needs_half_the_budget_runs_alone(fake_registry, tmp_path):
    """A square big matrix's Gram matrix and eigvalsh workspace are more than half the budget:
    its spectrum takes every slot (and every core)."""
    c = _big_square(tmp_path, 2)
    eng = ScanEngine(c, workers=2, use_cache=False, methods=["fspec"])
    eng.run()
    assert c.readers[0].max_in_flight == 1 or eng.max_loads_in_flight == 1
    c.close()


def test_tensor_slots_and_memory():
    from wstui.engine.pool import tensor_mem, tensor_slots

    n = BIG_NUMEL
    assert tensor_mem((n,), heavy=False) == 8.0 * n  # the copy and its scratch
    tall = tensor_mem((n // 4, 4), heavy=True)  # the copy, the float64 chunk, a tiny Gram
    assert tall == 4.0 * n + 8.0 * n + 3 * 8.0 * 16
    budget = 16.0 * 4 * n  # the largest tensor has 4n values
    assert tensor_slots(n - 1, 1e12, 8, "cpu", budget) == 1  # small: one slot, always
    assert tensor_slots(n, tall, 8, "cpu", budget) == 1  # side by side with others
    assert tensor_slots(n, tall, 8, "cuda", budget) == 8  # a GPU: alone
    largest = tensor_mem((n, 4), heavy=True)  # the largest tensor's spectrum
    assert tensor_slots(4 * n, largest, 8, "cpu", budget) == 8  # over half the budget: alone


def test_cancel_stops_quickly_and_keeps_results(fake_registry, tmp_path):
    c = make_checkpoint(tmp_path / "m", small_model(layers=6), delay_s=0.01)
    eng = ScanEngine(c, workers=2, use_cache=False, methods=["fstats", "fslow"])
    eng.start()
    time.sleep(0.4)
    t0 = time.perf_counter()
    eng.cancel()
    assert time.perf_counter() - t0 < 0.1
    assert eng.wait(2.0)
    report = eng.report()
    assert not report.complete
    n_slow = sum(1 for a, _ in CALLS if a == "fslow")
    assert n_slow < len(c.tensors) - 1
    assert len(report.entries) >= 1
    c.close()


def test_wait_respects_timeout(fake_registry, tmp_path):
    c = make_checkpoint(tmp_path / "m", small_model(layers=2))
    eng = ScanEngine(c, workers=1, use_cache=False, methods=["fslow"])
    eng.start()
    t0 = time.perf_counter()
    assert eng.wait(0.1) is False
    assert time.perf_counter() - t0 < 0.5
    eng.cancel()
    assert eng.wait(2.0)
    c.close()


def test_progress_and_results_stream(fake_registry, ckpt):
    progress = []
    results: dict[str, int] = {}
    lock = threading.Lock()

    def on_result(name, r):
        with lock:
            results[name] = results.get(name, 0) + 1

    eng = ScanEngine(ckpt, workers=2, use_cache=False)
    eng.run(on_result=on_result, on_progress=progress.append)
    assert progress[-1].done == progress[-1].total > 0
    assert progress[-1].phase == "done"
    assert results["model.layers.0.mlp.up_proj.weight"] >= 3  # one per analyzer landed


def test_methods_and_tensor_selection(fake_registry, ckpt):
    with pytest.raises(ValueError, match="unknown analyzer 'nope'"):
        validate_methods(["fstats", "nope"])
    assert validate_methods(["fspec", "fstats"]) == ["fstats", "fspec"]
    sel = select_tensors(ckpt.tensors, "*q_proj*")
    assert [t.name for t in sel] == [
        "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"]
    assert select_tensors(ckpt.tensors, "model.norm.weight")[0].name == "model.norm.weight"
    report = ScanEngine(ckpt, tensors=sel, use_cache=False).run()
    assert set(report.tensors) == {t.name for t in sel}


def test_report_json_records_and_thresholds(fake_registry, ckpt, tmp_path):
    from wstui import jsonio
    from wstui.documents.scan import write_csv

    bad = ckpt.tensor("model.layers.0.mlp.up_proj.weight")
    assert bad is not None
    report = ScanEngine(ckpt, use_cache=False,
                        options={"thresholds": {"ill_conditioned": 1.0}}).run()
    assert report.top_issues and report.top_issues[0].finding.code == "ill_conditioned"
    doc = jsonio.loads_strict(jsonio.dumps(report.to_dict()))
    assert doc["schema"] == "wstui.scan/1"
    assert {"checkpoint", "methods", "device", "elapsed_s", "tensors", "top_issues"} <= set(doc)
    t = doc["tensors"][0]
    assert {"name", "hf_name", "shape", "dtype", "kind", "block", "metrics", "findings",
            "errors"} <= set(t)
    recs = report.to_records()
    up = next(r for r in recs if r["name"] == bad.name)
    assert up["fquant.sqnr_db.8bit.tensor.sym"] == 40.0
    assert up["fquant.sqnr_db.4bit.channel.asym"] == 20.0
    assert up["shape"] == "96x48"
    out = write_csv(report, tmp_path / "r.csv")
    header = out.read_text().splitlines()[0].split(",")
    assert header[:6] == ["name", "hf_name", "kind", "block", "shape", "dtype"]
    assert "fspec.condition_number" in header


def test_infinite_condition_number_is_null_with_flag(fake_registry, tmp_path):
    from wstui import jsonio

    w = torch.randn(16, 8)
    w[:, 3] = 0.0
    w[:, 5] = 0.0
    c = make_checkpoint(tmp_path / "m", {"model.layers.0.mlp.up_proj.weight": w})
    report = ScanEngine(c, use_cache=False, methods=["fspec"]).run()
    text = jsonio.dumps(report.to_dict())
    doc = jsonio.loads_strict(text)
    spec = doc["tensors"][0]["metrics"]["fspec"]
    # fspec is a stand-in; export flags only the `spectral` section
    assert spec["condition_number"] is None or spec["condition_number"] > 1e5
    c.close()


def test_threads_per_worker(fake_registry, ckpt):
    eng = ScanEngine(ckpt, workers=1, use_cache=False)
    assert eng.workers == 1
    with pytest.raises(ValueError):
        ScanEngine(ckpt, workers=0)


def test_path_types(fake_registry, ckpt):
    assert isinstance(ckpt.path, Path)


def test_export_flags_rank_deficient_and_flattens_schemes():
    from analyzers.core import TensorResult
    from wstui import jsonio
    from wstui.checkpoint.base import TensorRef
    from wstui.documents.scan import record, tensor_json

    ref = TensorRef(name="blk.0.attn_q.weight", shape=(8, 8), dtype="Q8_0", nbytes=0,
                    file=Path("x.gguf"), hf_name="model.layers.0.self_attn.q_proj.weight",
                    kind="attn_q", block=0)
    r = TensorResult(name=ref.name, metrics={
        "spectral": {"condition_number": float("inf"), "alpha": float("nan"), "sv_max": 2.0},
        "quantization": {"schemes": [
            {"bits": 8, "granularity": "tensor", "scheme": "sym", "sqnr_db": 31.5,
             "cosine": 0.999}], "int8_ready": True},
        "stats": {"histogram": {"edges": [0.0, 1.0], "counts": [3]}, "mean": 0.1},
    })
    doc = jsonio.loads_strict(jsonio.dumps(tensor_json(ref, r)))
    assert doc["metrics"]["spectral"] == {"condition_number": None, "alpha": None,
                                          "sv_max": 2.0, "rank_deficient": True}
    assert doc["hf_name"] == "model.layers.0.self_attn.q_proj.weight"
    rec = record(ref, r)
    assert rec["quantization.sqnr_db.8bit.tensor.sym"] == 31.5
    assert rec["quantization.cosine.8bit.tensor.sym"] == 0.999
    assert rec["quantization.int8_ready"] is True
    assert rec["stats.mean"] == 0.1
    assert not any(k.startswith("stats.histogram") for k in rec)
    assert select_tensors_by_hf(ref)


def select_tensors_by_hf(ref) -> bool:
    return select_tensors([ref], "model.layers.*.self_attn.q_proj.*") == [ref]


def test_out_of_memory_on_device_falls_back_to_cpu(fake_registry, ckpt, monkeypatch):
    import wstui.engine.placement as scan_mod

    @core.register("fgpu", version="1", heavy=True, default=False)
    def fgpu(ctx):
        if ctx.options.get("device") == "cuda" and "up_proj" in ctx.name:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return Output(metrics={"device": ctx.options.get("device")})

    eng = ScanEngine(ckpt, use_cache=False, methods=["fgpu"])
    eng.device = "cuda"  # pretend: tensors "move", the analyzer decides when memory runs out
    monkeypatch.setattr(scan_mod, "to_device", lambda x, device: (x, device))
    monkeypatch.setattr(core, "as_float32", lambda t, device=None: t.float())
    report = eng.run()
    res = report.tensors
    assert res["model.layers.0.mlp.up_proj.weight"].metrics["fgpu"]["device"] == "cpu"
    assert not res["model.layers.0.mlp.up_proj.weight"].errors
    assert res["model.layers.0.self_attn.q_proj.weight"].metrics["fgpu"]["device"] == "cuda"


def test_stream_yields_results_as_they_land(fake_registry, ckpt):
    eng = ScanEngine(ckpt, use_cache=False, workers=2)
    seen = {}
    for name, result in eng.stream():
        seen[name] = set(result.metrics)
    assert eng.done
    assert seen["model.layers.0.mlp.up_proj.weight"] == {"fstats", "fquant", "fspec"}
    eng2 = ScanEngine(ckpt, use_cache=False, workers=1)
    for _ in eng2.stream():
        break  # leaving early cancels
    assert eng2.wait(5) and eng2.cancelled


def test_eta_learns_each_kind_of_task_at_its_own_rate(demo_paths) -> None:
    """Issue 15.12: the ETA said 5 s at 21 s of a 33 s scan; one cost model for elementwise
    and spectral tasks mis-weighs them. Each kind's remaining cost now goes at its own
    measured rate (here light 0.1 and heavy 4 task-seconds per unit; two workers, so 50
    task-seconds took 25 s): 100 light units and 20 heavy ones left are 10 + 80 = 90
    task-seconds, 45 s of wall time (the single rate would say 27 s)."""
    from wstui.checkpoint import open_checkpoint

    with open_checkpoint(demo_paths.base) as ckpt:
        eng = ScanEngine(ckpt, methods=["stats"], use_cache=False)
        eng._kind_cost = {"light": 200.0, "heavy": 30.0}
        eng._kind_done = {"light": 100.0, "heavy": 10.0}
        eng._kind_secs = {"light": 10.0, "heavy": 40.0}
        eng._cost_total, eng._cost_done = 230.0, 110.0
        assert eng._eta_locked(25.0) == pytest.approx(45.0)
        eng._kind_done["heavy"] = eng._kind_secs["heavy"] = 0.0  # no spectrum done yet
        eng._cost_done = 100.0
        # heavy borrows the overall rate (10 task-s / 100 units): (100 + 30) x 0.1 x 25 / 10
        assert eng._eta_locked(25.0) == pytest.approx(32.5)
