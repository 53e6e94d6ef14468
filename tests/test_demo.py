"""The demo checkpoints: every planted defect and fine-tune change is where the manifest says.

The demo is built once per session by the `demo_paths` / `demo_manifest` fixtures in
conftest.py, which the diff, scan, quant and app tests share.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from wstui.demo import SEED, VERSION, DemoPaths, build_demo


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


@pytest.fixture
def one_torch_thread():
    """torch's intra-op threads spin against each other on a busy 2-core box (20x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def base(demo_paths: DemoPaths) -> dict[str, np.ndarray]:
    return load_file(demo_paths.base / "model.safetensors")


@pytest.fixture(scope="session")
def tuned(demo_paths: DemoPaths) -> dict[str, np.ndarray]:
    return load_file(demo_paths.finetuned / "model.safetensors")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_hashes(paths: DemoPaths) -> dict[str, str]:
    files = {"base": paths.base / "model.safetensors",
             "base_config": paths.base / "config.json",
             "finetuned": paths.finetuned / "model.safetensors",
             "manifest": paths.manifest}
    if paths.gguf is not None:
        files["gguf"] = paths.gguf
    return {k: sha256(p) for k, p in files.items()}


def by_defect(manifest: dict) -> dict[str, dict]:
    return {d["defect"]: d for d in manifest["defects"]}


def ww_alpha(eigs: np.ndarray) -> float:
    """DESIGN §5 power-law fit, written independently of wstui.demo: Hill MLE per xmin, min KS."""
    lam = np.sort(eigs[eigs > 1e-5])
    best_d, best_alpha = np.inf, np.nan
    for j in range(len(lam) - 1):
        t = lam[j:] / lam[j]
        n = t.size
        alpha = 1 + n / np.log(t).sum()
        cdf = 1 - t ** (1 - alpha)
        d = max(np.max(cdf - np.arange(n) / n), np.max(np.arange(1, n + 1) / n - cdf))
        if d < best_d:
            best_d, best_alpha = d, alpha
    return float(best_alpha)


def sqnr_int8(x: np.ndarray) -> float:
    scale = np.abs(x).max() / 127
    q = np.round(x / scale) * scale
    return 10 * np.log10((x**2).sum() / ((x - q) ** 2).sum())


# ------------------------------------------------------------------------------------------


def test_manifest_names_real_tensors(demo_paths, demo_manifest, base, tuned):
    assert demo_manifest["version"] == VERSION and demo_manifest["seed"] == SEED
    assert {d["defect"] for d in demo_manifest["defects"]} == {
        "dead_row", "dead_column", "outlier_column", "ill_conditioned", "nan",
        "low_norm_rows", "heavy_tailed_spectrum"}
    for d in demo_manifest["defects"]:
        assert d["tensor"] in base, d
        assert d["code"] and d["severity"] in {"info", "warn", "critical"}
    assert {c["change"] for c in demo_manifest["changes"]} == {"lowrank", "fullrank", "renamed"}
    for c in demo_manifest["changes"]:
        assert c["tensor"] in base
        assert (c.get("new_name") or c["tensor"]) in tuned
    assert (demo_paths.base / "config.json").is_file()
    assert demo_paths.manifest.parent == demo_paths.root


def test_planted_defects_measured_directly(demo_manifest, base):
    d = by_defect(demo_manifest)
    row = d["dead_row"]
    m = base[row["tensor"]]
    assert m.shape[0] > m.shape[1]  # tall: a zero row keeps the rank full
    assert not m[row["detail"]["row"]].any()
    assert (np.abs(m).max(axis=1) > 1e-6).sum() == m.shape[0] - 1

    col = d["dead_column"]
    m = base[col["tensor"]]
    assert m.shape[0] < m.shape[1]  # wide: a zero column keeps the rank full
    assert not m[:, col["detail"]["column"]].any()
    assert (np.abs(m).max(axis=0) > 1e-6).sum() == m.shape[1] - 1

    out = d["outlier_column"]
    m = base[out["tensor"]].astype(np.float64)
    c = out["detail"]["column"]
    col_norms = np.linalg.norm(m, axis=0)
    others = np.delete(col_norms, c)
    assert col_norms[c] / np.median(others) == pytest.approx(out["detail"]["factor"], rel=0.15)
    assert 16 < sqnr_int8(m) < 23  # int8_lossy warn, clearly
    q1, q3 = np.percentile(m, [25, 75])
    outlier_frac = np.mean(np.abs(m - np.clip(m, q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1))) > 0)
    assert outlier_frac < 0.03  # no `outliers` finding

    ill = d["ill_conditioned"]
    cond = np.linalg.cond(base[ill["tensor"]].astype(np.float64))
    assert 5e6 < cond < 2e7

    nan = d["nan"]
    m = base[nan["tensor"]]
    assert np.isnan(m).sum() == len(nan["detail"]["positions"])
    for r, c in nan["detail"]["positions"]:
        assert np.isnan(m[r, c])

    low = d["low_norm_rows"]
    norms = np.linalg.norm(base[low["tensor"]].astype(np.float64), axis=1)
    med = np.median(norms)
    z = (norms - med) / (1.4826 * np.median(np.abs(norms - med)))
    assert sorted(np.flatnonzero(z < -4).tolist()) == low["detail"]["rows"]
    assert z[low["detail"]["rows"]].max() < -10

    heavy = d["heavy_tailed_spectrum"]
    sv = np.linalg.svd(base[heavy["tensor"]].astype(np.float64), compute_uv=False)
    alpha = ww_alpha(sv**2)
    assert 1.5 < alpha < 1.85
    assert alpha == pytest.approx(heavy["detail"]["alpha"], abs=0.01)


