"""core: input handling (dtypes, NaN/Inf, empty, scalars), the registry, thread safety,
result merging and the quantile helpers."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

import analyzers
from analyzers import core
from analyzers.core import Context, Output, SkipAnalyzer, TensorResult

CHEAP = ["stats", "sparsity", "quantization", "embedding"]


def _plain(r: TensorResult) -> dict:
    d = r.to_dict()
    d.pop("timings")
    d.pop("elapsed_s")
    return d


def test_names_and_default_methods():
    names = analyzers.names()
    assert names[:4] == CHEAP
    assert {"quantization_full"} <= set(names)
    defaults = analyzers.default_methods()
    assert set(CHEAP) <= set(defaults) and "quantization_full" not in defaults


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn,
                                   torch.float8_e5m2, torch.float64])
def test_low_and_high_precision_dtypes_are_upcast(dtype):
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0)).to(dtype)
    r = analyzers.analyze("w", w, kind="embedding", methods=CHEAP)
    assert not r.errors and not r.skipped, (r.errors, r.skipped)
    assert r.metrics["stats"]["mean"] == pytest.approx(float(w.double().mean()), abs=1e-6)


def test_numpy_arrays_and_dequantized_gguf_values():
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    raw = quantize(x, GGMLQuantizationType.Q8_0)
    deq = dequantize(raw, GGMLQuantizationType.Q8_0)
    for arr in (x, deq, x.astype(np.float16)):
        r = analyzers.analyze("w", arr, methods=CHEAP)
        assert not r.errors and r.shape == (16, 64)
    r = analyzers.analyze("w", deq, methods=["quantization"])
    # Q8_0 values sit on 8-bit per-32 grids: group128 8-bit is close to, not exactly, lossless
    assert r.metrics["quantization"]["schemes"][0]["sqnr_db"] > 30


@pytest.mark.parametrize("value", [
    torch.zeros(0), torch.zeros(0, 4), torch.tensor(1.5), torch.tensor([2.0]),
    torch.ones(1, 1), torch.ones(1, 5), torch.ones(5, 1), torch.ones(2, 3, 4),
    torch.full((3, 3), math.inf), torch.tensor([math.nan, 1.0]), [1.0, 2.0], 3.0,
    np.zeros((2, 2), dtype=np.float32),
])
def test_odd_inputs_give_a_result_or_a_reason(value):
    r = analyzers.analyze("x", value, kind="embedding")
    for m in analyzers.default_methods():
        assert m in r.metrics or m in r.skipped, (m, r.errors)
    assert not r.errors


def test_unconvertible_input_and_unknown_analyzer_are_recorded():
    r = analyzers.analyze("x", "not a tensor")
    assert "input" in r.errors
    r = analyzers.analyze("x", torch.ones(3), methods=["stats", "nope"])
    assert "stats" in r.metrics and "nope" in r.errors


def test_an_analyzer_that_raises_is_recorded(monkeypatch):
    def boom(ctx: Context) -> Output:
        raise RuntimeError("bang")

    def skip(ctx: Context) -> Output:
        raise SkipAnalyzer("does not apply")

    monkeypatch.setitem(core._REGISTRY, "boom", core.AnalyzerSpec("boom", boom, "1", False))
    monkeypatch.setitem(core._REGISTRY, "skip", core.AnalyzerSpec("skip", skip, "1", False))
    r = analyzers.analyze("x", torch.ones(3), methods=["boom", "skip", "stats"])
    assert r.errors == {"boom": "RuntimeError: bang"}
    assert r.skipped == {"skip": "does not apply"}
    assert "stats" in r.metrics


def test_extra_metrics_and_data_land_in_the_named_section(monkeypatch):
    def extra(ctx: Context) -> Output:
        return Output(extra_metrics={"quantization": {"alpha_shift": 0.1}},
                      extra_data={"quantization": {"extra_curve": [1]}})

    monkeypatch.setitem(core._REGISTRY, "extra", core.AnalyzerSpec("extra", extra, "1", True))
    r = analyzers.analyze("x", torch.randn(4, 4), methods=["quantization", "extra"])
    assert r.metrics["quantization"]["alpha_shift"] == 0.1
    assert "schemes" in r.metrics["quantization"] and "extra" not in r.metrics
    assert r.data["quantization"]["extra_curve"] == [1] and "curves" in r.data["quantization"]


def test_missing_sibling_module_does_not_break_the_registry(monkeypatch):
    monkeypatch.setattr(core, "_MODULES", (*core._MODULES, "not_written_yet"))
    assert "stats" in analyzers.names()


def test_finite_check_survives_an_overflowing_sum():
    big = torch.full((4,), 3e38)
    r = analyzers.analyze("x", big, methods=["stats", "quantization"])
    assert not r.findings and "quantization" in r.metrics
    assert r.metrics["stats"]["max"] == pytest.approx(3e38)
    wide = torch.tensor([-3e38, 0.0, 3e38])
    r = analyzers.analyze("x", wide, methods=["stats", "sparsity", "quantization"])
    assert not r.errors and r.metrics["stats"]["histogram"]["counts"][0] == 1
    assert sum(r.metrics["stats"]["histogram"]["counts"]) == 3


def test_four_threads_give_the_serial_results():
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(300, 200, generator=g) for _ in range(4)]
    tensors[1][5] = 0.0
    tensors[2][0, 0] = 80.0
    serial = [_plain(analyzers.analyze(f"t{i}", t, kind="embedding", methods=CHEAP))
              for i, t in enumerate(tensors)]
    parallel: list[dict | None] = [None] * 4
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        parallel[i] = _plain(analyzers.analyze(f"t{i}", tensors[i], kind="embedding",
                                               methods=CHEAP))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert parallel == serial


def test_merge_and_round_trip():
    a = analyzers.analyze("w", torch.randn(8, 8), methods=["stats"])
    b = analyzers.analyze("w", torch.zeros(8, 8), methods=["sparsity"])
    a.merge(b)
    assert set(a.metrics) == {"stats", "sparsity"}
    assert [f.code for f in a.findings] == ["dead_units"]
    again = TensorResult.from_dict(a.to_dict())
    assert again.metrics["sparsity"] == a.to_dict()["metrics"]["sparsity"]
    assert again.findings == a.findings


def test_findings_sort_critical_first_then_by_excess():
    r1 = analyzers.analyze("a", torch.zeros(10, 10), methods=["sparsity"])  # critical
    w = torch.randn(10, 10)
    w[0] = 0
    r2 = analyzers.analyze("b", w, methods=["sparsity"])  # warn
    order = [name for name, _ in analyzers.iter_findings([r2, r1])]
    assert order == ["a", "b"]


def test_strided_sample_and_quantiles():
    x = torch.arange(10.0)
    assert torch.equal(core.strided_sample(x, 20), x)
    assert core.strided_sample(x, 5).tolist() == [0, 2, 4, 6, 8]
    assert core.strided_sample(x, 4).tolist() == [0, 2, 5, 7]
    assert core.quantiles(x, [0.0, 0.5, 1.0]) == [0.0, 4.5, 9.0]
    assert core.quantiles(x, [0.5], limit=5) == [4.0]
    assert math.isnan(core.quantiles(torch.zeros(0), [0.5])[0])
    y = x.clone()
    core.quantiles(y, [0.5])
    assert torch.equal(y, x)  # not reordered in place unless asked


def test_thresholds_from_options():
    th = core.thresholds_from({"thresholds": {"int8_lossy": "20"}})
    assert th["int8_lossy"] == 20.0 and th["outliers"] == core.DEFAULT_THRESHOLDS["outliers"]


@pytest.mark.parametrize("case", ["gauss", "abs", "zeros_and_neg", "cauchy", "constant"])
def test_radix_quantiles_equal_numpy_bit_for_bit(case):
    rng = np.random.default_rng(0)
    a = {
        "gauss": lambda: rng.standard_normal(200_001),
        "abs": lambda: np.abs(rng.standard_normal(70_000)),
        "zeros_and_neg": lambda: np.concatenate([-np.zeros(100_000), np.zeros(1000),
                                                 -rng.random(50_000)]),
        "cauchy": lambda: rng.standard_cauchy(100_000),
        "constant": lambda: np.full(70_000, 3.0),
    }[case]().astype(np.float32)
    qs = [0.0, 0.001, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0]
    assert a.size >= core._RADIX_MIN
    assert core.quantiles(torch.from_numpy(a), qs) == [float(v) for v in np.quantile(a, qs)]


def test_views_parameters_and_read_only_arrays(recwarn):
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(5))
    ref = _plain(analyzers.analyze("w", w.T.contiguous(), kind="embedding", methods=CHEAP))
    view = _plain(analyzers.analyze("w", w.T, kind="embedding", methods=CHEAP))
    assert _close(view, ref)  # strided reductions may sum in another order
    p = torch.nn.Parameter(w.T.contiguous())
    assert _plain(analyzers.analyze("w", p, kind="embedding", methods=CHEAP)) == ref
    ro = w.T.contiguous().numpy().copy()
    ro.flags.writeable = False
    assert _plain(analyzers.analyze("w", ro, kind="embedding", methods=CHEAP)) == ref
    assert not [x for x in recwarn if issubclass(x.category, UserWarning)]


def _close(x, y) -> bool:
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(map(_close, x, y))
    if isinstance(x, float) and isinstance(y, float):
        return (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6)
    return x == y


def test_device_quantile_path_matches_numpy():
    a = np.random.default_rng(1).standard_normal(10_001).astype(np.float32)
    qs = [0.0, 0.25, 0.5, 0.9, 0.999, 1.0]
    got = core._sorted_quantiles(torch.from_numpy(a), qs)
    assert got == pytest.approx([float(v) for v in np.quantile(a, qs)], rel=1e-6, abs=1e-7)
