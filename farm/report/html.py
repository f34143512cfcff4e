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
from farm.report.table import table

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
table.points { width: 100%; font-size: .72rem; }
table.points thead { position: sticky; top: 0; z-index: 5; }
body.sim table.points thead { top: 2.2rem; }
table.points th, table.points td { padding: 2px 2px; }
table.points th { position: static; font-weight: 600; }
table.points tr.units th { font-weight: normal; color: #555; }
table.points td.n { white-space: nowrap; }
table.points td.w { overflow-wrap: anywhere; }
table.points td.engine { min-width: 7em; }
table.points td.id { font-family: ui-monospace, monospace; word-break: break-all; text-align: left;
                     min-width: 8.5ch; }
tr.changed td { background: #fff4e5; font-weight: bold; }
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
           # The finding first, in one sentence with its number and CI.
           f'<p class="finding"><b>{escape(data.finding)}</b></p>' if data.finding else "",
           f'<p class="meta">Sweep <b>{escape(data.sweep)}</b>, generated '
           f"{data.generated_at.strftime('%Y-%m-%d %H:%M UTC')} by <code>farmctl report"
           f"</code>. Energy basis of the plots: <b>{'net of idle' if data.net else 'gross'}"
           "</b>.</p>",
           (f'<p class="meta">Imported results (re-checked on import, not measured here): '
            f'{escape("; ".join(data.imported_from))}.</p>' if data.imported_from else ""),
           _toc(data)]
    out += ['<h2 id="summary">Summary</h2>', _summary(data.summary)]
    out += ['<h2 id="measurement">How energy was measured</h2>']
    out += [f"<p>{escape(text)}</p>" for text in data.measurement]
    out += _bounds(data)
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


def _bounds(data: ReportData) -> list[str]:
    """The validity bounds and measurement settings the runs used, next to the defaults."""
    from farm.report.bounds import overrides_note

    if not data.settings:
        return []
    out = ['<h3 id="validity-bounds">Validity bounds and measurement settings used</h3>',
           f"<p>{escape(overrides_note(data.settings))}</p>"]
    body = "".join(
        f'<tr{" class=changed" if s.overridden else ""}><td class="t"><code>{escape(s.name)}'
        f'</code></td><td class="t">{escape(s.meaning)}</td><td class="t">{escape(s.value)}'
        f'</td><td class="t">{escape(s.default)}</td></tr>' for s in data.settings)
    out.append('<table class="bounds"><tr><th class="t">setting</th>'
               '<th class="t">what it sets</th><th class="t">this sweep</th>'
               f'<th class="t">default</th></tr>{body}</table>')
    if data.bounds:
        out.append("<p>The bounds the validity checks recorded with their verdicts (one run "
                   "per GPU):</p>")
        body = "".join(f'<tr><td class="t">{escape(name)}</td><td class="t">{escape(bound)}'
                       f'</td><td class="t">{escape(", ".join(gpus))}</td></tr>'
                       for name, bound, gpus in data.bounds)
        out.append('<table class="bounds"><tr><th class="t">check</th>'
                   f'<th class="t">bound</th><th class="t">GPUs</th></tr>{body}</table>')
    return out


# Where a long header word may break (a soft hyphen): the narrow columns it heads stay
# narrow, so the table keeps to a 1400 px page with the optional columns shown too.
_HEADER_BREAKS = {"throughput": "through\u00adput", "goodput": "good\u00adput",
                  "decoding": "de\u00adcoding"}


def _header(text: str) -> str:
    """A header as HTML, its long words breakable (_HEADER_BREAKS)."""
    return " ".join(_HEADER_BREAKS.get(word, word) for word in escape(text).split(" "))


def _points_table(data: ReportData) -> str:
    """Every run point: header names in one row (they wrap), units in the next, so the
    table fits the page's width instead of scrolling sideways."""
    columns, table_rows = table(data.points)
    last = len(columns) - 1

    def cls(i: int) -> str:
        # Long words (engine arguments, errors, run ids) may break anywhere; the other
        # text columns wrap at spaces and hyphens only.
        if i == last:
            return "id"
        if columns[i].header == "engine":
            return "t w engine"
        if columns[i].header == "verdict":
            return "t w"
        if columns[i].wraps:
            return "r"           # a number that may wrap: right-aligned, as th/td are
        return "t" if columns[i].text else "n"

    names = "".join(f'<th{" class=t" if c.text else ""}>{_header(c.header)}</th>'
                    for c in columns)
    units = "".join(f'<th{" class=t" if c.text else ""}>{escape(c.unit)}</th>'
                    for c in columns)
    body = []
    for cells, verdict in table_rows:
        tds = "".join(f'<td class="{cls(i)}">{escape(c)}</td>' for i, c in enumerate(cells))
        row_cls = "" if verdict.kind == "valid" else f' class="{verdict.kind}"'
        body.append(f"<tr{row_cls}>{tds}</tr>")
    return (f'<table class="points"><thead><tr>{names}</tr><tr class="units">{units}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table>")
