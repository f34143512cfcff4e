"""Tables for a person: fitted to the terminal, never cut.

Every table `farmctl` prints (results, compare, recommend) goes through
`render_table`:

- columns of the setup (model, GPU, engine, tokens, status…) whose value is
  the same in every shown row (two rows or more) leave the table for one
  header line above it ("model: llama-3.2-1b · engine: sim"); measured
  figures stay in the table;
- on a terminal narrower than the table, headers wrap first, then whole
  columns are left out, the least important first (`Column.rank`), and one
  line says which and how to get them back; a number is never cut, and no
  cell ever ends in "…";
- a setup column that tells rows apart (without it two rows would read the
  same: `sim:l4 server-closed c=64` twice, their token bins gone) is never left
  out for width: the others go first, and where only such columns are left the
  table is wider than the terminal rather than ambiguous;
- with no width (a pipe, a file: `terminal_width()` is None there) the table
  is as wide as it needs.

`choose_columns` turns `--columns a,b,c` / `--wide` into the columns to show,
refusing unknown names with a did-you-mean and the list of known ones.
"""

from __future__ import annotations

import difflib
import io
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from farm.errors import InvalidInput

# Between two columns: one space of padding and the (blank) divider.
GAP = 2


@dataclass(frozen=True)
class Column:
    """One column of a table: its `--columns` name, header, how an item becomes its
    cell, whether it holds numbers (right-aligned, never wrapped), its rank (lower:
    kept longer on a narrow terminal), its label on the header line, whether
    its cells may wrap (free text only: numbers and names never do) and whether
    it goes to the header line when constant (not a measured figure)."""

    name: str
    header: str
    cell: Callable[[Any], str]
    numeric: bool = True
    rank: int = 100
    label: str | None = None
    description: str = ""
    wrap: bool = False          # long free text (notes) may wrap at its spaces
    hoist: bool = True          # False: a measured figure stays in the table even if constant
    # Part of what a row's configuration is (GPU, scenario, load, token bins…): never
    # left out where it tells rows apart. False for a setup column that is not
    # (repetition, status, verdict, counts of repetitions).
    identifies: bool = True

    @property
    def line_label(self) -> str:
        """What the header line calls the column when its value is constant."""
        return self.label or self.header


