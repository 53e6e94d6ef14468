"""Write a report: the HTML file, the Markdown file with its figures, the figure files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wstui.htmlreport.model import ReportInput, Section, build_sections, title_of


def _save(path: Path, text: str) -> Path:
    """Through the one output writer: atomic for a regular file, so a reader never sees half
    a report; a FIFO or device written in place; `-` is stdout."""
    from wstui import outfile

    return outfile.write_text(path, text)


def write_html(inp: ReportInput, path: str | Path,
               sections: Sequence[Section] | None = None) -> Path:
    from wstui.htmlreport import html

    secs = list(sections) if sections is not None else build_sections(inp)
    return _save(Path(path), html.render(inp, secs, title_of(inp)))


def write_markdown(inp: ReportInput, path: str | Path,
                   sections: Sequence[Section] | None = None) -> Path:
    from wstui.htmlreport import markdown

    path = Path(path)
    secs = list(sections) if sections is not None else build_sections(inp)
    return _save(path, markdown.render(inp, secs, title_of(inp), path))


def write_figures(inp: ReportInput, folder: str | Path, formats: Sequence[str],
                  sections: Sequence[Section] | None = None) -> list[Path]:
    """Every figure of the report as `<section>-<key>.<fmt>` in `folder` (created)."""
    from wstui.figures.output import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    secs = list(sections) if sections is not None else build_sections(inp)
    out: list[Path] = []
    for s in secs:
        for f in s.figures:
            stem = f.key if f.key.startswith(s.id) else f"{s.id}-{f.key}"
            out += save(f.builder, folder / stem, formats, salt=f.key)
    return out
