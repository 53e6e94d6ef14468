"""The report as Markdown (for a README or a pull request), figures as PNG files beside it.

File-derived text is escaped twice over: HTML entities (Markdown renders inline HTML) and
backslashes before Markdown's own punctuation, so a tensor name shows as written and never
becomes a link, an image, emphasis or a table cell break.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from wstui.figures.output import save
from wstui.htmlreport.model import Block, Cell, Fig, Para, ReportInput, Section, Sub, Table

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()#+!|~])")


def md_text(s: str) -> str:
    """Plain text safe in a Markdown paragraph or table cell."""
    one_line = " ".join(str(s).split())
    return _MD_SPECIAL.sub(r"\\\1", escape(one_line, quote=False))


def _cell(c: Cell) -> str:
    return md_text(c.text)


def table_md(t: Table) -> str:
    head = "| " + " | ".join(md_text(c) or " " for c in t.columns) + " |"
    rule = "|" + "|".join("---:" if i in t.numeric else "---" for i in range(len(t.columns))) + "|"
    rows = ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join([f"*{md_text(t.caption)}*", "", head, rule, *rows])


def render(inp: ReportInput, sections: list[Section], title: str, path: Path) -> str:
    """The Markdown text; figures are written into `<stem>_figures/` beside `path`."""
    fig_dir = path.with_name(f"{path.stem}_figures")
    out = [f"# {md_text(title)}", "", md_text(str(inp.scan_doc["checkpoint"].get("path"))), ""]
    for s in sections:
        out += [f"## {md_text(s.title)}", ""]
        for b in s.blocks:
            out += [block_md(b, fig_dir, path.parent), ""]
    out.append("Numbers are those of `wstui scan --json`; written by wstui"
               + (f" (`{inp.command.replace('`', '')}`)" if inp.command else "") + ".")
    return "\n".join(out) + "\n"


def block_md(b: Block, fig_dir: Path, base: Path) -> str:
    if isinstance(b, Table):
        return table_md(b)
    if isinstance(b, Sub):
        return f"### {md_text(b.text)}"
    if isinstance(b, Para):
        return md_text(b.text)
    if isinstance(b, Fig):
        fig_dir.mkdir(exist_ok=True)
        (png,) = save(b.builder, fig_dir / b.key, ["png"], salt=b.key)
        rel = png.relative_to(base).as_posix()
        return f"![{md_text(b.caption)}]({rel})\n\n*{md_text(b.caption)}*"
    raise TypeError(f"unknown report block {type(b).__name__}")
