"""The data behind every plot, taken from `TensorResult.data`, ready to draw and to export.

A `PlotSpec` keeps the values in their own units (what `e` exports) and, once `prepare()` ran,
a drawable copy: log10 of log axes and at most a few hundred points. `prepare()` runs on the
scan engine's worker thread (in the result callback), so the event loop never decimates a
4096-point spectrum. plotext's own log scales are never used: they crash on a second draw.

In the render layer so that the app and the HTML report (`wstui.figures`) draw the same data:
no textual import here, nor anything that draws.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from analyzers.core import TensorResult

DRAW_POINTS = 400

#: Series colours as RGB, never ANSI names: Textual's ANSI theme draws "red" and "magenta" as
#: one colour, and RGB downgrades predictably. Each lands on a different colour at 256 and
#: at 16 colours (bright cyan, bright yellow, bright green, bright magenta, bright blue,
#: white, magenta, green); red is kept for reference lines (thresholds).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 215, 255), (255, 175, 0), (0, 215, 95), (255, 0, 255), (95, 135, 255),
    (255, 255, 255), (175, 0, 255), (0, 175, 0),
)
REFERENCE = (255, 0, 0)  # threshold and fit-range lines (26 dB, xmin)
FIT = (255, 175, 0)  # the power-law fit: not the ESD's colour, not a threshold's


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float]
    style: str = "line"  # line | scatter | bar | vline | hline
    color: str | tuple[int, int, int] | None = None


@dataclass
class PlotSpec:
    """One plot: axes, log flags, series in real units, and their drawable form."""

    key: str
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    x_log: bool = False
    y_log: bool = False
    note: str = ""
    draw: list[Series] = field(default_factory=list)
    x_ticks: tuple[list[float], list[str]] | None = None
    y_ticks: tuple[list[float], list[str]] | None = None
    x_range: tuple[float, float] | None = None  # of the drawn data (reference lines span it)
    y_range: tuple[float, float] | None = None

    def prepare(self, max_points: int = DRAW_POINTS) -> PlotSpec:
        """Fill `draw` and the tick labels (log10 of log axes, decimated). Returns self."""
        self.draw = []
        xs_all: list[float] = []
        ys_all: list[float] = []
        log_bars = False
        for s in self.series:
            x = _axis(s.x, self.x_log)
            if self.y_log and s.style == "bar":
                # counts drawn at log10(count + 1): a bin of count 1 stays a visible bar (at
                # log10(1) = 0 plotext draws none), an empty bin stays empty; ticks read counts
                y = [None if v is None else math.log10(max(float(v), 0.0) + 1.0) for v in s.y]
                log_bars = True
            else:
                y = _axis(s.y, self.y_log)
            if s.style in ("vline", "hline"):
                self.draw.append(Series(s.label, x, y, s.style, s.color))
                continue
            pts = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
            if s.style != "bar":
                pts = decimate(pts, max_points)
            dx = [p[0] for p in pts]
            dy = [p[1] for p in pts]
            xs_all += dx
            ys_all += dy
            if s.style == "bar" and dy:
                ys_all.append(0.0)  # bars stand on zero
            self.draw.append(Series(s.label, dx, dy, s.style, s.color))
        self.x_range = (min(xs_all), max(xs_all)) if xs_all else None
        self.y_range = (min(ys_all), max(ys_all)) if ys_all else None
        if xs_all:
            lo, hi = min(xs_all), max(xs_all)
            self.x_ticks = log_ticks(lo, hi) if self.x_log else linear_ticks(lo, hi, xs_all)
        if ys_all:
            lo, hi = min(ys_all), max(ys_all)
            if log_bars:
                self.y_ticks = count_ticks(hi)
            else:
                self.y_ticks = log_ticks(lo, hi) if self.y_log else linear_ticks(lo, hi, ys_all)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "x_label": self.x_label,
            "y_label": self.y_label,
            "x_scale": "log" if self.x_log else "linear",
            "y_scale": "log" if self.y_log else "linear",
            "series": [
                {"label": s.label, "style": s.style, "x": list(s.x), "y": list(s.y)}
                for s in self.series
            ],
        }

    @property
    def empty(self) -> bool:
        return not any(s.x for s in self.series if s.style not in ("vline", "hline"))


def _axis(values: Iterable[Any], log: bool) -> list[float | None]:
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        f = float(v)
        if not math.isfinite(f) or (log and f <= 0):
            out.append(None)
        else:
            out.append(math.log10(f) if log else f)
    return out


def decimate(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """At most `max_points` points, evenly spread along x (keeps the first of each x bin)."""
    if len(points) <= max_points:
        return points
    lo = min(p[0] for p in points)
    hi = max(p[0] for p in points)
    if hi <= lo:
        step = len(points) / max_points
        return [points[int(i * step)] for i in range(max_points)]
    width = (hi - lo) / max_points
    seen: set[int] = set()
    kept = []
    for p in points:
        b = min(int((p[0] - lo) / width), max_points - 1)
        if b not in seen:
            seen.add(b)
            kept.append(p)
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def power_label(exponent: int) -> str:
    """10^e written as plain text that every terminal shows: 1e3, 1e-2, 1."""
    if exponent == 0:
        return "1"
    if exponent == 1:
        return "10"
    return f"1e{exponent}"


def linear_ticks(lo: float, hi: float, values: Sequence[float] = (), n: int = 5
                 ) -> tuple[list[float], list[str]]:
    """About `n` ticks with short labels (3 significant digits; whole numbers stay whole)."""
    if all(float(v).is_integer() for v in values) and hi - lo <= 40:
        step = max(1, math.ceil((hi - lo) / 8))
        ticks = [float(v) for v in range(int(lo), int(hi) + 1, step)]
        return ticks, [str(int(t)) for t in ticks]
    if hi <= lo:
        return [lo], [tick_label(lo)]
    ticks = [lo + (hi - lo) * k / (n - 1) for k in range(n)]
    return ticks, [tick_label(t) for t in ticks]


def tick_label(v: float) -> str:
    """Short tick text: 3 significant digits, K/M for large counts (31.3K, not 3.13e+04)."""
    a = abs(v)
    for unit, div in (("M", 1e6), ("K", 1e3)):
        if a >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def log_ticks(lo: float, hi: float, max_ticks: int = 6) -> tuple[list[float], list[str]]:
    """Ticks at powers of ten for a log10 axis spanning [lo, hi]."""
    first, last = math.floor(lo), math.ceil(hi)
    if last - first < 1:
        last = first + 1
    step = max(1, math.ceil((last - first) / max_ticks))
    exps = list(range(first, last + 1, step))
    inside = [e for e in exps if lo - 1e-9 <= e <= hi + 1e-9]
    if len(inside) < 2:  # less than a decade: label the ends with their values
        ticks = [lo, hi] if hi > lo else [lo]
        return ticks, [f"{10**t:.3g}" for t in ticks]
    return [float(e) for e in inside], [power_label(e) for e in inside]


def count_ticks(hi: float) -> tuple[list[float], list[str]]:
    """Ticks for counts drawn at log10(count + 1): 0, 1, 10, 1e2, … labelled as counts."""
    top = max(1, math.ceil(hi))
    step = max(1, math.ceil(top / 6))
    exps = range(0, top + 1, step)
    return [0.0, *(math.log10(10**e + 1) for e in exps)], ["0", *(power_label(e) for e in exps)]


# --- the plots of each tab --------------------------------------------------------------------


def _list(d: Any, key: str) -> list[Any]:
    v = d.get(key) if isinstance(d, dict) else None
    if v is None:
        return []
    return list(v.tolist() if hasattr(v, "tolist") else v)


def spectrum_plot(result: TensorResult) -> PlotSpec:
    sp = result.data.get("spectral", {})
    sigma = _list(sp, "spectrum")
    rank = _list(sp, "spectrum_rank") or list(range(1, len(sigma) + 1))
    series = [Series("σ", rank, sigma, "line", PALETTE[0])]
    return PlotSpec("spectrum", "singular values by rank", "rank", "σ", series,
                    x_log=True, y_log=True)


def _ab(swap: bool) -> tuple[tuple[str, str], tuple[str, str]]:
    """(label, colour) of the base and the other checkpoint; `d` swaps which one is A."""
    a, b = ("A", PALETTE[0]), ("B", PALETTE[1])
    return (b, a) if swap else (a, b)


def overlay_plots(result: TensorResult, swap: bool = False, log_y: bool = False
                  ) -> dict[str, PlotSpec]:
    """Diff mode: both σ spectra and both histograms of a compared pair, prepared."""
    cmp = result.data.get("compare", {})
    (la, ca), (lb, cb) = _ab(swap)
    out: dict[str, PlotSpec] = {}
    sa, sb = _list(cmp, "spectrum_a"), _list(cmp, "spectrum_b")
    if sa:
        rank = _list(cmp, "spectrum_rank") or list(range(1, len(sa) + 1))
        series = [Series(f"σ {la} (base)", rank, sa, "line", ca),
                  Series(f"σ {lb}", rank[:len(sb)], sb, "line", cb)]
        if swap:
            series.reverse()
        out["spectrum"] = PlotSpec("spectrum", "singular values by rank, A and B", "rank", "σ",
                                   series, x_log=True, y_log=True).prepare()
    edges = _list(cmp, "hist_edges")
    if edges:
        c = [(x + y) / 2 for x, y in itertools.pairwise(edges)]
        series = [Series(la + " (base)", c, _list(cmp, "hist_a"), "line", ca),
                  Series(lb, c, _list(cmp, "hist_b"), "line", cb)]
        if swap:
            series.reverse()
        out["histogram"] = PlotSpec("histogram", "value histograms, A and B", "value",
                                    "count", series, y_log=log_y).prepare()
    return out


def esd_plot(result: TensorResult) -> PlotSpec:
    sp = result.data.get("spectral", {})
    esd = sp.get("esd") or {}
    edges = _list(esd, "edges")
    density = _list(esd, "density")
    centres = [math.sqrt(a * b) if a > 0 and b > 0 else (a + b) / 2
               for a, b in itertools.pairwise(edges)]
    series = [Series("ESD", centres, density, "scatter", PALETTE[0])]
    fit = sp.get("fit") or {}
    if _list(fit, "x"):
        series.append(Series("power-law fit", _list(fit, "x"), _list(fit, "y"), "line", FIT))
    xmin = sp.get("xmin", result.metrics.get("spectral", {}).get("xmin"))
    if xmin:
        series.append(Series("xmin", [float(xmin)], [], "vline", REFERENCE))
    alpha = result.metrics.get("spectral", {}).get("alpha")
    note = f"α = {alpha:.3g}" if isinstance(alpha, (int, float)) else ""
    return PlotSpec("esd", "eigenvalue density (ESD) of WᵀW", "λ", "density", series,
                    x_log=True, y_log=True, note=note)


def histogram_plot(result: TensorResult, log_y: bool = False) -> PlotSpec:
    h = result.data.get("stats", {}).get("histogram") or result.metrics.get(
        "stats", {}).get("histogram") or {}
    edges = _list(h, "edges")
    counts = _list(h, "counts")
    centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    series = [Series("count", centres, counts, "bar", PALETTE[0])]
    return PlotSpec("histogram", "value histogram", "value", "count", series, y_log=log_y)


def quant_plot(result: TensorResult) -> PlotSpec:
    colors = PALETTE
    series = []
    for i, c in enumerate(result.data.get("quantization", {}).get("curves", []) or []):
        label = f"{c.get('granularity')} {c.get('scheme')}"
        series.append(Series(label, _list(c, "bits"), _list(c, "sqnr_db"), "line",
                             colors[i % len(colors)]))
    if not series:  # fall back to the scheme rows of the default scan
        groups: dict[str, list[tuple[float, float]]] = {}
        for s in result.metrics.get("quantization", {}).get("schemes", []) or []:
            if s.get("sqnr_db") is None:
                continue
            groups.setdefault(f"{s['granularity']} {s['scheme']}", []).append(
                (s["bits"], s["sqnr_db"]))
        for i, (label, pts) in enumerate(sorted(groups.items())):
            pts.sort()
            series.append(Series(label, [p[0] for p in pts], [p[1] for p in pts], "line",
                                 colors[i % len(colors)]))
    if series:
        series.append(Series("26 dB (int8_lossy)", [], [26.0], "hline", REFERENCE))
    return PlotSpec("quantization", "SQNR against bits", "bits", "SQNR dB", series)


def depth_plot(
    rows: Sequence[tuple[str, int, Any]], metric_label: str, log: bool
) -> PlotSpec:
    """`rows` = (series, block, value): one series per module kind or tensor role (the
    caller names them; one value per block each), x = block index."""
    by_kind: dict[str, list[tuple[int, float]]] = {}
    for kind, block, value in rows:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            by_kind.setdefault(kind, []).append((block, float(value)))
    colors = PALETTE
    series = []
    for i, (kind, pts) in enumerate(sorted(by_kind.items())):
        pts.sort()
        series.append(Series(kind, [p[0] for p in pts], [p[1] for p in pts], "line",
                             colors[i % len(colors)]))
    return PlotSpec("depth", f"{metric_label} by block", "block", metric_label, series,
                    y_log=log)


#: the metrics of a training run's series (`wstui.track/1`) the app plots, with their labels
SERIES_METRICS: dict[str, str] = {
    "alpha": "α", "stable_rank": "stable rank", "spectral_norm": "spectral norm",
    "rel_change_prev": "change vs previous step", "rel_change_first": "change vs first step",
}
#: the HTSR bands of α (WeightWatcher's reading): below 2 over-trained, 2 to 6 well trained,
#: above 6 under-trained; drawn as reference lines at their edges
ALPHA_BANDS = (2.0, 6.0)
#: a run with at most this many steps gets a tick at each step
STEP_TICKS = 8


def series_plot(steps: Sequence[int], lines: Sequence[tuple[str, Sequence[Any]]], metric: str,
                *, cursor: int | None = None, title: str = "") -> PlotSpec:
    """A metric of a training run against the step: one line per entry of `lines` (a module
    kind's median, or one tensor's own series; one value per step, None where absent), x =
    the step numbers, so irregular spacing is kept. For α the HTSR bands (horizontal lines at
    2 and 6, always on the axis); the step `cursor` (a step number) as a vertical line."""
    label = SERIES_METRICS.get(metric, metric)
    series = []
    for i, (name, values) in enumerate(lines):
        pts = [(float(x), float(v)) for x, v in zip(steps, values)
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if pts:
            series.append(Series(name, [p[0] for p in pts], [p[1] for p in pts], "line",
                                 PALETTE[i % len(PALETTE)]))
    bands = metric == "alpha" and bool(series)
    if bands:
        series += [Series(f"α={edge:g}", [], [edge], "hline", REFERENCE) for edge in ALPHA_BANDS]
    if cursor is not None and series:
        series.append(Series(f"cursor: step {cursor}", [float(cursor)], [], "vline", FIT))
    spec = PlotSpec("series", title or f"{label} against step", "step", label, series)
    spec.prepare()
    if cursor is not None and spec.draw:
        spec.draw[-1].label = ""  # no legend entry: the caption and the header say the step
    if spec.x_range is not None and len(steps) <= STEP_TICKS:
        spec.x_ticks = ([float(s) for s in steps],
                        [str(s) if abs(s) < 10_000 else tick_label(s) for s in steps])
    if bands and spec.y_range is not None:  # the bands stay in view, however far the data are
        lo, hi = min(spec.y_range[0], ALPHA_BANDS[0]), max(spec.y_range[1], ALPHA_BANDS[1])
        spec.y_range = (lo, hi)
        spec.y_ticks = linear_ticks(lo, hi)
    return spec


def tensor_plots(result: TensorResult) -> dict[str, PlotSpec]:
    """Every per-tensor plot, prepared (called on a worker thread)."""
    specs = [spectrum_plot(result), esd_plot(result), histogram_plot(result), quant_plot(result)]
    return {s.key: s.prepare() for s in specs}


def sensitivity_depth_plot(doc: dict[str, Any], metric: str, log: bool = True) -> PlotSpec:
    """A sensitivity study's per-tensor `metric` (its sum over the tensor's weights) against
    block index, one line per module kind (a kind with several tensors per block, such as
    two norms, one line per tensor role), from the `wstui.sensitivity/1` document."""
    from collections import Counter

    tensors = [t for t in doc.get("tensors", []) if t.get("block") is not None]
    per_block = Counter((t["kind"], t["block"]) for t in tensors)
    shared = {kind for (kind, _), n in per_block.items() if n > 1}

    def role(t: dict[str, Any]) -> str:
        if t["kind"] not in shared:
            return t["kind"]
        parts = str(t["hf_name"]).split(".")  # `….input_layernorm.weight`: the module
        return f"{t['kind']} {parts[-2] if len(parts) > 1 else parts[-1]}"

    rows = [(role(t), int(t["block"]), t.get(metric)) for t in tensors]
    spec = depth_plot(rows, metric, log)
    spec.key = "sensitivity_depth"
    spec.title = f"{metric} (sum over each tensor) by block"
    return spec
