"""Spectral analyzer: the DESIGN §5 accuracy contract against float64 LAPACK SVD, the metric
definitions on a hand-made spectrum, the findings of DESIGN §6 and the skip rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import analyzers
from analyzers import spectral
from analyzers.core import Severity
from analyzers.spectral import eigenvalues, singular_values, spectral_metrics


def reference(m: np.ndarray) -> np.ndarray:
    """float64 LAPACK SVD (gesdd) of the same float32 values."""
    return np.linalg.svd(m.astype(np.float64).reshape(m.shape[0], -1), compute_uv=False)


def assert_contract(sv: np.ndarray, ref: np.ndarray) -> None:
    """DESIGN §5: relative 1e-6 above 1e-3·σmax, absolute 1e-7·σmax above 1e-6·σmax,
    condition number within 1e-3 relative below 1e12."""
    assert sv.shape == ref.shape
    assert np.all(np.diff(sv) <= 0)
    smax = ref[0]
    big = ref >= 1e-3 * smax
    np.testing.assert_allclose(sv[big], ref[big], rtol=1e-6, atol=0)
    mid = ref >= 1e-6 * smax
    assert np.max(np.abs(sv[mid] - ref[mid])) <= 1e-7 * smax
    assert np.count_nonzero(sv > 1e-6 * sv[0]) == np.count_nonzero(ref > 1e-6 * smax)
    cond_ref = smax / ref[-1]
    if cond_ref < 1e12:
        assert sv[-1] > 0
        assert sv[0] / sv[-1] == pytest.approx(cond_ref, rel=1e-3)


def orthogonal(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def with_singular_values(s: np.ndarray, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """U diag(s) Vᵀ with random orthogonal factors, rounded to float32."""
    rng = np.random.default_rng(seed)
    k = len(s)
    return ((orthogonal(rows, k, rng) * s) @ orthogonal(cols, k, rng).T).astype(np.float32)


def hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def exact_float32(s: np.ndarray, rows: int = 256, seed: int = 0) -> np.ndarray:
    """A dense float32 matrix whose singular values are exactly `s` (rounded to float32):
    orthonormal Hadamard columns (entries ±1/16) times diag(s) times a signed permutation."""
    rng = np.random.default_rng(seed)
    k = len(s)
    s32 = s.astype(np.float32).astype(np.float64)
    h = hadamard(rows)[:, :k] / math.sqrt(rows)
    perm = np.eye(k)[rng.permutation(k)] * rng.choice([-1.0, 1.0], k)
    out = (h * s32) @ perm
    assert np.array_equal(out.astype(np.float32).astype(np.float64), out)
    return out.astype(np.float32)


def geometric(cond: float, k: int) -> np.ndarray:
    return np.geomspace(1.0, 1.0 / cond, k) * 3.0


@pytest.mark.parametrize("cond", [1e3, 1e6, 1e9, 1e13])
@pytest.mark.parametrize("orient", ["tall", "wide"])
def test_contract_ill_conditioned(cond: float, orient: str) -> None:
    m = with_singular_values(geometric(cond, 80), 130, 80, seed=int(math.log10(cond)))
    if orient == "wide":
        m = m.T.copy()
    sv, _ = singular_values(torch.from_numpy(m))
    assert_contract(sv, reference(m))


@pytest.mark.parametrize("cond", [1e3, 1e5, 1e6, 1e9, 1e11, 1e13])
def test_contract_exact_spectrum(cond: float) -> None:
    """Matrices whose float32 values have exactly the chosen singular values."""
    s = geometric(cond, 64)
    m = exact_float32(s)
    sv, method = singular_values(torch.from_numpy(m))
    ref = reference(m)
    assert_contract(sv, ref)
    np.testing.assert_allclose(ref, np.sort(s.astype(np.float32).astype(np.float64))[::-1],
                               rtol=1e-9, atol=1e-14 * s[0])
    if cond >= 1e6:
        assert method == "svd-cpu"
    if cond <= 1e3:
        assert method == "gram-cpu"


def test_gram_path_at_its_limit() -> None:
    """Just below the switch (cond 0.9e5) the Gram path alone meets the contract."""
    m = with_singular_values(geometric(0.9e5, 150), 300, 150, seed=7)
    sv, method = singular_values(torch.from_numpy(m))
    assert method == "gram-cpu"
    assert_contract(sv, reference(m))


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (500, 40), (40, 500), (2, 300),
                                   (300, 2), (64, 64), (8, 4, 5)])
def test_contract_gaussian_shapes(shape: tuple[int, ...]) -> None:
    m = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    sv, _ = singular_values(torch.from_numpy(m))
    assert_contract(sv, reference(m))


def test_rank_deficient() -> None:
    rng = np.random.default_rng(2)
    half = rng.standard_normal((150, 50)).astype(np.float32)
    m = np.concatenate([half, half[:, ::-1]], axis=1)  # 100 columns, exact rank 50
    sv, method = singular_values(torch.from_numpy(m))
    assert method == "svd-cpu"
    assert_contract(sv, reference(m))
    assert np.all(sv[50:] == 0)
    r = analyzers.analyze("w", m, methods=["spectral"])
    s = r.metrics["spectral"]
    assert s["condition_number"] == math.inf and s["rank_deficient"] is True
    assert s["numerical_rank"] == 50 and s["design_rank"] == 100
    ill = [f for f in r.findings if f.code == "ill_conditioned"]
    assert ill and ill[0].severity is Severity.CRITICAL


def test_zero_matrix_does_not_raise() -> None:
    r = analyzers.analyze("z", np.zeros((10, 10), np.float32), methods=["spectral"])
    assert "spectral" not in r.errors
    assert r.metrics["spectral"]["rank_deficient"] is True


def test_chunked_gram_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    m = torch.randn(300, 70)
    whole, _ = singular_values(m)
    monkeypatch.setattr(spectral, "_CHUNK_ELEMENTS", 70 * 16)
    chunked, _ = singular_values(m)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)


def test_eigenvalues_helper() -> None:
    m = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    ev = eigenvalues(m)
    np.testing.assert_allclose(ev, reference(m) ** 2, rtol=1e-10)
    assert np.all(np.diff(ev) <= 0)  # descending
    np.testing.assert_allclose(eigenvalues(torch.from_numpy(m)), ev)


@pytest.mark.parametrize("tensor", [np.ones((1, 50), np.float32), np.ones(50, np.float32),
                                    np.ones((50, 1), np.float32), np.ones((1,), np.float32)])
def test_vectors_are_skipped_with_a_reason(tensor: np.ndarray) -> None:
    r = analyzers.analyze("v", tensor, methods=["spectral"])
    assert r.skipped.get("spectral")
    assert not r.errors and "spectral" not in r.metrics


def test_metric_definitions_on_a_hand_made_spectrum() -> None:
    s = np.array([4.0, 2.0, 1.0, 0.5])
    m = spectral_metrics(s, design_rank=4)
    e = s**2
    assert m["sv_max"] == 4.0 and m["sv_min"] == 0.5
    assert m["condition_number"] == 8.0 and m["rank_deficient"] is False
    assert m["stable_rank"] == pytest.approx(e.sum() / 16.0)  # 21.25 / 16
    p = s / s.sum()
    assert m["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert m["rank_at_1pct"] == 4 and m["numerical_rank"] == 4 and m["design_rank"] == 4
    assert m["energy_rank_90"] == 2  # 16/21.25 = 0.75, (16+4)/21.25 = 0.94
    assert m["rank_utilization"] == 0.5
    assert m["log_norm"] == pytest.approx(math.log10(21.25))
    assert m["log_spectral_norm"] == pytest.approx(math.log10(16.0))
    q = e / e.sum()
    assert m["spectral_entropy"] == pytest.approx(-(q * np.log(q)).sum() / math.log(4))
    tiny = spectral_metrics(np.array([1.0, 0.005, 1e-7, 0.0]), design_rank=4)
    assert tiny["rank_at_1pct"] == 1 and tiny["numerical_rank"] == 2
    assert tiny["condition_number"] == math.inf and tiny["rank_deficient"] is True
    assert tiny["energy_rank_90"] == 1
    # the same through analyze, on a diagonal matrix
    r = analyzers.analyze("d", np.diag(s).astype(np.float32), methods=["spectral"])
    got = r.metrics["spectral"]
    for key in ("sv_max", "sv_min", "condition_number", "stable_rank", "effective_rank",
                "energy_rank_90", "log_norm", "spectral_entropy"):
        assert got[key] == pytest.approx(m[key], rel=1e-9)


def test_result_keys_and_plot_data() -> None:
    m = with_singular_values(np.sqrt(np.sort(pareto_evals(3.5, 256, 0))[::-1]), 400, 256)
    r = analyzers.analyze("w", m, methods=["spectral"])
    s = r.metrics["spectral"]
    for key in ("sv_max", "sv_min", "condition_number", "stable_rank", "effective_rank",
                "rank_at_1pct", "numerical_rank", "design_rank", "energy_rank_90",
                "rank_utilization", "log_norm", "log_spectral_norm", "spectral_entropy",
                "alpha", "alpha_sigma", "xmin", "xmax", "ks_distance", "num_pl_spikes",
                "alpha_weighted", "log_alpha_norm", "n_evals"):
        assert key in s, key
    d = r.data["spectral"]
    assert len(d["spectrum"]) == 256 and d["spectrum_rank"][0] == 1
    assert d["spectrum"][0] == s["sv_max"]
    assert len(d["esd"]["edges"]) == len(d["esd"]["density"]) + 1
    widths = np.diff(d["esd"]["edges"])
    assert np.sum(np.array(d["esd"]["density"]) * widths) == pytest.approx(1.0)
    assert d["fit"]["x"][0] == pytest.approx(s["xmin"]) and d["xmin"] == s["xmin"]
    assert d["fit"]["x"][-1] == pytest.approx(s["xmax"])
    assert np.all(np.diff(d["fit"]["y"]) < 0)


def test_spectrum_picks_for_long_spectra() -> None:
    sv = np.geomspace(10, 1, 5000)
    fit = spectral.fit_powerlaw(sv**2)
    d = spectral.plot_data(sv, fit)
    ranks = np.array(d["spectrum_rank"])
    assert len(ranks) <= 4096 and ranks[0] == 1 and ranks[-1] == 5000
    assert np.all(np.diff(ranks) > 0)
    np.testing.assert_array_equal(d["spectrum"], sv[ranks - 1])


# -- findings (DESIGN §6) -------------------------------------------------------------------


def pareto_evals(alpha: float, n: int, seed: int) -> np.ndarray:
    """n eigenvalues with density ∝ λ^-alpha above 1 (rank-ordered quantiles: no noise)."""
    u = (np.arange(n) + 0.5) / n
    return (1.0 - u) ** (-1.0 / (alpha - 1.0))


def planted(evals: np.ndarray, rows: int = 400, seed: int = 0) -> np.ndarray:
    return with_singular_values(np.sqrt(np.sort(evals)[::-1]), rows, evals.size, seed)


CLEAN = planted(pareto_evals(4.0, 256, 0))


def codes(m: np.ndarray) -> dict[str, Severity]:
    r = analyzers.analyze("w", m, methods=["spectral"])
    assert not r.errors
    return {f.code: f.severity for f in r.findings}


def test_clean_trained_like_matrix_has_no_finding() -> None:
    r = analyzers.analyze("w", CLEAN, methods=["spectral"])
    assert 3.0 < r.metrics["spectral"]["alpha"] < 5.0
    assert r.findings == []


def test_gaussian_alpha_is_mostly_high() -> None:
    """A random Gaussian has no power-law tail (its ESD is Marchenko-Pastur): the KS-chosen
    xmin wanders and alpha with it (about 5 to 50), mostly above 6 (alpha_high, "untrained").
    So the clean matrix for the alpha findings is the trained-like CLEAN above; a Gaussian
    never trips the other spectral findings."""
    alphas = []
    for seed in range(5):
        g = np.random.default_rng(seed).standard_normal((400, 256)).astype(np.float32)
        r = analyzers.analyze("g", g, methods=["spectral"])
        alphas.append(r.metrics["spectral"]["alpha"])
        assert {f.code for f in r.findings} <= {"alpha_high"}
    assert min(alphas) > 4.0 and np.median(alphas) > 6.0


@pytest.mark.parametrize(("cond", "severity"), [(1e6, Severity.WARN), (1e9, Severity.CRITICAL)])
def test_ill_conditioned(cond: float, severity: Severity) -> None:
    ev = pareto_evals(4.0, 256, 0)
    ev[0] = ev.max() / cond**2  # the smallest σ becomes σmax / cond
    assert codes(planted(ev)).get("ill_conditioned") is severity
    assert "ill_conditioned" not in codes(CLEAN)


def test_threshold_override() -> None:
    r = analyzers.analyze("w", CLEAN, methods=["spectral"],
                          options={"thresholds": {"ill_conditioned": 1.5}})
    assert [f.code for f in r.findings] == ["ill_conditioned"]


def test_alpha_low_and_high() -> None:
    assert codes(planted(pareto_evals(1.6, 256, 0))).get("alpha_low") is Severity.WARN
    assert codes(planted(pareto_evals(8.0, 256, 0))).get("alpha_high") is Severity.INFO
    assert {"alpha_low", "alpha_high"}.isdisjoint(codes(CLEAN))


def test_low_rank() -> None:
    ev = np.concatenate([[1e4, 8e3, 6e3, 5e3], pareto_evals(4.0, 252, 0)])
    found = codes(planted(ev))
    assert found.get("low_rank") is Severity.INFO
    small = codes(planted(ev[:40]))  # design_rank 40 < 64: never low_rank
    assert "low_rank" not in small and "low_rank" not in codes(CLEAN)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    m = torch.from_numpy(with_singular_values(geometric(1e3, 300), 500, 300))
    cpu, _ = singular_values(m)
    gpu, method = singular_values(m.cuda())
    assert method == "gram-cuda"
    assert_contract(gpu, reference(m.numpy()))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-9)

    def oom(x: torch.Tensor) -> np.ndarray:
        raise torch.cuda.OutOfMemoryError("fake")

    monkeypatch.setattr(spectral, "_gram_eigvals_torch", oom)
    again, method = singular_values(m.cuda())
    assert method == "gram-cpu"
    np.testing.assert_allclose(again, cpu)


def test_eigvalsh_goes_through_torch_for_big_gram_matrices_once_torch_is_loaded(monkeypatch):
    """MKL's eigvalsh (through torch) from n = 1024 when torch is loaded, numpy's below and
    when torch is not loaded; both give the same eigenvalues to about 1e-14 relative."""
    import numpy as np
    import torch

    from analyzers import spectral

    calls: list[int] = []
    real = torch.linalg.eigvalsh

    def counting(g):
        calls.append(int(g.shape[0]))
        return real(g)

    monkeypatch.setattr(torch.linalg, "eigvalsh", counting)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1200, spectral.TORCH_EIGH_MIN))
    g = x.T @ x
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    big = spectral.eigvalsh_cpu(g)
    assert calls == [spectral.TORCH_EIGH_MIN]
    np.testing.assert_allclose(big, np.linalg.eigvalsh(g), rtol=1e-10, atol=1e-9 * big[-1])
    spectral.eigvalsh_cpu(g[:500, :500])  # small: numpy's
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # mid-size on threads: numpy's
    spectral.eigvalsh_cpu(g)
    monkeypatch.setattr(spectral, "loaded_torch", lambda: None)
    spectral.eigvalsh_cpu(g)
    assert calls == [spectral.TORCH_EIGH_MIN]


def test_torch_eigvalsh_pays_only_for_enough_big_matrices():
    from wstui.engine.placement import torch_eigvalsh_pays

    assert not torch_eigvalsh_pays([(4864, 896)] * 500)  # below 1024: no gain at all
    assert not torch_eigvalsh_pays([(1536, 1536), (128,)])  # 0.14 s saved, 1.5 s import
    assert torch_eigvalsh_pays([(8960, 1536)] * 84)  # a 1.5B model's MLP: ~11 s saved
    assert not torch_eigvalsh_pays([(4096, 4096)])  # one 7B-sized matrix: 2.7 s < 3 s
    assert torch_eigvalsh_pays([(4096, 4096), (11008, 4096)])  # two: 5.5 s
