"""quantization: fake_quantize semantics, exact values, orderings between schemes, the
textbook Gaussian SQNR, options and the full sweep."""

from __future__ import annotations

import math

import pytest
import torch

import analyzers
from analyzers.quantization import GRANULARITIES, fake_quantize

ROW_KEYS = {"bits", "granularity", "scheme", "sqnr_db", "cosine", "rel_mse", "max_abs_err"}


def _q(t, **kw):
    r = analyzers.analyze("w", t, methods=["quantization"], **kw)
    assert not r.errors, r.errors
    return r, r.metrics["quantization"]


def _row(m, bits, gran, scheme="sym"):
    (row,) = [s for s in m["schemes"] if (s["bits"], s["granularity"], s["scheme"])
              == (bits, gran, scheme)]
    return row


def _sqnr(w, q):
    return 10 * math.log10(float((w.double() ** 2).sum()) / float(((w - q).double() ** 2).sum()))


def _gauss(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_sym_matches_the_formula_by_hand():
    w = torch.tensor([[1.0, -0.5, 0.26, 0.0]])
    q = fake_quantize(w, 3, "tensor", "sym")  # scale = 1/3: levels -1, -2/3, ..., 1
    assert torch.allclose(q, torch.tensor([[1.0, -2 / 3, 1 / 3, 0.0]]))
    q = fake_quantize(w, 2, "channel", "sym")  # scale = 1: levels -1, 0, 1
    assert torch.equal(q, torch.tensor([[1.0, -0.0, 0.0, 0.0]]))


def test_asym_keeps_min_and_max_exact():
    w = _gauss(8, 300) + 3.0
    for gran in GRANULARITIES:
        q = fake_quantize(w, 3, gran, "asym")
        assert q.shape == w.shape and q.dtype == torch.float32
        dim = None if gran == "tensor" else 1  # every group's min and max are exact
        lo, hi = (q.amin(), q.amax()) if dim is None else (q.amin(dim), q.amax(dim))
        wlo, whi = (w.amin(), w.amax()) if dim is None else (w.amin(dim), w.amax(dim))
        assert torch.allclose(lo, wlo, atol=1e-5) and torch.allclose(hi, whi, atol=1e-5)
        assert len(torch.unique(q[0, :128])) <= 8


def test_group128_with_a_partial_last_group_matches_per_group_by_hand():
    w = _gauss(4, 300, seed=1)
    q = fake_quantize(w, 4, "group128", "sym")
    for lo, hi in ((0, 128), (128, 256), (256, 300)):
        part = w[:, lo:hi]
        scale = part.abs().amax(1, keepdim=True) / 7
        assert torch.allclose(q[:, lo:hi], torch.round(part / scale).clamp(-7, 7) * scale)


def test_shapes_dtypes_and_bad_settings():
    assert fake_quantize(_gauss(2, 3, 4).to(torch.bfloat16), 8, "channel", "sym").shape == (2, 3, 4)
    assert fake_quantize(_gauss(10), 4, "group128", "asym").shape == (10,)
    assert fake_quantize(torch.zeros(0, 5), 4, "tensor", "sym").shape == (0, 5)
    assert torch.equal(fake_quantize(torch.zeros(3, 3), 4, "channel", "sym"), torch.zeros(3, 3))
    assert torch.equal(fake_quantize(torch.full((2, 3), 0.7), 2, "channel", "asym"),
                       torch.full((2, 3), 0.7))
    for args in ((1, "tensor", "sym"), (4, "row", "sym"), (4, "tensor", "nf4")):
        with pytest.raises(ValueError):
            fake_quantize(_gauss(4, 4), *args)


def test_tensor_on_the_grid_is_reconstructed_perfectly():
    w = torch.randint(-7, 8, (16, 256), generator=torch.Generator().manual_seed(0)) * 0.125
    w[:, 0] = 7 * 0.125  # every row and group reaches the full scale
    w[:, 128] = -7 * 0.125
    _, m = _q(w, options={"quant_bits": [4, 8]})
    for s in m["schemes"]:
        if s["bits"] == 4:
            assert (s["sqnr_db"], s["cosine"], s["rel_mse"], s["max_abs_err"]) == (
                math.inf, 1.0, 0.0, 0.0)
        else:  # 8-bit levels of 7/127 do not contain every 1/8 step
            assert 40 < s["sqnr_db"] < math.inf and s["cosine"] < 1.0
    assert m["min_bits_30db"] <= 4


def test_metrics_agree_with_a_direct_computation():
    w = _gauss(64, 256, seed=3)
    _, m = _q(w)
    assert {(s["bits"], s["granularity"], s["scheme"]) for s in m["schemes"]} == {
        (b, g, "sym") for b in (8, 4) for g in GRANULARITIES}
    for s in m["schemes"]:
        assert set(s) == ROW_KEYS
        q = fake_quantize(w, s["bits"], s["granularity"], "sym")
        assert s["sqnr_db"] == pytest.approx(_sqnr(w, q), abs=1e-3)
        cos = torch.nn.functional.cosine_similarity(w.reshape(1, -1).double(),
                                                    q.reshape(1, -1).double())
        assert s["cosine"] == pytest.approx(float(cos), abs=1e-7)
        assert s["rel_mse"] == pytest.approx(10 ** (-s["sqnr_db"] / 10), rel=1e-6)
        assert s["max_abs_err"] == pytest.approx(float((w - q).abs().max()), rel=1e-6)
    assert m["crest_factor"] == pytest.approx(float(w.abs().max() / w.pow(2).mean().sqrt()),
                                              rel=1e-5)
    assert m["int8_ready"] is True
    assert 0.0 <= m["outlier_frac_3"] <= m["outlier_frac_1p5"] < 0.02


def test_finer_granularity_never_loses_on_an_outlier_column_tensor():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(64, 512, generator=g) * torch.logspace(-1, 1, 64)[:, None]
    w[:, 7] *= 20.0  # one outlier input column
    _, m = _q(w)
    for bits in (8, 4):
        t, c, g128 = (_row(m, bits, gran)["sqnr_db"] for gran in GRANULARITIES)
        assert c >= t and g128 >= c
        assert g128 > t + 3  # and by a clear margin


def test_asym_beats_sym_on_an_all_positive_tensor():
    w = torch.rand(64, 256, generator=torch.Generator().manual_seed(5))
    _, m = _q(w, options={"quant_bits": [8, 4, 3], "quant_schemes": [
        "tensor:sym", "tensor:asym", ("channel", "sym"), ("channel", "asym"),
        {"granularity": "group128", "scheme": "sym"}, {"granularity": "group128",
                                                       "scheme": "asym"}]})
    assert len(m["schemes"]) == 18
    for bits in (8, 4, 3):
        for gran in GRANULARITIES:
            assert _row(m, bits, gran, "asym")["sqnr_db"] >= _row(m, bits, gran, "sym")["sqnr_db"]


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_gaussian_sqnr_matches_the_textbook_formula(bits):
    w = _gauss(512, 512, seed=6)
    _, m = _q(w, options={"quant_bits": [bits], "quant_schemes": ["tensor:sym"]})
    expected = 6.02 * bits + 4.77 - 20 * math.log10(m["crest_factor"])
    assert _row(m, bits, "tensor")["sqnr_db"] == pytest.approx(expected, abs=1.5)


def test_min_bits_30db_is_the_fewest_channel_sym_bits_reaching_30db():
    w = _gauss(32, 512, seed=7)
    _, m = _q(w)
    brute = [b for b in range(2, 9) if _sqnr(w, fake_quantize(w, b, "channel", "sym")) >= 30]
    assert m["min_bits_30db"] == min(brute)
    spiky = torch.full((8, 1024), 2.0)  # one 1000 per row: 8-bit steps of 7.9 erase the rest
    spiky[:, 0] = 1000.0
    assert _q(spiky)[1]["min_bits_30db"] is None


def test_curves_and_full_sweep():
    w = _gauss(16, 300, seed=8)
    r, _ = _q(w)
    curves = r.data["quantization"]["curves"]
    assert {(c["granularity"], c["scheme"]) for c in curves} == {(g, "sym") for g in GRANULARITIES}
    for c in curves:
        assert c["bits"] == [4, 8] and len(c["sqnr_db"]) == 2
    full = analyzers.analyze("w", w, methods=["quantization_full"])
    assert not full.errors and "quantization_full" not in full.metrics
    rows = full.metrics["quantization"]["schemes"]
    assert len(rows) == 36
    assert {r["bits"] for r in rows} == {8, 6, 5, 4, 3, 2}
    assert len(full.data["quantization"]["curves"]) == 6
    assert full.data["quantization"]["curves"][0]["bits"] == [2, 3, 4, 5, 6, 8]
    by_option = _q(w, options={"quant_full": True})[1]
    assert by_option["schemes"] == rows
    assert "quantization_full" not in analyzers.default_methods()


def test_one_d_tensors_get_metrics_but_no_findings():
    w = torch.ones(1000)
    w[:200] = 50.0  # heavy outliers, and per-tensor int8 on a 1-D tensor
    r, m = _q(w)
    assert m["outlier_frac_1p5"] == pytest.approx(0.2)
    assert r.findings == []


def test_bad_option_is_an_error_not_an_exception():
    r = analyzers.analyze("w", _gauss(4, 4), methods=["quantization"],
                          options={"quant_schemes": ["row:sym"]})
    assert "quantization" in r.errors and "ValueError" in r.errors["quantization"]


def test_row_blocks_give_the_whole_tensor_numbers(monkeypatch):
    from analyzers import quantization as qmod

    w = _gauss(64, 300, seed=9)
    w[5, 7] = 30.0  # the tensor-wide scale must come from outside the block too
    _, whole = _q(w, options={"quant_full": True})
    monkeypatch.setattr(qmod, "CHUNK", 1000)  # three rows per block
    _, blocks = _q(w, options={"quant_full": True})
    for a, b in zip(whole["schemes"], blocks["schemes"]):
        assert a["sqnr_db"] == pytest.approx(b["sqnr_db"], rel=1e-5)
        assert a["cosine"] == pytest.approx(b["cosine"], rel=1e-5)  # float32 sums, reordered
        assert a["max_abs_err"] == b["max_abs_err"]
    assert whole["min_bits_30db"] == blocks["min_bits_30db"]
