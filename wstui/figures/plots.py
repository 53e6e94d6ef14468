"""The figure builders. Each takes plain data and a style and returns a matplotlib Figure.

Log axes are matplotlib's own (it has no plotext crash to work around); long spectra are
thinned to at most `MAX_POINTS` log-spaced points, which is invisible at figure size and
keeps an inline SVG small. Names are drawn as plain text (`text.parse_math` is off).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wstui.figures.output import colors
from wstui.render.columns import int8_sqnr, tensor_metric

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_POINTS = 400
INT8_LOSSY_DB = 26.0
#: (title, y label, getter on a scan-document tensor, log y) of the metrics-by-depth panels
DEPTH_PANELS = (
    ("power-law α", "α", lambda t: tensor_metric(t, "spectral", "alpha"), False),
    ("stable rank", "stable rank", lambda t: tensor_metric(t, "spectral", "stable_rank"), True),
    ("int8 SQNR (per-tensor sym)", "dB", lambda t: int8_sqnr(t.get("metrics") or {}), False),
    ("excess kurtosis", "kurtosis", lambda t: tensor_metric(t, "stats", "kurtosis"), "symlog"),
)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_label(v: float, _pos: Any = None) -> str:
    """`100` -> `10²`: plain text, since math text is off (and kept as text in SVG)."""
    if v <= 0 or not math.isfinite(v):
        return ""
    exact = math.log10(v)
    e = round(exact)
    if abs(exact - e) > 1e-9:
        return ""
    return {0: "1", 1: "10"}.get(e, "10" + str(e).translate(_SUPERSCRIPT))


def signed_power_label(v: float, _pos: Any = None) -> str:
    return "0" if v == 0 else ("−" + power_label(-v) if v < 0 else power_label(v))


def log_axes(ax: Axes, x: bool = True, y: bool = True) -> None:
    """Log scales with plain-text decade labels (matplotlib's default ones are math text).
    Call after plotting: over two decades or more the minor ticks are left out (they were
    three quarters of the drawing time and of the SVG), below that they get plain numbers so
    that an axis is never unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogFormatter, NullLocator

    class PlainLogFormatter(LogFormatter):
        """The minor labels LogFormatter picks, written `0.4` rather than `4e−01`."""

        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            return f"{x:.3g}"

    lims = (ax.dataLim.intervalx, ax.dataLim.intervaly)
    for on, axis, lim, set_scale in ((x, ax.xaxis, lims[0], ax.set_xscale),
                                     (y, ax.yaxis, lims[1], ax.set_yscale)):
        if on:
            set_scale("log")
            axis.set_major_formatter(FuncFormatter(power_label))
            lo, hi = float(min(lim)), float(max(lim))
            lo = lo if lo > 0 else 1.0  # bars stand on 0: their log axis starts at a count of 1
            if math.isfinite(hi) and hi / lo >= 100:
                axis.set_minor_locator(NullLocator())
            else:
                axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _title(fig: Figure, style: str, title: str | None) -> None:
    """The tensor name tops a paper figure (a file must say what it shows); on the web page
    the section heading says it."""
    if title and style == "paper":
        fig.suptitle(title, fontsize=9)


def thin(x: Sequence[float], y: Sequence[float], n: int = MAX_POINTS
         ) -> tuple[list[float], list[float]]:
    """At most `n` points, log-spaced in index (a spectrum's detail is at small ranks)."""
    if len(x) <= n:
        return list(x), list(y)
    import numpy as np

    idx = np.unique(np.geomspace(1, len(x), n).astype(int) - 1)
    return [x[i] for i in idx], [y[i] for i in idx]


# ----------------------------------------------------------------------------- per tensor
def spectrum_figure(style: str, spectral_data: Mapping[str, Any],
                    spectral_metrics: Mapping[str, Any], title: str | None = None) -> Figure:
    """σ by rank; the ESD with the power-law fit and xmin; the CCDF of λ with the fitted tail.

    The CCDF needs no binning (WeightWatcher's users ask for it over sparse histograms): the
    spectrum keeps each σ's rank, and P(λ ≥ λ_r) = r / n_evals over the λ the fit keeps."""
    c = colors(style)
    fig = _figure(9.0, 2.8)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    sigma = [float(v) for v in spectral_data.get("spectrum") or []]
    rank = list(spectral_data.get("spectrum_rank") or range(1, len(sigma) + 1))
    pos = [(r, s) for r, s in zip(rank, sigma) if s > 0]
    if pos:
        xr, ys = thin([p[0] for p in pos], [p[1] for p in pos])
        ax1.plot(xr, ys, color=c[0])
        log_axes(ax1)
    ax1.set(title="singular values", xlabel="rank", ylabel="σ")

    alpha = _num(spectral_metrics.get("alpha"))
    xmin = _num(spectral_metrics.get("xmin"))
    esd = spectral_data.get("esd") or {}
    edges, dens = list(esd.get("edges") or []), list(esd.get("density") or [])
    pts = [(math.sqrt(a * b), d) for a, b, d in zip(edges, edges[1:], dens) if a > 0 and d > 0]
    if pts:
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=3, color=c[0], label="ESD")
        fit = spectral_data.get("fit") or {}
        if fit.get("x"):
            ax2.plot(fit["x"], fit["y"], color=c[3],
                     label=f"fit α = {alpha:.2f}" if alpha is not None else "fit")
        if xmin:
            ax2.axvline(xmin, color=c[1], ls="--", lw=1, label="xmin")
        log_axes(ax2)
        ax2.legend(loc="lower left")
    else:
        _empty(ax2, "no eigenvalue density")
    ax2.set(title="eigenvalue density of WᵀW", xlabel="λ", ylabel="density")

    n = _num(spectral_metrics.get("n_evals"))
    lam = [(r, s * s) for r, s in pos if s * s > 1e-5]
    if lam and n:
        xr, yr = thin([p[1] for p in lam], [p[0] / n for p in lam])
        ax3.plot(xr, yr, drawstyle="steps-post", color=c[0], label="empirical")
        spikes = _num(spectral_metrics.get("num_pl_spikes"))
        xmax = _num(spectral_metrics.get("xmax"))
        if alpha is not None and xmin and spikes and xmax:
            import numpy as np

            xs = np.geomspace(xmin, xmax, 64)
            ax3.plot(xs, spikes / n * (xs / xmin) ** (1.0 - alpha), color=c[3],
                     label="fitted tail")
            ax3.axvline(xmin, color=c[1], ls="--", lw=1)
        log_axes(ax3)
        ax3.legend(loc="lower left")
    else:
        _empty(ax3, "no eigenvalues")
    ax3.set(title="CCDF of λ", xlabel="λ", ylabel="P(Λ ≥ λ)")
    _title(fig, style, title)
    return fig