def test_clean_matrices_cross_no_threshold(demo_manifest, base):
    """Only the planted tensors break a DESIGN §6 warn/critical rule (checked with numpy)."""
    planted = {d["tensor"] for d in demo_manifest["defects"]} - {"model.embed_tokens.weight"}
    for name, m in base.items():
        if m.ndim != 2 or name in planted:
            continue
        x = m.astype(np.float64)
        assert np.isfinite(x).all(), name
        sv = np.linalg.svd(x, compute_uv=False)
        assert sv[0] / sv[-1] < 1e5, name
        assert sqnr_int8(x) > 30, name
        assert (np.abs(x).max(axis=1) > 1e-6).all() and (np.abs(x).max(axis=0) > 1e-6).all()
        energy = np.cumsum(sv**2) / (sv**2).sum()
        assert (np.searchsorted(energy, 0.9) + 1) / sv.size > 0.1, name
    heavy = by_defect(demo_manifest)["heavy_tailed_spectrum"]["tensor"]
    sv = np.linalg.svd(base[heavy].astype(np.float64), compute_uv=False)
    energy = np.cumsum(sv**2) / (sv**2).sum()
    assert (np.searchsorted(energy, 0.9) + 1) / sv.size > 0.1  # no low_rank finding
    assert np.linalg.cond(base[heavy].astype(np.float64)) < 1e5


def test_finetune_changes(demo_manifest, base, tuned):
    rel = {}
    for c in demo_manifest["changes"]:
        name = c["tensor"]
        if c["change"] == "renamed":
            assert name not in tuned and c["new_name"] not in base
            np.testing.assert_array_equal(tuned[c["new_name"]], base[name])
            continue
        delta = tuned[name].astype(np.float64) - base[name].astype(np.float64)
        rel[name] = np.linalg.norm(delta) / np.linalg.norm(base[name].astype(np.float64))
        assert rel[name] == pytest.approx(c["rel_change"], abs=1e-3)
        assert np.linalg.matrix_rank(delta.astype(np.float32)) == c["rank"], name
    changed = {c["tensor"] for c in demo_manifest["changes"]}
    for name in base:
        if name not in changed:
            np.testing.assert_array_equal(tuned[name], base[name], err_msg=name)
    full = [c["tensor"] for c in demo_manifest["changes"] if c["change"] == "fullrank"]
    assert len(full) == 1 and max(rel, key=rel.get) == full[0]
    assert 0.6 <= rel[full[0]] <= 1.0
    ranks = [c["rank"] for c in demo_manifest["changes"] if c["change"] == "lowrank"]
    assert sorted(ranks) == [4, 4, 8]


@pytest.mark.slow
def test_config_matches_transformers_llama(demo_paths, base):
    transformers = pytest.importorskip("transformers")
    import torch

    config = transformers.AutoConfig.from_pretrained(demo_paths.base)
    assert config.model_type == "llama"
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert expected == {k: v.shape for k, v in base.items()}


def test_deterministic_and_reused(demo_paths, tmp_path):
    again = build_demo(tmp_path / "again")
    assert build_hashes(again) == build_hashes(demo_paths)
    stamp = again.manifest.stat().st_mtime_ns
    assert build_demo(tmp_path / "again") == again
    assert again.manifest.stat().st_mtime_ns == stamp  # reused, not rewritten
    build_demo(tmp_path / "again", force=True)
    assert build_hashes(again) == build_hashes(demo_paths)


