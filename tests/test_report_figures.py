"""wstui.figures: tick labels, the CCDF's maths, themable inline SVG, figure files."""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import pytest

from wstui.figures import output, plots


def test_power_labels_are_plain_text():
    assert [plots.power_label(v) for v in (1, 10, 100, 0.01, 1e-7)] == [
        "1", "10", "10²", "10⁻²", "10⁻⁷"]
    assert plots.power_label(30) == "" and plots.power_label(0) == ""
    assert plots.signed_power_label(-100) == "−10²" and plots.signed_power_label(0) == "0"


def _spectral(n: int = 300, alpha: float = 3.0):
    """A matrix-free stand-in: σ of a Pareto tail, and the fit keys the spectral analyzer
    would write (the figure reads no more than these)."""
    rng = np.random.default_rng(0)
    lam = np.sort((rng.pareto(alpha - 1, n) + 1.0) * 0.5)[::-1]
    sv = np.sqrt(lam)
    data = {"spectrum": sv.tolist(), "spectrum_rank": list(range(1, n + 1)),
            "esd": {"edges": np.geomspace(lam.min(), lam.max(), 21).tolist(),
                    "density": np.full(20, 0.1).tolist()},
            "fit": {"x": [0.5, float(lam.max())], "y": [1.0, 0.01]}}
    metrics = {"alpha": alpha, "xmin": 0.5, "xmax": float(lam.max()), "n_evals": n,
               "num_pl_spikes": n}
    return data, metrics, lam


def test_ccdf_is_rank_over_n_and_the_tail_is_the_fitted_pareto():
    data, metrics, lam = _spectral()
    fig = plots.spectrum_figure("paper", data, metrics, title="t")
    ccdf_ax = fig.axes[2]
    empirical, tail = ccdf_ax.lines[0], ccdf_ax.lines[1]
    x, y = empirical.get_xdata(), empirical.get_ydata()
    assert y[0] == pytest.approx(1 / len(lam))  # the largest λ: P(Λ ≥ λ_max) = 1/n
    assert x[0] == pytest.approx(lam.max())
    assert y[-1] == pytest.approx(1.0)  # the smallest: all of them
    tx, ty = tail.get_xdata(), tail.get_ydata()
    assert ty[0] == pytest.approx(1.0)  # at xmin the whole tail (all n are spikes here)
    assert ty[-1] == pytest.approx((tx[-1] / 0.5) ** (1 - 3.0))
    assert ccdf_ax.get_xscale() == "log" and ccdf_ax.get_yscale() == "log"


def test_inline_svg_follows_the_theme_and_escapes_its_label():
    data, metrics, _ = _spectral()
    builder = partial(plots.spectrum_figure, spectral_data=data, spectral_metrics=metrics,
                      title="<b>x</b>")
    svg = output.inline_svg(builder, salt="a", label='"><script>')
    assert svg.startswith("<svg ") and "<?xml" not in svg and "<metadata" not in svg
    assert "#fe00" not in svg and "var(--fg)" in svg and "var(--c0)" in svg
    assert 'aria-label="&quot;&gt;&lt;script&gt;"' in svg
    assert "<script" not in svg
    other = output.inline_svg(builder, salt="b", label="b")
    ids = set(re.findall(r'id="(p[0-9a-f]+|m[0-9a-f]+)"', svg))
    assert ids and not ids & set(re.findall(r'id="([^"]+)"', other))


def test_paper_files_keep_text_and_names_with_dollars(tmp_path):
    data, metrics, _ = _spectral()
    builder = partial(plots.spectrum_figure, spectral_data=data, spectral_metrics=metrics,
                      title="layer.$x^2$.<w>")
    paths = output.save(builder, tmp_path / "f", ["svg", "png", "pdf"], salt="f")
    assert [p.suffix for p in paths] == [".svg", ".png", ".pdf"]
    svg = paths[0].read_text(encoding="utf-8")
    assert "layer.$x^2$.&lt;w&gt;" in svg  # math text off, XML-escaped, kept as text
    assert "CCDF of λ" in svg and "#fe00" not in svg


def test_depth_points_are_block_medians():
    assert plots._block_medians([(0, 1.0), (0, 3.0), (1, 2.0), (1, None), (2, None)]) == [
        (0, 2.0), (1, 2.0)]


def test_format_and_file_name_checks():
    assert output.parse_formats("png, SVG,png") == ["png", "svg"]
    with pytest.raises(ValueError, match="gif"):
        output.parse_formats("svg,gif")
    assert output.safe_stem("../<script>/a b.weight") == "script_a_b.weight"