def histogram_figure(style: str, histogram: Mapping[str, Any],
                     title: str | None = None) -> Figure:
    """The 64-bin value histogram on a log count axis (tails and outliers show)."""
    c = colors(style)
    fig = _figure(4.5, 2.6)
    ax = fig.subplots()
    edges = [float(v) for v in histogram.get("edges") or []]
    counts = [float(v) for v in histogram.get("counts") or []]
    if edges and counts:
        ax.stairs(counts, edges, fill=True, color=c[0], alpha=0.8)
        if max(counts) > 0:
            log_axes(ax, x=False)
            ax.set_ylim(bottom=0.5)
    else:
        _empty(ax, "no histogram")
    _few_ticks(ax)
    ax.set(title="value histogram", xlabel="value", ylabel="count")
    _title(fig, style, title)
    return fig


def kmeans_figure(style: str, scores: Mapping[str, Any], chosen: int | None,
                  title: str | None = None) -> Figure:
    """Calinski–Harabasz score against k: how clearly the chosen k stands out."""
    c = colors(style)
    fig = _figure(4.5, 2.6)
    ax = fig.subplots()
    ks, ch = list(scores.get("k") or []), list(scores.get("ch") or [])
    if ks:
        ax.plot(ks, ch, "o-", color=c[0], ms=4)
        if chosen in ks:
            ax.plot([chosen], [ch[ks.index(chosen)]], "o", ms=9, mfc="none", color=c[3],
                    label=f"chosen k = {chosen}")
            ax.legend(loc="best")
        ax.set_xticks(ks)
    else:
        _empty(ax, "no k-means scores")
    ax.set(title="k-means: Calinski–Harabasz score", xlabel="k", ylabel="score")
    _title(fig, style, title)
    return fig