def test_incomplete_build_is_rebuilt(tmp_path):
    paths = build_demo(tmp_path / "d")
    paths.manifest.unlink()
    (paths.base / "model.safetensors").write_bytes(b"junk")
    rebuilt = build_demo(tmp_path / "d")
    assert rebuilt.manifest.is_file()
    assert (rebuilt.base / "model.safetensors").stat().st_size > 1_000_000


def test_cli_out_prints_paths(demo_paths, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "wstui", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(out / "base") in proc.stdout
    assert str(out / "finetuned") in proc.stdout
    assert str(out / "manifest.json") in proc.stdout
    paths = build_demo(out)  # reused
    assert build_hashes(paths) == build_hashes(demo_paths)  # same bytes in another process


def test_gguf_copy(demo_paths, demo_manifest, base):
    if demo_paths.gguf is None:
        pytest.skip("wstui.checkpoint.gguf_write is not available")
    gguf = pytest.importorskip("gguf")
    from wstui.checkpoint.gguf_names import hf_to_gguf
    from wstui.checkpoint.gguf_write import unpermute_qk

    config = demo_manifest["config"]
    reader = gguf.GGUFReader(demo_paths.gguf)
    stored = {t.name: t for t in reader.tensors}
    assert len(stored) == len(base)
    nan_tensor = by_defect(demo_manifest)["nan"]["tensor"]
    dead = by_defect(demo_manifest)["dead_row"]
    for name, ref in base.items():
        t = stored[hf_to_gguf(name, "llama")]
        want = "F32" if ref.ndim == 1 else "Q8_0"
        assert t.tensor_type.name == want, name
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref.shape)
        if ".q_proj." in name:
            got = unpermute_qk(got, config["num_attention_heads"])
        elif ".k_proj." in name:
            got = unpermute_qk(got, config["num_key_value_heads"])
        if name == nan_tensor:  # each Q8_0 block of 32 holding a NaN dequantizes to NaNs
            assert np.isnan(got).sum() == 32 * np.isnan(ref).sum()
            continue
        # Q8_0: error about half a step (block absmax / 127), plus the F16 rounding of the scale
        # (subnormal for the near-zero embedding rows: absolute step 2**-24)
        step = np.abs(ref.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
        err = np.abs(got - ref).reshape(-1, 32)
        assert (err <= step * 0.6 + 127 * 2.0**-24).all(), name
    up = gguf.quants.dequantize(stored["blk.0.ffn_up.weight"].data, gguf.GGMLQuantizationType.Q8_0)
    assert not up.reshape(base[dead["tensor"]].shape)[dead["detail"]["row"]].any()


#: which analyzer raises each planted finding code (nonfinite comes from analyzers.core itself)
CODE_ANALYZER = {"dead_units": "sparsity", "int8_lossy": "quantization", "nonfinite": "stats",
                 "ill_conditioned": "spectral", "alpha_low": "spectral",
                 "low_norm_tokens": "embedding"}


#: clean matrices the (slow) spectral analyzer also checks: square, tall, wide, short-wide
SPECTRAL_CLEAN = ("model.layers.0.self_attn.o_proj.weight", "model.layers.1.mlp.up_proj.weight",
                  "model.layers.2.mlp.down_proj.weight", "model.layers.3.self_attn.k_proj.weight")


@pytest.mark.slow
def test_analyzers_find_exactly_the_planted_defects(demo_manifest, base, one_torch_thread):
    """Every planted defect gives its finding; nothing else is warn/critical (DESIGN §6).

    The cheap analyzers run on every tensor; spectral (a second or more per tensor on a busy
    2-core machine) on the planted tensors and a few clean ones: the numpy test above covers
    the condition number and energy rank of every matrix, the power-law test every alpha.
    """
    analyzers = pytest.importorskip("analyzers")
    from wstui.checkpoint.naming import kind_and_block

    registered = analyzers.names()
    cheap = [m for m in ("stats", "sparsity", "quantization", "embedding") if m in registered]
    spectral = ["spectral"] if "spectral" in registered else []
    if not cheap + spectral:
        pytest.skip("no analyzer registered yet")
    # the embedding (2048 rows, the slowest spectrum) gets its spectral checks in numpy above
    planted = {d["tensor"] for d in demo_manifest["defects"]} - {"model.embed_tokens.weight"}
    expected: dict[str, set[tuple[str, str]]] = {}
    for d in demo_manifest["defects"]:
        if CODE_ANALYZER[d["code"]] in cheap + spectral or d["code"] == "nonfinite":
            expected.setdefault(d["tensor"], set()).add((d["code"], d["severity"]))
    found: dict[str, set[tuple[str, str]]] = {}
    for name, value in base.items():
        kind, _ = kind_and_block(name)
        heavy = spectral if (name in planted or name in SPECTRAL_CLEAN) and value.ndim == 2 else []
        result = analyzers.analyze(name, value, kind=kind, methods=cheap + heavy,
                                   options={"quant_bits": [8]})  # 8 bits decide int8_lossy
        assert not result.errors, (name, result.errors)
        want = {code for code, _ in expected.get(name, ())}
        codes = {(f.code, f.severity.value) for f in result.findings
                 if f.severity.value != "info" or f.code in want}
        if codes:
            found[name] = codes
    assert found == expected


@pytest.fixture
def demo_cache(monkeypatch, demo_paths) -> Path:
    """`wstui demo` without --out builds into the (patched) cache dir: reuse the session build."""
    monkeypatch.setattr("wstui.demo.default_dir", lambda: demo_paths.root)
    return demo_paths.root


@pytest.mark.parametrize("no_diff", [False, True])
def test_demo_opens_the_app(monkeypatch, demo_cache, no_diff):
    import argparse

    from wstui.commands import demo as demo_cmd

    calls = []
    monkeypatch.setattr("wstui.commands.app.open_app",
                        lambda path, **kw: calls.append((Path(path), kw)) or 0)
    args = argparse.Namespace(out=None, no_diff=no_diff, force=False)
    assert demo_cmd.run(args) == 0
    [(path, kw)] = calls
    assert path == demo_cache / "base"
    assert kw["diff"] == (None if no_diff else demo_cache / "finetuned")
    assert kw["export_dir"] == "."


def test_demo_lists_the_base_without_the_app(monkeypatch, demo_cache, capsys):
    import argparse

    from wstui.commands import demo as demo_cmd

    monkeypatch.setitem(sys.modules, "wstui.app.app", None)  # import fails
    assert demo_cmd.run(argparse.Namespace(out=None, no_diff=False, force=False)) == 0
    out = capsys.readouterr().out
    assert "model.layers.5.mlp.down_proj.weight" in out
    assert str(demo_cache / "manifest.json") in out


def test_project_powerlaw_fit_agrees(demo_manifest, base):
    """The analyzers' own fit puts the heavy-tailed matrix below 2 and no clean matrix there."""
    powerlaw = pytest.importorskip("analyzers.powerlaw")
    heavy = by_defect(demo_manifest)["heavy_tailed_spectrum"]["tensor"]
    for name, m in base.items():
        if m.ndim != 2 or not np.isfinite(m).all():
            continue
        sv = np.linalg.svd(m.astype(np.float64), compute_uv=False)
        alpha = powerlaw.fit_powerlaw(sv**2).alpha
        if name == heavy:
            assert alpha == pytest.approx(ww_alpha(sv**2), abs=0.01) and alpha < 1.8
        else:
            assert alpha is None or alpha > 2.5, name


@pytest.mark.slow
def test_compare_sees_the_finetune(demo_manifest, base, tuned, one_torch_thread):
    """What diff mode (issue #7) relies on: low-rank updates found as low-rank, the full-rank
    attention change the largest and a `large_change`."""
    analyzers = pytest.importorskip("analyzers")
    if not hasattr(analyzers, "compare"):
        pytest.skip("analyzers.compare is not available")
    rel = {}
    for c in demo_manifest["changes"]:
        if c["change"] == "renamed":
            continue
        r = analyzers.compare(base[c["tensor"]], tuned[c["tensor"]], name=c["tensor"])
        assert not r.errors, r.errors
        m = r.metrics["compare"]
        rel[c["tensor"]] = m["rel_change"]
        assert m["rel_change"] == pytest.approx(c["rel_change"], abs=1e-3)
        codes = {f.code for f in r.findings}
        if c["change"] == "lowrank":
            assert m["delta_energy_rank_90"] <= c["rank"]
            assert "large_change" not in codes
        else:
            assert m["delta_energy_rank_90"] > 64
            assert "large_change" in codes
    full = next(c["tensor"] for c in demo_manifest["changes"] if c["change"] == "fullrank")
    assert max(rel, key=rel.get) == full


def test_cli_out_on_a_file_is_one_line(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "wstui", "demo", "--out", str(target)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(target) in proc.stderr
