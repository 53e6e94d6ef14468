"""A sensitivity study (`wstui.sensitivity/1`) as rich renderables (what `wstui sensitivity`
prints): the perplexity line, the most sensitive tensors, the super weights, the perturbation
table and the stability line."""

from __future__ import annotations

from typing import Any

from wstui.render.numbers import fmt_fixed
from wstui.render.text import plain  # names and paths from files shown as text (DESIGN §10)


def _g(x: Any, spec: str = ".3g") -> str:
    """These tables' numbers: three significant digits unless a column says otherwise."""
    return fmt_fixed(x, spec)


def summary(doc: dict[str, Any]) -> list[Any]:
    """Perplexity, the most sensitive tensors, the super weights, the perturbation table."""
    from rich import box
    from rich.table import Table

    parts: list[Any] = []
    t = doc["text"]
    parts.append(plain(f"{doc['checkpoint']['path']}: perplexity {_g(doc['perplexity'], '.3f')} "
                       f"on {t['tokens']} tokens of {t['source']} "
                       f"({doc['timings'].get('total_s', 0):.1f} s on {doc['device']})"))
    metric = doc["settings"]["metrics"][0]
    top = sorted((r for r in doc["tensors"] if r.get(metric) is not None),
                 key=lambda r: -r[metric])[:10]
    tab = Table(title=f"Most sensitive tensors by {metric}", title_justify="left",
                box=box.SIMPLE_HEAD)
    for col in ("tensor", "kind", *doc["settings"]["metrics"]):
        tab.add_column(col, justify="left" if col in ("tensor", "kind") else "right")
    for r in top:
        tab.add_row(plain(r["hf_name"]), plain(r["kind"]),
                    *[_g(r.get(m)) for m in doc["settings"]["metrics"]])
    parts.append(tab)
    parts.append(super_table(doc) if doc["super_weights"] else no_super_line(doc))
    parts.append(perturbation_table(doc))
    halves = doc["stability"].get("halves")
    if halves:
        parts.append("Stability across the two text halves (Jaccard@k of the top-k, Spearman "
                     "of per-tensor totals): " + "; ".join(
                         f"{m} {_g(v['jaccard'], '.2f')} / {_g(v['spearman'], '.2f')}"
                         for m, v in halves.items() if isinstance(v, dict)))
    return parts


def no_super_line(doc: dict[str, Any]) -> str:
    return ("No super weight: no down-projection output spike above "
            f"{doc['settings']['spike_ratio']:g}x the median over layers.")


def super_table(doc: dict[str, Any], block: int | None = None, *, title: str | None = None,
                compact: bool = False) -> Any:
    """The super weights (zeroed one at a time), of `block` only when given; `compact`
    (the app beside its tree) leaves out the activations."""
    from rich import box
    from rich.table import Table

    rows = [s for s in doc["super_weights"] if block is None or s.get("block") == block]
    sw = Table(title=title or "Super weights (zeroed one at a time)", title_justify="left",
               box=box.SIMPLE_HEAD, pad_edge=not compact)
    cols = ["tensor", "row", "col", "value", *(() if compact else ("act_in", "act_out")),
            "ppl zeroed", "ratio"]
    for col in cols:
        sw.add_column(col, justify="left" if col == "tensor" else "right",
                      overflow="fold" if compact and col == "tensor" else "ellipsis")
    for s in rows:
        cells = [plain(s["tensor"]), str(s["row"]), str(s["col"]), _g(s["value"])]
        if not compact:
            cells += [_g(s["act_in"]), _g(s["act_out"])]
        cells += [_g(s["ppl_zeroed"], ".4g"), _g(s["ppl_ratio"])]
        sw.add_row(*cells)
    return sw


PERTURBATION_COLUMNS = ("method", "target", "metric", "k", "seed", "ppl", "ratio")


def perturbation_row(r: dict[str, Any], has_acc: bool = False) -> list[str]:
    cells = [r["method"], r["target"], r["metric"] or "", str(r["k"]),
             "" if r["seed"] is None else str(r["seed"]), _g(r["ppl"], ".4g"),
             _g(r["ppl_ratio"])]
    if has_acc:
        cells.append(_g(r.get("accuracy"), ".3f"))
    return cells


