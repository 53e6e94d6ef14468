"""One HTML file that works offline and alone: styles and the one script inline, figures as
inline SVG, no font, no URL. Light and dark follow the reader's `prefers-color-scheme`.

Every string from a file (tensor names, paths, messages) goes through `html.escape`, in text
and in attributes alike; figure text was escaped by matplotlib's SVG writer. A Content
Security Policy in the page itself forbids every request and every script but ours (by its
hash), so even a missed escape could neither run code nor call out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import datetime, timezone
from html import escape

from wstui.figures.output import inline_svg
from wstui.htmlreport.model import Block, Cell, Fig, Para, ReportInput, Section, Sub, Table

CSS = """
:root{color-scheme:light dark;--bg:#ffffff;--fg:#1d1f21;--muted:#5c6166;--line:#d8dadd;
--grid:#e4e6e8;--head:#f3f4f5;--crit:#b3261e;--warn:#8a5a00;--info:#0b6e99;
--c0:#0072B2;--c1:#E69F00;--c2:#009E73;--c3:#D55E00;--c4:#CC79A7;--c5:#56B4E9;--c6:#555555;
--c7:#999999}
@media (prefers-color-scheme:dark){:root{--bg:#15181b;--fg:#e3e5e8;--muted:#9aa1a8;
--line:#394047;--grid:#2c3238;--head:#1e2327;--crit:#ff8a80;--warn:#f0c36a;--info:#7fc8ef;
--c0:#56B4E9;--c1:#F0B232;--c2:#3CC4A0;--c3:#FF8A4C;--c4:#E7A3C8;--c5:#F0E442;--c6:#b8bec4;
--c7:#7d858c}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header,main,footer{max-width:1100px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:1.5em;margin:.2em 0;overflow-wrap:anywhere}
h2{font-size:1.2em;margin:1.8em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
h3{font-size:1em;margin:1.4em 0 .3em;font-family:ui-monospace,Menlo,Consolas,monospace;
overflow-wrap:anywhere}
p{margin:.4em 0}.meta,figcaption,caption,footer{color:var(--muted);font-size:.88em}
nav a{margin-right:1em;color:var(--info);text-decoration:none}nav a:hover{text-decoration:underline}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.88em;width:100%}
caption{text-align:left;padding:.2em 0}
th,td{padding:.25em .6em;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--head);position:sticky;top:0;cursor:pointer;white-space:nowrap}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:nowrap}
td.key{font-weight:600;white-space:nowrap}
#summary-table th{display:none}
.sev-critical{color:var(--crit);font-weight:600}.sev-warn{color:var(--warn);font-weight:600}
.sev-info{color:var(--info)}
figure{margin:.6em 0 1.2em}figure svg{max-width:100%;height:auto;display:block}
footer{padding:2em 20px 3em}
@media print{th{position:static}nav{display:none}}
"""

#: sorts a table by the clicked column, numerically by the exact value when there is one
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(t){
  t.querySelectorAll("th").forEach(function(th,col){
    th.addEventListener("click",function(){
      var body=t.tBodies[0],rows=Array.from(body.rows);
      var asc=th.getAttribute("aria-sort")!=="ascending";
      t.querySelectorAll("th").forEach(function(h){h.removeAttribute("aria-sort");});
      th.setAttribute("aria-sort",asc?"ascending":"descending");
      function key(r){var c=r.cells[col],v=c.getAttribute("title");
        var n=parseFloat(v!==null?v:c.textContent.replace(/,/g,""));
        return isNaN(n)?c.textContent:n;}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        var d=(typeof x==="number"&&typeof y==="number")?x-y:String(x).localeCompare(String(y));
        return asc?d:-d;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""

NAME_COLUMNS = frozenset({"tensor", "most changed"})


def csp() -> str:
    """No request of any kind; inline styles; only this page's own script (by hash)."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode()
    return (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
            f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'")


def _cell(c: Cell, numeric: bool, name: bool) -> str:
    classes = [x for x in (c.cls, "num" if numeric else None, "name" if name else None) if x]
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    if c.has_exact and c.exact is not None and not isinstance(c.exact, str):
        # the documents are strict JSON already; a stray NaN still gets a title, not a crash
        exact = json.dumps(c.exact) if _finite(c.exact) else str(c.exact)
        attrs += f' title="{escape(exact, quote=True)}"'
    return f"<td{attrs}>{escape(c.text)}</td>"


def _finite(v: object) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def table_html(t: Table) -> str:
    num = ' class="num"'
    head = "".join(f'<th scope="col"{num if i in t.numeric else ""}>{escape(c)}</th>'
                   for i, c in enumerate(t.columns))
    names = {i for i, c in enumerate(t.columns) if c in NAME_COLUMNS}
    body = "\n".join("<tr>" + "".join(_cell(c, i in t.numeric, i in names)
                                      for i, c in enumerate(row)) + "</tr>" for row in t.rows)
    return (f'<div class="scroll"><table id="{escape(t.id)}" class="sortable">'
            f"<caption>{escape(t.caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>\n{body}\n</tbody></table></div>")


def figure_html(f: Fig) -> str:
    svg = inline_svg(f.builder, salt=f.key, label=f.caption)
    return (f'<figure id="fig-{escape(f.key)}">{svg}'
            f"<figcaption>{escape(f.caption)}</figcaption></figure>")


def block_html(b: Block) -> str:
    if isinstance(b, Table):
        return table_html(b)
    if isinstance(b, Fig):
        return figure_html(b)
    if isinstance(b, Sub):
        return f"<h3>{escape(b.text)}</h3>"
    if isinstance(b, Para):
        return f"<p>{escape(b.text)}</p>"
    raise TypeError(f"unknown report block {type(b).__name__}")


def section_html(s: Section) -> str:
    inner = "\n".join(block_html(b) for b in s.blocks)
    return f'<section id="{escape(s.id)}">\n<h2>{escape(s.title)}</h2>\n{inner}\n</section>'


def render(inp: ReportInput, sections: list[Section], title: str,
           now: datetime | None = None) -> str:
    """The whole page as one string."""
    from wstui._version import __version__

    now = now or datetime.now(timezone.utc)
    nav = " ".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(section_html(s) for s in sections)
    command = f" by <code>{escape(inp.command)}</code>" if inp.command else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{escape(csp())}">
<meta name="color-scheme" content="light dark">
<meta name="generator" content="wstui {escape(__version__)}">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>{escape(title)}</h1>
<p class="meta">{escape(str(inp.scan_doc["checkpoint"].get("path")))}</p>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
<footer>Written {escape(now.strftime("%Y-%m-%d %H:%M UTC"))} by wstui {escape(__version__)}
{command}. Numbers are those of <code>wstui scan --json</code> (hover a value for its exact
JSON number); see the metrics guide in wstui's docs/metrics.md.</footer>
<script>{SCRIPT}</script>
</body>
</html>
"""