# ------------------------------------------------------------------------------ the model
def kind_styles(kinds: Sequence[str], style: str) -> dict[str, dict[str, Any]]:
    """One colour (and, past eight kinds, a dash) per module kind, the same in every panel."""
    c = colors(style)
    dashes = ("-", "--", ":")
    return {k: {"color": c[i % len(c)], "ls": dashes[(i // len(c)) % len(dashes)]}
            for i, k in enumerate(kinds)}


def _block_medians(values: Sequence[tuple[int, float | None]]) -> list[tuple[int, float]]:
    """One point per block: the median where a block holds several tensors of a kind (two
    norms, MoE experts), so that a line never zigzags within a block."""
    import statistics

    by_block: dict[int, list[float]] = {}
    for block, v in values:
        if v is not None:
            by_block.setdefault(block, []).append(v)
    return [(b, statistics.median(vs)) for b, vs in sorted(by_block.items())]


def depth_figure(style: str, tensors: Sequence[Mapping[str, Any]], kind_order: Sequence[str]
                 ) -> Figure:
    """Four metrics against block index, one line per module kind (from the scan document)."""
    fig = _figure(9.0, 5.2)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    blocked = [t for t in tensors if isinstance(t.get("block"), int)]
    order = {k: i for i, k in enumerate(kind_order)}
    kinds = sorted({t.get("kind") or "other" for t in blocked},
                   key=lambda k: (order.get(k, len(order)), k))
    look = kind_styles(kinds, style)
    for ax, (title, ylabel, get, log) in zip(axes, DEPTH_PANELS):
        drawn = False
        for kind in kinds:
            pts = _block_medians([(t["block"], _num(get(t))) for t in blocked
                                  if (t.get("kind") or "other") == kind])
            if log is True:
                pts = [p for p in pts if p[1] > 0]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", ms=4,
                        label=kind, **look[kind])
                drawn = True
        if drawn and log is True:
            log_axes(ax, x=False)
        elif drawn and log == "symlog":  # excess kurtosis may be negative
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("symlog", linthresh=1.0)
            ax.yaxis.set_major_formatter(FuncFormatter(signed_power_label))
        if not drawn:
            _empty(ax, "not computed")
        if title.startswith("int8") and drawn:
            ax.axhline(INT8_LOSSY_DB, color=colors(style)[6], lw=0.8, ls=":")
        ax.set(title=title, ylabel=ylabel)
    for ax in axes[2:]:
        ax.set_xlabel("block")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside right upper")
    return fig


def quant_figure(style: str, quant_doc: Mapping[str, Any]) -> Figure:
    """The study's summary against bits, one line per granularity and scheme: mean and worst
    SQNR, and the change of mean α (tail above the unquantized xmin, and free refit)."""
    c = colors(style)
    fig = _figure(9.0, 2.9)
    ax1, ax2 = fig.subplots(1, 2)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in (quant_doc.get("summary") or [])[1:]:
        groups.setdefault(f"{row['granularity']} {row['scheme']}", []).append(row)
    for i, (label, rows) in enumerate(groups.items()):
        rows = sorted(rows, key=lambda r: r["bits"])
        bits = [r["bits"] for r in rows]
        col = c[i % len(c)]
        ax1.plot(bits, [_num(r["sqnr_mean"]) for r in rows], "o-", color=col, ms=4,
                 label=label)
        ax1.plot(bits, [_num(r["sqnr_min"]) for r in rows], "o--", color=col, ms=3, lw=1)
        ax2.plot(bits, [_num((r.get("alpha_fixed_xmin") or {}).get("change_pct"))
                        for r in rows], "o-", color=col, ms=4)
        ax2.plot(bits, [_num((r.get("alpha") or {}).get("change_pct")) for r in rows],
                 "o--", color=col, ms=3, lw=1)
    if not groups:
        _empty(ax1, "no study")
        _empty(ax2, "no study")
    ax1.axhline(INT8_LOSSY_DB, color=c[6], lw=0.8, ls=":")
    ax1.set(title="SQNR against bits", xlabel="bits", ylabel="SQNR dB")
    ax2.axhline(0.0, color=c[6], lw=0.8, ls=":")
    ax2.set(title="change of mean α", xlabel="bits", ylabel="% of unquantized")
    if groups:  # colour = setting; line style is explained in the caption
        fig.legend(loc="outside right upper", title="solid: mean\ndashed: worst / free refit",
                   title_fontsize=7)
    return fig


def diff_ranking_figure(style: str, ranked: Sequence[tuple[str, float]]) -> Figure:
    """The most-changed pairs as horizontal bars of rel_change (largest on top)."""
    c = colors(style)
    fig = _figure(9.0, 0.6 + 0.22 * max(1, len(ranked)))
    ax = fig.subplots()
    if ranked:
        names = [_short(n) for n, _ in ranked][::-1]
        values = [v for _, v in ranked][::-1]
        ax.barh(range(len(values)), values, color=c[0])
        ax.set_yticks(range(len(values)), names)
        ax.grid(axis="y", visible=False)
    else:
        _empty(ax, "no pair changed")
    ax.set(title="most changed tensors", xlabel="rel_change = ‖B−A‖ / ‖A‖")
    return fig


def diff_overlay_figure(style: str, compare_data: Mapping[str, Any],
                        title: str | None = None) -> Figure:
    """A pair's σ spectra and value histograms, A and B overlaid."""
    c = colors(style)
    fig = _figure(9.0, 2.6)
    ax1, ax2 = fig.subplots(1, 2)
    sa, sb = compare_data.get("spectrum_a") or [], compare_data.get("spectrum_b") or []
    if sa:
        rank = list(compare_data.get("spectrum_rank") or range(1, len(sa) + 1))
        for label, s, col, ls in (("A", sa, c[0], "-"), ("B", sb, c[1], "--")):
            pts = [(r, v) for r, v in zip(rank, s) if v > 0]
            if pts:
                x, y = thin([p[0] for p in pts], [p[1] for p in pts])
                ax1.plot(x, y, color=col, ls=ls, label=label)
        log_axes(ax1)
        ax1.legend(loc="lower left")
    else:
        _empty(ax1, "no spectra")
    ax1.set(title="singular values, A and B", xlabel="rank", ylabel="σ")
    edges = compare_data.get("hist_edges") or []
    if edges:
        for label, key, col in (("A", "hist_a", c[0]), ("B", "hist_b", c[1])):
            counts = compare_data.get(key) or []
            if counts:
                ax2.stairs(counts, edges, color=col, label=label, lw=1.2)
        log_axes(ax2, x=False)
        ax2.set_ylim(bottom=0.5)
        ax2.legend(loc="upper right")
    else:
        _empty(ax2, "no histograms")
    _few_ticks(ax2)
    ax2.set(title="value histograms, A and B", xlabel="value", ylabel="count")
    _title(fig, style, title)
    return fig


def _short(name: str, limit: int = 48) -> str:
    for prefix in ("model.", "layers."):
        name = name.removeprefix(prefix)
    name = name.removesuffix(".weight")
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _few_ticks(ax: Axes) -> None:
    """At most five value ticks: labels like −0.075 collide at six or more."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))


def _empty(ax: Axes, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=8,
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------- sensitivity
def sensitivity_depth_figure(style: str, tensors: Sequence[Mapping[str, Any]],
                             metrics: Sequence[str], kind_order: Sequence[str]) -> Figure:
    """Per-weight sensitivity against block, one line per module kind and one panel per
    metric (log scale): where in depth, and in which modules, the model's loss is fragile."""
    from matplotlib.ticker import MaxNLocator

    metrics = list(metrics)[:4]
    fig = _figure(4.6 * max(1, min(2, len(metrics))), 2.8 * ((len(metrics) + 1) // 2 or 1))
    axes = fig.subplots((len(metrics) + 1) // 2 or 1, min(2, len(metrics)) or 1, squeeze=False)
    kinds = [k for k in kind_order if any(t["kind"] == k and t["block"] is not None
                                          for t in tensors)]
    styles = kind_styles(kinds, style)
    for ax, m in zip(axes.flat, metrics):
        drawn = False
        for k in kinds:
            pts = [(t["block"], t[m] / t["numel"]) for t in tensors
                   if t["kind"] == k and t["block"] is not None and t.get(m) and t["numel"]]
            med = _block_medians(pts)
            if med:
                ax.plot([b for b, _ in med], [v for _, v in med], marker=".", ms=4,
                        label=k, **styles[k])
                drawn = True
        if drawn:
            ax.set_yscale("log")
            log_axes(ax, x=False)
        else:
            _empty(ax, f"no {m} scores")
        ax.set(title=f"{m} per weight", xlabel="block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # blocks are whole numbers
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    if kinds:
        fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside right upper")
    return fig
