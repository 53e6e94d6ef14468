"""Figure styles, and the two ways a figure leaves matplotlib: an inline SVG string that
follows the page's theme, and files (SVG with text as text, PNG, PDF) for a paper.

Figures are `matplotlib.figure.Figure` objects, never pyplot: no global figure registry, no
backend switch, nothing to close, and safe off the main thread."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

FORMATS = ("svg", "png", "pdf")
PNG_DPI = 200

#: Okabe-Ito: told apart with every common colour-vision deficiency, in print and on screen
PAPER_COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
                "#999999")
#: sentinels of the web style: swapped for var(--c0)... in the SVG text (unlikely as real data
#: colours; matplotlib writes colours as lower-case #rrggbb)
WEB_COLORS = tuple(f"#fe00{i:02x}" for i in range(len(PAPER_COLORS)))
WEB_FG, WEB_GRID = "#fe0020", "#fe0021"
PAPER_FG, PAPER_GRID = "#222222", "#cccccc"


def colors(style: str) -> tuple[str, ...]:
    return WEB_COLORS if style == "web" else PAPER_COLORS


def fg(style: str) -> str:
    return WEB_FG if style == "web" else PAPER_FG


def rc(style: str, salt: str = "wstui") -> dict[str, Any]:
    """matplotlib settings of a style. Text stays text in SVG (`svg.fonttype = none`: a paper's
    editor can change it, and the file is small); math text is off, so a `$` in a tensor name
    is printed, not parsed; `svg.hashsalt` keeps ids unique across the SVGs of one page and
    the output reproducible."""
    ink = fg(style)
    grid = WEB_GRID if style == "web" else PAPER_GRID
    return {
        "svg.fonttype": "none",
        "svg.hashsalt": salt,
        "pdf.fonttype": 42,
        "text.parse_math": False,
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
        "font.size": 9,
        "axes.titlesize": 9,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "text.color": ink,
        "axes.labelcolor": ink,
        "axes.edgecolor": ink,
        "xtick.color": ink,
        "ytick.color": ink,
        "axes.prop_cycle": _cycler(colors(style)),
        "axes.grid": True,
        "axes.axisbelow": True,  # grid behind the histogram bars, not across them
        "grid.color": grid,
        "grid.linewidth": 0.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "figure.facecolor": "none" if style == "web" else "white",
        "axes.facecolor": "none" if style == "web" else "white",
        "savefig.facecolor": "none" if style == "web" else "white",
        # the layout engine fits a web figure already; "tight" would draw each one twice
        "savefig.bbox": None if style == "web" else "tight",
        "savefig.pad_inches": 0.05,
        "path.simplify": True,
        "lines.linewidth": 1.4,
    }


def _cycler(cs: Sequence[str]) -> Any:
    from cycler import cycler

    return cycler(color=list(cs))


@contextlib.contextmanager
def styled(style: str, salt: str = "wstui") -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(rc(style, salt)):
        yield


def build(builder: Callable[[str], Figure], style: str, salt: str) -> Figure:
    """Call `builder(style)` under the style's settings (they are read as artists are made)."""
    with styled(style, salt):
        return builder(style)


_XML_HEAD = re.compile(r"\A.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SENTINEL = re.compile(r"#fe00([0-9a-f]{2})")


def _css_var(m: re.Match[str]) -> str:
    code = int(m.group(1), 16)
    if code == 0x20:
        return "var(--fg)"
    if code == 0x21:
        return "var(--grid)"
    return f"var(--c{code})"


def inline_svg(builder: Callable[[str], Figure], salt: str, label: str) -> str:
    """The figure as an `<svg>` element for an HTML page: no XML prolog, no metadata, theme
    colours as CSS variables, an accessible label. Text in it was escaped by matplotlib's SVG
    writer; `label` is escaped here."""
    from html import escape

    with styled("web", salt):
        fig = builder("web")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = _METADATA.sub("", _XML_HEAD.sub("", buf.getvalue(), count=1), count=1)
    svg = _SENTINEL.sub(_css_var, svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)


def save(builder: Callable[[str], Figure], stem: Path, formats: Sequence[str], salt: str
         ) -> list[Path]:
    """Write the figure as `stem.<fmt>` for each format, in the paper style."""
    out = []
    with styled("paper", salt):
        fig = builder("paper")
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            meta = {"Date": None} if fmt == "svg" else ({"CreationDate": None}
                                                          if fmt == "pdf" else None)
            fig.savefig(path, format=fmt, dpi=PNG_DPI if fmt == "png" else None, metadata=meta)
            out.append(path)
    return out


def parse_formats(value: str) -> list[str]:
    """`svg,png` -> ['svg', 'png']; ValueError naming the bad one."""
    out = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [v for v in out if v not in FORMATS]
    if bad or not out:
        raise ValueError(f"--format: unknown figure format {', '.join(bad) or value!r} "
                         f"(known: {', '.join(FORMATS)})")
    return list(dict.fromkeys(out))


def safe_stem(name: str, limit: int = 80) -> str:
    """A file name from a tensor name: only [A-Za-z0-9._-] (a hostile name writes no path)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "tensor"
    return s[:limit]
