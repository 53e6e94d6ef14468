"""The plot data layer: log axes as log10 with power-of-ten ticks, decimation, tick text."""

from __future__ import annotations

import math

from app_support import fake_checkpoint, fixed_result

from wstui.render.plots import decimate, log_ticks, tensor_plots, tick_label


def test_log_ticks_are_powers_of_ten() -> None:
    ticks, labels = log_ticks(-2.3, 2.7)
    assert ticks == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert labels == ["1e-2", "1e-1", "1", "10", "1e2"]
    ticks, labels = log_ticks(0.1, 0.5)  # less than a decade: the ends, in real units
    assert labels == [f"{10 ** 0.1:.3g}", f"{10 ** 0.5:.3g}"]


def test_decimate_keeps_ends_and_bounds_points() -> None:
    pts = [(math.log10(k), float(k)) for k in range(1, 4097)]
    out = decimate(pts, 400)
    assert len(out) <= 401 and out[0] == pts[0] and out[-1] == pts[-1]
    assert decimate(pts[:10], 400) == pts[:10]


def test_tick_label_is_short() -> None:
    assert tick_label(31300.0) == "31.3K" and tick_label(2.5e6) == "2.5M"
    assert tick_label(-0.04421) == "-0.0442"


def test_tensor_plots_export_real_units_and_draw_log10() -> None:
    ref = fake_checkpoint().tensors[1]  # q_proj, a matrix
    result = fixed_result(ref, 0)
    plots = tensor_plots(result)
    spec = plots["spectrum"]
    sigma = result.data["spectral"]["spectrum"]
    assert spec.to_dict()["series"][0]["y"] == sigma  # exported as computed
    assert spec.draw[0].y[0] == math.log10(sigma[0])  # drawn as log10 on a linear axis
    assert spec.to_dict()["x_scale"] == "log"
    esd = plots["esd"]
    assert any(s.style == "vline" and s.x == [0.1] for s in esd.series)  # xmin marked
    assert {s.label for s in plots["quantization"].series} >= {"tensor sym", "channel sym"}


def test_log_histogram_keeps_bins_of_count_one() -> None:
    """Issue 15.1: `L` drew a bin of count 1 at log10(1) = 0, which plotext leaves blank."""
    import plotext as plt

    from analyzers.core import TensorResult
    from wstui.render.plots import histogram_plot

    r = TensorResult(name="w", kind="mlp", shape=(4, 4))
    counts = [0] * 40
    counts[5], counts[6], counts[35], counts[39] = 5000, 30, 1, 1  # two outlier bins
    r.data["stats"] = {"histogram": {"edges": [k / 10 for k in range(41)], "counts": counts}}
    spec = histogram_plot(r, log_y=True).prepare()
    bars = spec.draw[0]
    drawn = dict(zip(bars.x, bars.y))
    assert drawn[3.55] > 0 and drawn[3.95] > 0  # count 1: a bar of its own
    assert drawn[0.05] == 0  # an empty bin stays empty
    assert spec.to_dict()["series"][0]["y"] == counts  # exported as counted
    ticks, labels = spec.y_ticks
    assert labels == ["0", "1", "10", "1e2", "1e3", "1e4"]  # ticks read as counts
    assert ticks[1] == math.log10(2)
    plt.clear_figure()
    plt.plotsize(60, 12)
    plt.theme("clear")
    plt.bar(bars.x, bars.y, width=0.9)
    rows = plt.build().splitlines()
    assert any("█" in row[48:58] for row in rows)  # the outliers on the right are drawn