def perturbation_table(doc: dict[str, Any], *, title: str | None = None,
                       compact: bool = False) -> Any:
    """Each method on each target set, perplexity after and its ratio to before."""
    from rich import box
    from rich.table import Table

    pt = Table(title=title or f"Perturbation (perplexity before: {_g(doc['perplexity'], '.4g')})",
               title_justify="left", box=box.SIMPLE_HEAD, pad_edge=not compact)
    cols = list(PERTURBATION_COLUMNS)
    has_acc = any("accuracy" in r for r in doc["perturbation"])
    if has_acc:
        cols.append("accuracy")
    for col in cols:
        pt.add_column(col, justify="left" if col in ("method", "target", "metric") else "right")
    for r in doc["perturbation"]:
        pt.add_row(*perturbation_row(r, has_acc))
    return pt


#: the heat map's intensity ramp, coolest to hottest: characters, so that it reads under
#: NO_COLOR; the colours (dark blue to yellow, RGB so that 256 colours keep them apart)
#: only repeat them
RAMP = " .:-=+*#%@"
RAMP_STYLES = ("#1c1c3a", "#26265e", "#1f3f8a", "#1d6fa5", "#1a9c9c", "#3bb273", "#8cc63f",
               "#d8d82a", "#f5a623", "#ff3d00")
#: the decades of the log scale below the hottest cell (cells below are the coolest level)
DECADES = 4.0


def heat_levels(values: Any, decades: float = DECADES) -> tuple[Any, float, float]:
    """(levels 0..len(RAMP)-1 per cell, lo, hi): log10 scale from `hi` (the largest cell,
    level 9) down to `lo` = max(smallest positive cell, hi / 10**decades) (level 1); zero,
    missing and cells below `lo` are level 0."""
    import numpy as np

    a = np.asarray([[np.nan if v is None else v for v in row] for row in values]
                   if isinstance(values, list) else values, dtype=np.float64)
    pos = a[np.isfinite(a) & (a > 0)]
    top = len(RAMP) - 1
    if pos.size == 0:
        return np.zeros(a.shape, dtype=int), 0.0, 0.0
    hi = float(pos.max())
    lo = max(float(pos.min()), hi / 10 ** decades)
    with np.errstate(divide="ignore", invalid="ignore"):
        if hi > lo:
            f = (np.log10(a) - np.log10(lo)) / (np.log10(hi) - np.log10(lo))
            lev = 1 + np.floor(f * (top - 1) + 1e-9)
        else:
            lev = np.full(a.shape, float(top))
    lev = np.where(np.isfinite(a) & (a >= lo) & (a > 0), np.clip(lev, 1, top), 0)
    return lev.astype(int), lo, hi


def heatmap_text(values: Any, row_edges: list[int], col_edges: list[int], *,
                 mark: tuple[int, int] | None = None) -> Any:
    """The map as text: one character per cell (`RAMP`), the first weight row of every
    fourth cell row on the left, the column range on top; `mark` = a cell drawn reversed
    (the top weight's)."""
    from rich.text import Text

    lev, _, _ = heat_levels(values)
    n_rows, n_cols = lev.shape
    label_w = max(len(str(row_edges[-1] - 1)), 3) + 1
    t = Text(no_wrap=True, overflow="crop")
    last_col = str(col_edges[-1] - 1)
    head = "col 0"
    gap = max(1, n_cols - len(head) - len(last_col))
    t.append(" " * label_w + head + " " * gap + last_col + "\n", style="dim")
    for i in range(n_rows):
        label = str(row_edges[i]) if i % 4 == 0 else ""
        t.append(f"{label:>{label_w - 1}} ", style="dim")
        for j in range(n_cols):
            level = int(lev[i, j])
            style = f"{'#000000' if level >= 6 else '#d0d0d0'} on {RAMP_STYLES[level]}"
            if mark == (i, j):
                style = "reverse bold"
            t.append(RAMP[level], style=style)
        if i < n_rows - 1:
            t.append("\n")
    return t


def heat_legend(values: Any, how: str = "max") -> Any:
    from rich.text import Text

    _, lo, hi = heat_levels(values)
    t = Text(f"{how} of |g⊙w| per cell, log scale: ")
    for level, ch in enumerate(RAMP):
        t.append(ch if ch != " " else "·", style=f"{'#000000' if level >= 6 else '#d0d0d0'} "
                 f"on {RAMP_STYLES[level]}")
    t.append(f"  {_g(lo)} … {_g(hi)} (blank: below)", style="dim")
    return t