def terminal_width() -> int | None:
    """The terminal's width in columns when stdout is one (COLUMNS overrides it);
    None for a pipe or a file, where a table is as wide as it needs."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def choose_columns(catalogue: Sequence[Column], defaults: Sequence[str],
                   names: str | None = None, wide: bool = False) -> list[Column]:
    """The columns to show: `names` (comma-separated, in that order; the first
    named is the last left out on a narrow terminal), every column of
    `catalogue` with `wide`, else `defaults`. An unknown name is refused with
    the closest known ones and the list of all (exit 2)."""
    by_name = {c.name: c for c in catalogue}
    if names is not None and wide:
        raise InvalidInput("--columns and --wide: give one of them")
    if wide:
        return list(catalogue)
    if names is None:
        return [by_name[n] for n in defaults if n in by_name]
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise InvalidInput("--columns names no column; available: " + ", ".join(by_name))
    chosen: list[Column] = []
    for position, name in enumerate(wanted):
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.5)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise InvalidInput(f"unknown column {name!r}{hint}; available: "
                               + ", ".join(by_name))
        column = by_name[name]
        if column not in chosen:
            chosen.append(replace(column, rank=position))
    return chosen


@dataclass
class Fitted:
    """A table laid out for a width: the columns shown with their cells and
    widths (None: natural), the constant ones, and those left out."""

    columns: list[Column]
    cells: list[list[str]]
    widths: list[int] | None
    constant: list[tuple[Column, str]]
    dropped: list[Column]


def _words(text: str) -> list[str]:
    return text.split() or [""]


def _natural(header: str, cells: Sequence[str]) -> int:
    return max([len(line) for line in header.splitlines()] + [len(c) for c in cells])


def _minimum(column: Column, cells: Sequence[str]) -> int:
    # A header wraps at its spaces; a cell does not (a wrapped row reads as two),
    # unless the column is free text.
    head = max(len(w) for w in _words(column.header))
    if column.wrap:
        body = max((len(w) for c in cells for w in _words(c)), default=0)
    else:
        body = max((len(c) for c in cells), default=0)
    return max(head, body, 1)


def _total(widths: Sequence[int]) -> int:
    return sum(widths) + GAP * (len(widths) - 1)


def fit(columns: Sequence[Column], items: Sequence[Any], width: int | None,
        hoist: bool = True) -> Fitted:
    """Lay `items` out in `columns` for `width` (None: unlimited)."""
    shown = list(columns)
    cells = {c.name: [c.cell(item) for item in items] for c in shown}
    constant: list[tuple[Column, str]] = []
    if hoist and len(items) > 1:
        for c in list(shown):
            if c.hoist and len(set(cells[c.name])) == 1 and len(shown) > 1:
                constant.append((c, cells[c.name][0]))
                shown.remove(c)
    dropped: list[Column] = []
    widths: list[int] | None = None
    while width is not None:
        natural = [_natural(c.header, cells[c.name]) for c in shown]
        if _total(natural) <= width:
            break
        least = [_minimum(c, cells[c.name]) for c in shown]
        if _total(least) <= width or len(shown) == 1:
            # Headers and text wrap; the room left goes to the most important first.
            widths = list(least)
            room = width - _total(least)
            for i in sorted(range(len(shown)), key=lambda i: shown[i].rank):
                give = max(0, min(room, natural[i] - widths[i]))
                widths[i] += give
                room -= give
            break
        victim = _victim(shown, cells, len(items))
        if victim is None:      # every column left tells rows apart: wider, not ambiguous
            widths = least
            break
        shown.remove(victim)
        dropped.append(victim)
    return Fitted(shown, [cells[c.name] for c in shown], widths, constant, dropped)


def _identities(columns: Sequence[Column], cells: dict[str, list[str]], n: int) -> int:
    """How many rows the configuration columns (setup columns that `identify`) tell apart."""
    setup = [cells[c.name] for c in columns if c.hoist and c.identifies]
    return len({tuple(column[r] for column in setup) for r in range(n)})


def _victim(shown: Sequence[Column], cells: dict[str, list[str]], n: int) -> Column | None:
    """The least important column whose loss leaves every row as distinct as before;
    None when each column left is what tells some rows apart."""
    before = _identities(shown, cells, n)
    for column in sorted(shown, key=lambda c: c.rank, reverse=True):
        rest = [c for c in shown if c is not column]
        if rest and _identities(rest, cells, n) == before:
            return column
    return None


def _header_line(constant: Sequence[tuple[Column, str]], width: int | None) -> list[str]:
    """'model: m · engine: sim', wrapped at the separators to `width`."""
    parts = [f"{c.line_label}: {value}" for c, value in constant if value]
    lines: list[str] = []
    for part in parts:
        if lines and (width is None or len(lines[-1]) + 3 + len(part) <= width):
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return lines


def render_table(columns: Sequence[Column], items: Sequence[Any], width: int | None, *,
                 title: str | None = None, hoist: bool = True,
                 hint: str = "a pipe shows them") -> str:
    """The table as text: the title, the header line of constant columns, the
    table, and a line naming the columns left out to fit `width`."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    laid = fit(columns, items, width, hoist)
    out = ([title] if title else []) + _header_line(laid.constant, width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for i, column in enumerate(laid.columns):
        table.add_column(column.header, justify="right" if column.numeric else "left",
                         overflow="fold",
                         width=None if laid.widths is None else laid.widths[i])
    for r in range(len(items)):
        table.add_row(*[cells[r] for cells in laid.cells])
    natural = _total([_natural(c.header, cells) for c, cells in zip(laid.columns, laid.cells)])
    buffer = io.StringIO()
    # Never narrower than the table: rich would cut it. No colour: the text goes
    # to files and pipes as well as terminals.
    Console(file=buffer, width=max(natural, width or 0, 20), highlight=False,
            color_system=None).print(table)
    out.append(buffer.getvalue().rstrip("\n"))
    if laid.dropped:
        names = ", ".join(c.header for c in laid.dropped)
        note = f"left out to fit {width} columns: {names} ({hint})"
        out.extend(textwrap.wrap(note, width, break_long_words=False, break_on_hyphens=False)
                   if width else [note])
    return "\n".join(line.rstrip() for line in "\n".join(out).splitlines()) + "\n"
