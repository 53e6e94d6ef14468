"""What a report says, as plain blocks (tables, figures, text) that both writers render.

Every number comes from the documents `wstui scan --json`, `wstui quant --json` and
`wstui scan A --diff B --json` write (`wstui.scan/1`, `wstui.quant/1`, `wstui.diff/1`); the
plot arrays, which those documents leave out, come from the same results' `TensorResult.data`.
A table cell keeps the document's exact value beside its short text, so the HTML can show
`0.1235` and carry `0.12345678` for the reader (and the tests) to check.

Hook for model-scope analyses (the sensitivity study): `ReportInput.extra_sections` takes
`Section`s built from their own document; they are written after the built-in ones, in both
formats, with no change here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from wstui.documents.diff import CHANGED_REL  # what counts as a changed pair
from wstui.figures.plots import (
    depth_figure,
    diff_overlay_figure,
    diff_ranking_figure,
    histogram_figure,
    kmeans_figure,
    quant_figure,
    spectrum_figure,
)
from wstui.render.columns import KIND_COLUMNS, tensor_metric
from wstui.render.numbers import KIND_ORDER, fmt, human_count, kind_key, median

if TYPE_CHECKING:  # pragma: no cover
    from wstui.engine.diff import DiffReport
    from wstui.engine.scan import ScanReport

TOP_ISSUES = 50
DIFF_TOP = 20
DIFF_OVERLAYS = 3
SEVERITIES = ("critical", "warn", "info")
_NO_VALUE = object()



# ------------------------------------------------------------------------------- blocks
@dataclass
class Cell:
    """`text` shown; `exact`: the document's value (kept in the HTML's title attribute)."""

    text: str
    exact: Any = _NO_VALUE
    cls: str | None = None  # a CSS class, e.g. the severity

    @property
    def has_exact(self) -> bool:
        return self.exact is not _NO_VALUE


@dataclass
class Table:
    id: str
    caption: str
    columns: list[str]
    rows: list[list[Cell]]
    numeric: frozenset[int] = frozenset()  # right-aligned columns


@dataclass
class Fig:
    """A figure: `key` names its file; `builder(style)` draws it (see wstui.figures)."""

    key: str
    caption: str
    builder: Callable[[str], Any]


@dataclass
class Para:
    text: str


@dataclass
class Sub:
    """A sub-heading (a tensor's name in the worst-tensors section)."""

    text: str


Block = Table | Fig | Para | Sub


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def figures(self) -> list[Fig]:
        return [b for b in self.blocks if isinstance(b, Fig)]


@dataclass
class ReportInput:
    """The results a report is written from (finished or cancelled engines' reports)."""

    scan: ScanReport
    scan_doc: dict[str, Any]
    quant_doc: dict[str, Any] | None = None
    diff: DiffReport | None = None
    diff_doc: dict[str, Any] | None = None
    worst: int = 5
    command: str = ""
    cached: int | None = None  # tensors whose results all came from the cache
    extra_sections: list[Section] = field(default_factory=list)


# ------------------------------------------------------------------------------ numbers
def num(v: Any) -> Cell:
    return Cell(fmt(v), v)


# ----------------------------------------------------------------------------- sections
def summary_section(inp: ReportInput) -> Section:
    doc = inp.scan_doc
    ck = doc["checkpoint"]
    files = ck.get("files") or []
    counts = {s: sum(1 for i in doc["top_issues"] if i["severity"] == s) for s in SEVERITIES}
    rows = [
        ("checkpoint", Cell(str(ck.get("path")))),
        ("format", Cell(f"{ck.get('format')}, {len(files)} file{'s' if len(files) != 1 else ''}")),
        ("parameters", Cell(f"{human_count(int(ck.get('n_params') or 0))} in "
                            f"{ck.get('n_tensors')} tensors", ck.get("n_params"))),
        ("dtypes", Cell(", ".join(f"{k} {v}"
                                  for k, v in sorted((ck.get("dtypes") or {}).items())))),
        ("scanned", Cell(f"{len(doc['tensors'])} tensors; methods {', '.join(doc['methods'])}")),
        ("scan", Cell(f"{doc['elapsed_s']:.2f} s on {doc['device']}"
                      + (f" ({inp.cached} of {len(doc['tensors'])} tensors from the result "
                         "cache)" if inp.cached else "")
                      + ("" if doc.get("complete", True) else " (interrupted: partial results)"),
                      doc["elapsed_s"])),
        ("findings", Cell(", ".join(f"{counts[s]} {s}" for s in SEVERITIES))),
        ("wstui", Cell(str(doc.get("wstui_version")))),
    ]
    n_err = sum(1 for t in doc["tensors"] if t.get("errors"))
    if n_err:
        rows.append(("errors", Cell(f"{n_err} tensors with analyzer errors (see the JSON)")))
    table = Table("summary-table", "Checkpoint", ["field", "value"],
                  [[Cell(k, cls="key"), v] for k, v in rows])
    return Section("summary", "Summary", [table])


def issues_section(inp: ReportInput) -> Section:
    issues = inp.scan_doc["top_issues"]
    shown = issues[:TOP_ISSUES]
    rows = [[Cell(str(i)), Cell(it["severity"], cls=f"sev-{it['severity']}"),
             Cell(it["tensor"]), Cell(it["code"]), num(it["value"]), num(it["threshold"]),
             Cell(it["message"])] for i, it in enumerate(shown, 1)]
    caption = f"Top issues ({len(shown)} of {len(issues)}; critical first, then how far past " \
              "the threshold)"
    blocks: list[Block] = []
    if rows:
        blocks.append(Table("top-issues", caption, ["#", "severity", "tensor", "code", "value",
                                                    "threshold", "message"], rows,
                            frozenset({0, 4, 5})))
    else:
        blocks.append(Para("No findings."))
    return Section("top-issues", "Top issues", blocks)


def kinds_section(inp: ReportInput) -> Section:
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for t in inp.scan_doc["tensors"]:
        by_kind.setdefault(t.get("kind") or "other", []).append(t)
    cols = [(title, get) for title, get in KIND_COLUMNS
            if any(get(t.get("metrics") or {}) is not None for ts in by_kind.values()
                   for t in ts)]
    rows = []
    for kind in sorted(by_kind, key=kind_key):
        ts = by_kind[kind]
        n_find = sum(len(t.get("findings") or []) for t in ts)
        metrics = [t.get("metrics") or {} for t in ts]
        rows.append([Cell(kind), num(len(ts)), *[num(median([get(m) for m in metrics]))
                                                  for _, get in cols], num(n_find)])
    table = Table("kinds", "Per module kind (medians over the kind's tensors)",
                  ["kind", "tensors", *[c for c, _ in cols], "findings"], rows,
                  frozenset(range(1, len(cols) + 3)))
    return Section("kinds", "Per module kind", [table])


def depth_section(inp: ReportInput) -> Section:
    tensors = inp.scan_doc["tensors"]
    fig = Fig("depth", "Metrics by depth: one line per module kind, x = block index (the "
              "median where a block has several tensors of a kind). The dotted line of the int8 "
              "panel is int8_lossy's 26 dB.",
              partial(depth_figure, tensors=tensors, kind_order=KIND_ORDER))
    return Section("depth", "Metrics by depth", [fig])


def worst_tensors(inp: ReportInput) -> list[str]:
    """Stored names of the `worst` tensors to plot: those of the top issues first (in their
    order), then the matrices with the lowest α (the heaviest tails), each once."""
    by_name = {e.ref.name: e for e in inp.scan.entries}

    def plottable(name: str) -> bool:
        e = by_name.get(name)
        return e is not None and bool(e.result.data.get("spectral", {}).get("spectrum"))

    out: list[str] = []
    for it in inp.scan_doc["top_issues"]:
        if it["tensor"] not in out and plottable(it["tensor"]):
            out.append(it["tensor"])
    rest = sorted((t for t in inp.scan_doc["tensors"] if t["name"] not in out
                   and plottable(t["name"]) and tensor_metric(t, "spectral", "alpha") is not None),
                  key=lambda t: tensor_metric(t, "spectral", "alpha"))
    out += [t["name"] for t in rest]
    return out[: max(0, inp.worst)]


def worst_section(inp: ReportInput) -> Section:
    by_name = {e.ref.name: e for e in inp.scan.entries}
    docs = {t["name"]: t for t in inp.scan_doc["tensors"]}
    blocks: list[Block] = []
    names = worst_tensors(inp)
    for i, name in enumerate(names, 1):
        e, t = by_name[name], docs[name]
        sp = (t["metrics"].get("spectral") or {})
        codes = ", ".join(f"{f['code']} ({f['severity']})" for f in t.get("findings") or [])
        shape = "×".join(str(s) for s in t["shape"])
        label = name if not t.get("hf_name") or t["hf_name"] == name else \
            f"{name} ({t['hf_name']})"
        blocks.append(Sub(f"{i}. {label}"))
        where = "" if t.get("block") is None else f", block {t['block']}"
        blocks.append(Para(f"{t.get('kind')}{where}, {shape} {t['dtype']};"
                           f" α = {fmt(sp.get('alpha'))}, xmin = {fmt(sp.get('xmin'))}, "
                           f"condition number = {fmt(sp.get('condition_number'))}, stable rank "
                           f"= {fmt(sp.get('stable_rank'))}; findings: {codes or 'none'}"))
        stem = f"{i:02d}"
        blocks.append(Fig(f"spectrum-{stem}", f"{name}: singular values, ESD with the "
                          "power-law fit (from xmin), and the CCDF of the eigenvalues",
                          partial(spectrum_figure, spectral_data=e.result.data["spectral"],
                                  spectral_metrics=sp, title=name)))
        hist = (t["metrics"].get("stats") or {}).get("histogram") or \
            e.result.data.get("stats", {}).get("histogram")
        if hist:
            blocks.append(Fig(f"histogram-{stem}", f"{name}: value histogram (64 bins, "
                              "log count)", partial(histogram_figure, histogram=hist,
                                                    title=name)))
    if not blocks:
        blocks.append(Para("No matrix has a spectrum (spectral not computed)."))
    title = f"The {len(names)} worst tensors" if names else "Worst tensors"
    return Section("worst", title, blocks)


def embedding_section(inp: ReportInput) -> Section | None:
    blocks: list[Block] = []
    docs = {t["name"]: t for t in inp.scan_doc["tensors"]}
    for i, e in enumerate(inp.scan.entries):
        m = (docs.get(e.ref.name, {}).get("metrics") or {}).get("embedding")
        if not m:
            continue
        scores = e.result.data.get("embedding", {}).get("kmeans_scores") or {}
        blocks.append(Sub(e.ref.name))
        if m.get("kmeans_k") is None:
            blocks.append(Para(f"{fmt(m.get('low_norm_rows'))} low-norm rows; no k-means "
                               f"({fmt(m.get('kmeans_rows'))} rows: too few or all alike to "
                               f"cluster); mean cosine to the centroid "
                               f"{fmt(m.get('mean_cosine_to_centroid'))}"))
            continue
        blocks.append(Para(f"{fmt(m.get('low_norm_rows'))} low-norm rows; k-means on "
                           f"{fmt(m.get('kmeans_rows'))} rows chose k = {fmt(m.get('kmeans_k'))}"
                           f" (Calinski–Harabasz {fmt(m.get('kmeans_ch'))}); mean cosine to "
                           f"the centroid {fmt(m.get('mean_cosine_to_centroid'))}"))
        blocks.append(Fig(f"kmeans-{i:03d}", f"{e.ref.name}: k-means score against k",
                          partial(kmeans_figure, scores=scores, chosen=m.get("kmeans_k"),
                                  title=e.ref.name)))
    return Section("embeddings", "Embeddings", blocks) if blocks else None


def quant_section(doc: Mapping[str, Any]) -> Section:
    rows = []
    for row in doc.get("summary") or []:
        a, af = row["alpha"], row["alpha_fixed_xmin"]
        label = "none" if row["bits"] is None else str(row["bits"])
        rows.append([Cell(row.get("granularity") or "–"), Cell(row.get("scheme") or "–"),
                     Cell(label, row["bits"]), num(row["sqnr_mean"]), num(row["sqnr_min"]),
                     num(af["mean"]), num(af["change_pct"]), num(a["mean"]),
                     num(a["change_pct"]), num(af["in_2_6"]), num(af["below_2"]),
                     num(af["no_fit"])])
    table = Table("quant-summary", "Per setting: SQNR (dB) over the layers, mean α and its "
                  "change in % (tail above the unquantized xmin; free refit), layers with "
                  "α in [2, 6], below 2, not fitted (fixed xmin)",
                  ["granularity", "scheme", "bits", "SQNR mean", "SQNR min", "α (xmin)",
                   "Δ% (xmin)", "α (free)", "Δ% (free)", "in [2,6]", "< 2", "no fit"], rows,
                  frozenset(range(2, 12)))
    plans = [[Cell(p["granularity"]), Cell(p["scheme"]), num(p["avg_bits_per_weight"]),
              Cell(", ".join(f"{b}-bit: {n}" for b, n in sorted(_count(p["layers"]).items())))]
             for p in doc.get("plan") or []]
    plan = Table("quant-plan", "Mixed-precision plan: per layer the fewest bits with |Δα| ≤ 2% "
                 "(fixed xmin) and SQNR ≥ 30 dB", ["granularity", "scheme", "bits per weight",
                                                   "layers at each width"], plans,
                 frozenset({2}))
    note = f"{len(doc.get('layers') or [])} matrices, {doc.get('elapsed_s') or 0:.2f} s on " \
           f"{doc.get('device')}" + (" (GGUF: on the dequantized weights)"
                                     if doc.get("dequantized") else "")
    fig = Fig("quant", "Against bits: SQNR (solid: mean over the layers, dashed: the worst "
              "layer; dotted: 26 dB) and the change of mean α (solid: tail above the unquantized "
              "xmin, dashed: free refit)", partial(quant_figure, quant_doc=doc))
    return Section("quantization", "Quantization study", [Para(note), table, fig, plan])


def _count(layers: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for layer in layers:
        out[layer["bits"]] = out.get(layer["bits"], 0) + 1
    return out


def diff_section(report: DiffReport, doc: Mapping[str, Any]) -> Section:
    a, b = doc["a"], doc["b"]
    pairs = doc["pairs"]
    blocks: list[Block] = [Para(
        f"A: {a['path']} ({a['format']}, {a['n_tensors']} tensors); B: {b['path']} "
        f"({b['format']}, {b['n_tensors']} tensors). {len(pairs)} pairs matched, "
        f"{len(doc['only_in_a'])} only in A, {len(doc['only_in_b'])} only in B, "
        f"{len(doc['shape_mismatch'])} shape mismatches; {doc['elapsed_s']:.2f} s on "
        f"{doc['device']}" + ("" if doc.get("spectral", True) else
                              "; spectral part not computed") + ".")]
    changed = [(i, p) for i, p in enumerate(pairs)
               if ((p["metrics"].get("compare") or {}).get("rel_change") or 0.0) > CHANGED_REL]
    ranked = changed[:DIFF_TOP]
    rows = []
    for n, (_, p) in enumerate(ranked, 1):
        c = p["metrics"]["compare"]
        name = p["hf_name"] or p["name"]
        if p.get("note"):
            name += f" ({p['note']})"
        rows.append([Cell(str(n)), Cell(name), Cell(p.get("kind") or "–"),
                     num(c.get("rel_change")), num(c.get("cosine")),
                     num(c.get("delta_energy_rank_90")), num(c.get("delta_alpha")),
                     Cell(", ".join(f["code"] for f in p.get("findings") or []) or "–")])
    if not rows:
        blocks.append(Para("No pair changed (rel_change ≤ 1e-6 everywhere)."))
    if rows:
        blocks.append(Table("diff-ranking", f"Most changed ({len(rows)} of the {len(changed)} "
                            f"changed pairs, by rel_change; {len(pairs) - len(changed)} pairs "
                            "are unchanged)", ["#", "tensor", "kind", "rel_change", "cosine",
                                               "ΔE rank90", "Δα", "findings"], rows,
                            frozenset({0, 3, 4, 5, 6})))
        blocks.append(Fig("diff-ranking", "rel_change of the most-changed tensors",
                          partial(diff_ranking_figure, ranked=[
                              (p["hf_name"] or p["name"], p["metrics"]["compare"]["rel_change"])
                              for _, p in ranked])))
    for i, p in ranked[:DIFF_OVERLAYS]:
        data = report.pairs[i].result.data.get("compare") or {}
        name = p["hf_name"] or p["name"]
        blocks.append(Sub(name))
        blocks.append(Fig(f"diff-overlay-{i + 1:02d}", f"{name}: A and B overlaid",
                          partial(diff_overlay_figure, compare_data=data, title=name)))
    kinds = [[Cell(str(r["kind"])), Cell(f"{r['n_changed']}/{r['n']}"),
              num(r["mean_rel_change"]), num(r["max_rel_change"]),
              num(r["median_delta_energy_rank_90"]), Cell(r["most_changed"] or "–")]
             for r in doc["summary"]["by_kind"]]
    if kinds:
        blocks.append(Table("diff-kinds", "Per kind (most moved first)",
                            ["kind", "changed", "mean rel", "max rel", "ΔE rank90",
                             "most changed"], kinds, frozenset({1, 2, 3, 4})))
    for title, names in (("Only in A", doc["only_in_a"]), ("Only in B", doc["only_in_b"])):
        if names:
            blocks.append(Para(f"{title} ({len(names)}): " + ", ".join(names[:50])
                               + (" …" if len(names) > 50 else "")))
    return Section("diff", "Diff", blocks)


def build_sections(inp: ReportInput) -> list[Section]:
    """Every section of the report, in reading order."""
    sections = [summary_section(inp), issues_section(inp), kinds_section(inp),
                depth_section(inp), worst_section(inp)]
    emb = embedding_section(inp)
    if emb is not None:
        sections.append(emb)
    if inp.quant_doc is not None:
        sections.append(quant_section(inp.quant_doc))
    if inp.diff is not None and inp.diff_doc is not None:
        sections.append(diff_section(inp.diff, inp.diff_doc))
    sections += inp.extra_sections
    return sections


_HF_CACHE_REPO = re.compile(r"models--([^/\\]+)--([^/\\]+)")
_GENERIC = frozenset({"model", "models", "weights", "checkpoint", "snapshots", "main"})


def short_name(path: str) -> str:
    """What a reader calls a checkpoint: `org/name` inside the HF cache, else the file or
    folder name, with its parent when the name alone says nothing (`model`, a commit hash)."""
    from pathlib import PurePath

    m = _HF_CACHE_REPO.search(path)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    p = PurePath(path)
    name = p.name or path
    if (name.lower() in _GENERIC or re.fullmatch(r"[0-9a-f]{40}", name)) and p.parent.name:
        return f"{p.parent.name}/{name}"
    return name


def title_of(inp: ReportInput) -> str:
    name = short_name(str(inp.scan_doc["checkpoint"].get("path") or "checkpoint"))
    if inp.diff_doc is not None:
        name += " vs " + short_name(str(inp.diff_doc["b"]["path"]))
    return f"wstui report: {name}"
