"""compare: elementwise numbers by hand, ΔW spectrum, overlays, bad pairs never raise."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

import analyzers

compare_mod = importlib.import_module("analyzers.compare")  # `analyzers.compare` is the function

KEYS = {"l2_distance", "rel_change", "cosine", "max_abs_diff", "frac_changed"}
SPECTRAL_KEYS = {"delta_stable_rank", "delta_energy_rank_90", "alpha_a", "alpha_b",
                 "delta_alpha"}


def test_elementwise_values_by_hand():
    a = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    r = analyzers.compare(a, b, name="w", kind="attn_q")
    assert not r.errors and r.name == "w" and r.kind == "attn_q" and r.shape == (2, 2)
    m = r.metrics["compare"]
    assert set(m) == KEYS | SPECTRAL_KEYS
    assert m["l2_distance"] == pytest.approx(4.0)
    assert m["rel_change"] == pytest.approx(0.8)
    assert m["cosine"] == pytest.approx(0.6)
    assert m["max_abs_diff"] == 4.0 and m["frac_changed"] == 0.25
    assert m["delta_stable_rank"] == pytest.approx(1.0) and m["delta_energy_rank_90"] == 1
    assert m["alpha_a"] is None and m["delta_alpha"] is None  # too few eigenvalues to fit
    (f,) = r.findings
    assert (f.code, f.severity.value, f.value, f.threshold) == ("large_change", "warn",
                                                                pytest.approx(0.8), 0.5)


def test_identical_tensors():
    a = torch.randn(8, 8)
    m = analyzers.compare(a, a.clone()).metrics["compare"]
    assert m["l2_distance"] == 0.0 and m["cosine"] == 1.0 and m["frac_changed"] == 0.0
    assert m["delta_stable_rank"] == 0.0 and m["delta_energy_rank_90"] == 0


def test_frac_changed_is_relative_to_abs_max_of_a():
    a = torch.tensor([100.0, 1.0, 1.0, 1.0])
    b = a + torch.tensor([0.0, 5e-5, 2e-4, 0.0])  # threshold 1e-6 * 100 = 1e-4
    assert analyzers.compare(a, b).metrics["compare"]["frac_changed"] == 0.25


def test_low_rank_delta_has_low_energy_rank():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(96, 128, generator=g)
    u = torch.linalg.qr(torch.randn(96, 3, generator=g)).Q
    v = torch.linalg.qr(torch.randn(128, 3, generator=g)).Q
    b = a + u @ v.T  # three equal singular values
    m = analyzers.compare(a, b).metrics["compare"]
    assert m["delta_energy_rank_90"] == 3
    assert m["delta_stable_rank"] == pytest.approx(3.0, rel=1e-4)
    assert m["alpha_a"] is not None and m["alpha_b"] is not None
    assert m["delta_alpha"] == pytest.approx(m["alpha_b"] - m["alpha_a"])


def test_overlays_share_bins():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 50, generator=g)
    b = a * 2
    d = analyzers.compare(a, b).data["compare"]
    assert len(d["hist_edges"]) == 65 and len(d["hist_a"]) == len(d["hist_b"]) == 64
    assert sum(d["hist_a"]) == sum(d["hist_b"]) == 2000
    assert d["hist_edges"][0] == pytest.approx(float(b.min()))
    sv = np.linalg.svd(a.double().numpy(), compute_uv=False)
    assert np.allclose(d["spectrum_a"], sv, rtol=1e-6)
    assert np.allclose(d["spectrum_b"], 2 * sv, rtol=1e-6)
    assert d["spectrum_rank"] == list(range(1, 41))


def test_spectrum_picks_are_log_spaced_and_bounded():
    sv = np.linspace(100, 1, 10000)
    picks = compare_mod.spectrum_picks(sv, limit=100)
    ranks = compare_mod.spectrum_ranks(sv.size, limit=100)
    assert len(picks) == len(ranks) <= 100 and picks[0] == 100 and picks[-1] == 1
    assert ranks[0] == 1 and ranks[-1] == 10000 and ranks[50] > 50


def test_vectors_get_no_spectrum():
    m = analyzers.compare(torch.ones(10), torch.ones(10) * 1.1).metrics["compare"]
    assert set(m) == KEYS and m["rel_change"] == pytest.approx(0.1, rel=1e-5)


def test_option_skips_the_spectra():
    a = torch.randn(6, 6)
    m = analyzers.compare(a, a + 1, options={"compare_spectral": False}).metrics["compare"]
    assert set(m) == KEYS


def test_threshold_override():
    a = torch.ones(4, 4)
    r = analyzers.compare(a, a * 1.3, options={"thresholds": {"large_change": 0.2}})
    assert [f.code for f in r.findings] == ["large_change"]
    assert analyzers.compare(a, a * 1.3).findings == []


def test_bad_pairs_are_results_not_exceptions():
    r = analyzers.compare(torch.ones(2, 3), torch.ones(3, 2), name="w")
    assert "shape mismatch" in r.errors["compare"] and "compare" not in r.metrics
    bad = torch.ones(2, 2)
    bad[0, 0] = math.nan
    assert analyzers.compare(torch.ones(2, 2), bad).skipped["compare"] == "nonfinite"
    assert analyzers.compare(torch.zeros(0), torch.zeros(0)).skipped["compare"] == "empty tensor"
    assert "compare" in analyzers.compare(object(), torch.ones(2)).errors


def test_mixed_input_types():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = torch.from_numpy(a).to(torch.bfloat16)
    m = analyzers.compare(a, b).metrics["compare"]
    assert m["l2_distance"] == 0.0
    zero = analyzers.compare(torch.zeros(3, 3), torch.ones(3, 3)).metrics["compare"]
    assert math.isinf(zero["rel_change"]) and math.isnan(zero["cosine"])


def test_without_the_spectral_module_a_float64_svd_stands_in(monkeypatch):
    import sys

    a = torch.randn(30, 20, generator=torch.Generator().manual_seed(3))
    with_spectral = analyzers.compare(a, a * 1.5).metrics["compare"]
    monkeypatch.setitem(sys.modules, "analyzers.spectral", None)  # import now fails
    fallback = analyzers.compare(a, a * 1.5).metrics["compare"]
    for key in ("delta_stable_rank", "alpha_a", "alpha_b"):
        assert fallback[key] == pytest.approx(with_spectral[key], rel=1e-6)
