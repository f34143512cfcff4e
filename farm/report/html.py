"""The report's one HTML page: self-contained (figures as data: URIs, inline CSS, no
script, no external reference), readable offline and printable.

A simulated report carries the SIMULATED banner at the top (sticky while
scrolling), at the bottom, in the page title and on every figure.

Its figure sections are the registered kinds of figure (farm/report/figures/),
in their order: heading, introduction, notes, then each figure with its
caption (and what the kind puts under it, e.g. the Pareto front tables).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from farm.output import SIM_BANNER
from farm.report.figures import kinds
from farm.report.plots import FigureSpec
from farm.report.table import HEADERS, rows

if TYPE_CHECKING:
    from farm.report.report import ReportData

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 2rem 2rem;
       color: #222; line-height: 1.4; }
h1 { margin-top: 1rem; }
.banner { position: sticky; top: 0; z-index: 10; background: #b00020; color: #fff;
          font-weight: bold; padding: .5rem 1rem; margin: 0 -2rem; text-align: center; }
.meta { color: #555; }
figure { margin: 1.5rem 0; border: 1px solid #ddd; padding: .5rem; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: .9rem; margin-top: .4rem; }
.note { font-size: .9rem; color: #444; }
table { border-collapse: collapse; font-size: .8rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #f2f2f2; position: sticky; top: 0; }
body.sim th { top: 2.2rem; }
td.t, th.t { text-align: left; }
tr.invalid td { background: #fff4e5; }
tr.failed td { background: #fde8e8; }
tr.none td { background: #f3f3f3; color: #666; }
.summary td:first-child { text-align: left; }
"""


def data_uri(png: bytes) -> str:
    """The PNG as a data: URI, to embed in the page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_page(data: ReportData, pngs: dict[str, bytes]) -> str:
    """The whole report page as HTML, with `pngs` (by figure slug) embedded."""
    title = f"{'SIMULATED — ' if data.simulated else ''}farm report: {data.sweep}"
    banner = f'<div class="banner">{escape(SIM_BANNER)}</div>' if data.simulated else ""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{escape(title)}</title>", f"<style>{CSS}</style>", "</head>",
           '<body class="sim">' if data.simulated else "<body>",
           banner, f"<h1>{escape(title)}</h1>",
           f'<p class="meta">Sweep <b>{escape(data.sweep)}</b>, generated '
           f"{data.generated_at.strftime('%Y-%m-%d %H:%M UTC')} by <code>farmctl report"
           f"</code>. Energy basis of the plots: <b>{'net of idle' if data.net else 'gross'}"
           "</b>.</p>", _toc(data)]
    out += ['<h2 id="summary">Summary</h2>', _summary(data.summary)]
    out += ['<h2 id="measurement">How energy was measured</h2>']
    out += [f"<p>{escape(text)}</p>" for text in data.measurement]
    for kind in kinds():
        specs = [s for s in data.figures if s.section == kind.name]
        out += [f'<h2 id="{kind.name}">{escape(kind.heading)}</h2>',
                f"<p>{escape(kind.intro)}</p>"]
        out += [f'<p class="note">{escape(n)}</p>'
                for n in data.section_notes.get(kind.name, [])]
        for spec in specs:
            out.append(_figure(spec, pngs.get(spec.slug, b"")))
            if kind.html_after is not None:
                out.append(kind.html_after(spec))
    out += ['<h2 id="points">Every run point</h2>',
            "<p>One row per run and load point (a run without a result: one row). "
            "Figures are per load point over its steady-state window; \"—\" means not "
            "measured (null), never 0. Valid rows are plain; invalid rows (orange) name the "
            "checks they failed; failed runs (red) give their error.</p>",
            _points_table(data), banner, "</body>", "</html>"]
    return "\n".join(part for part in out if part)


def _toc(data: ReportData) -> str:
    items = [("summary", "Summary"), ("measurement", "How energy was measured"),
             *((k.name, k.heading) for k in kinds()), ("points", "Every run point")]
    return "<p>" + " · ".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in items) + "</p>"


def _summary(items: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{escape(k)}</td><td class=\"t\">{escape(v)}</td></tr>"
                   for k, v in items)
    return f'<table class="summary">{body}</table>'


def _figure(spec: FigureSpec, png: bytes) -> str:
    notes = "".join(f'<br><span class="note">{escape(n)}</span>' for n in spec.notes)
    return (f'<figure id="{escape(spec.slug)}"><img src="{data_uri(png)}" '
            f'alt="{escape(spec.title)}"><figcaption><b>{escape(spec.title)}</b> '
            f'(<a href="figures/{escape(spec.slug)}.png">PNG</a>){notes}</figcaption></figure>')


def _points_table(data: ReportData) -> str:
    text_columns = {0, 1, 2, 3, 4, 7, 9, len(HEADERS) - 2, len(HEADERS) - 1}
    head = "".join(f'<th{" class=t" if i in text_columns else ""}>{escape(h)}</th>'
                   for i, h in enumerate(HEADERS))
    body = []
    for cells, verdict in rows(data.points):
        tds = "".join(f'<td{" class=t" if i in text_columns else ""}>{escape(c)}</td>'
                      for i, c in enumerate(cells))
        cls = "" if verdict.kind == "valid" else f' class="{verdict.kind}"'
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
