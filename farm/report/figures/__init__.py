"""The report's figure registry: one registered function per kind of figure.

A kind of figure is one module in this package with one function decorated
by `@figure(...)`: its name (also its section's anchor and the `section` of
its `FigureSpec`s), the heading and introduction of its section on the page,
the data it needs from the store, and the function that draws one of its
figures. The decorated function turns the sweep's data (`FigureInputs`) into
the figures of its section (`Section`). `farm/report/report.py` builds every
registered kind in `order`, `plots.render` draws each figure through its
kind, and `html.py` lays out the sections; none of them names a kind, so a new
figure is a new file here (docs/report.md, "How to add a figure").

Every figure gets the report's labelling for free: "SIMULATED — " before its
title, the watermark, the PNG's Title chunk and a caption with its notes.

Modules are imported on the first call of `kinds()`, never on import of this
package (so `import farm.report.report` stays cheap and import cycles cannot
form). matplotlib is imported only by the draw functions.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# What a kind of figure may read, besides the sweep's run points (always loaded:
# one row per run and load point, no per-request records).
NEEDS = {
    "points": "the sweep's run points (farm.report.points.RunPoint)",
    "results": "a run's stored result (Store.result_for: sensors, idle baselines, windows)",
    "traces": "a run's power trace (Store.trace_for: the timeline samples)",
    "adaptive": "the sweep's adaptive-repetitions decisions (farm.adaptive.sweep_summary)",
}


@dataclass(frozen=True)
class Planned:
    """One figure a kind wants drawn: the title without the SIMULATED prefix."""

    slug: str                    # file name under figures/ (made unique by the report)
    title: str
    data: Any                    # what the kind's draw function reads
    notes: list[str] = field(default_factory=list)   # caption lines


@dataclass(frozen=True)
class Section:
    """What a kind contributes to the page: its figures and notes under its heading."""

    figures: list[Planned] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Reads:
    """The store reads a kind declared in `needs`, cached per run; any other read fails."""

    def __init__(self, store: Any, kind: str, needs: frozenset[str],
                 cache: dict[tuple[str, str], Any]):
        self._store, self._kind, self._needs, self._cache = store, kind, needs, cache

    def _read(self, need: str, run_id: str) -> Any:
        if need not in self._needs:
            raise RuntimeError(f"figure kind {self._kind!r} reads {need} but does not "
                               f"declare it: @figure(..., needs=(..., {need!r}))")
        key = (need, run_id)
        if key not in self._cache:
            if need == "adaptive":
                from farm import adaptive  # farm.adaptive imports farm.report.stats
                self._cache[key] = adaptive.sweep_summary(self._store, run_id, in_turn=True)
            else:
                method = {"results": "result_for", "traces": "trace_for"}[need]
                self._cache[key] = getattr(self._store, method)(run_id)
        return self._cache[key]

    def adaptive_summary(self, sweep: str) -> list[Any]:
        """The sweep's adaptive-repetitions decisions, per configuration
        (farm.adaptive.ConfigurationSummary; empty for a fixed count; needs "adaptive")."""
        row = self._store.find_sweep(sweep)
        return [] if row is None else self._read("adaptive", row.id)

    def result_for(self, run_id: str) -> dict[str, Any] | None:
        """The run's stored result as a dict (needs "results")."""
        return self._read("results", run_id)

    def trace_for(self, run_id: str) -> Any:
        """The run's power trace (needs "traces")."""
        return self._read("traces", run_id)


@dataclass(frozen=True)
class FigureInputs:
    """The sweep's data as every kind of figure receives it."""

    sweep: str
    points: Sequence[Any]        # RunPoint
    simulated: bool
    net: bool                    # plots net of idle (--net) instead of gross
    energies: tuple[str, str]    # (J/request, J/output token) figures of the basis
    runs: Sequence[str]          # --runs as given (ids or prefixes); empty: the default
    reads: Reads

    @property
    def basis(self) -> str:
        """"gross" or "net of idle", for titles."""
        return "net of idle" if self.net else "gross"


Build = Callable[[FigureInputs], Section]
Draw = Callable[[Any], Any]          # FigureSpec → matplotlib Figure


@dataclass(frozen=True)
class FigureKind:
    """A registered kind of figure."""

    name: str
    heading: str
    intro: str
    needs: frozenset[str]
    build: Build
    draw: Draw
    order: int = 100
    html_after: Callable[[Any], str] | None = None   # FigureSpec → HTML under the figure


_KINDS: dict[str, FigureKind] = {}
_loaded = False


def figure(name: str, *, heading: str, intro: str, draw: Draw,
           needs: Sequence[str] = ("points",), order: int = 100,
           html_after: Callable[[Any], str] | None = None) -> Callable[[Build], Build]:
    """Register the decorated function as the builder of the kind of figure `name`.

    `heading`/`intro`: its section on the page; `draw(spec)` returns a
    matplotlib Figure for one `FigureSpec` of this kind (spec.data is what the
    builder planned); `needs`: the store reads it makes through
    `inputs.reads` (see NEEDS); `order`: where its section goes (ascending);
    `html_after(spec)`: optional HTML (e.g. a table) under each of its figures.
    """
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"figure {name!r}: unknown needs {sorted(unknown)}; known: "
                         f"{sorted(NEEDS)}")

    def register(build: Build) -> Build:
        if name in _KINDS and _KINDS[name].build is not build:
            raise ValueError(f"two figure kinds are named {name!r}")
        _KINDS[name] = FigureKind(name, heading, intro, frozenset(needs) | {"points"}, build,
                                  draw, order, html_after)
        return build

    return register


def kinds() -> list[FigureKind]:
    """Every registered kind, in page order (every module of this package imported)."""
    global _loaded
    if not _loaded:
        for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
            importlib.import_module(f"{__name__}.{module}")
        _loaded = True
    return sorted(_KINDS.values(), key=lambda k: (k.order, k.name))


def kind(name: str) -> FigureKind:
    """The registered kind `name`."""
    for k in kinds():
        if k.name == name:
            return k
    raise KeyError(f"no figure kind {name!r}; registered: {[k.name for k in kinds()]}")


__all__ = ["NEEDS", "FigureInputs", "FigureKind", "Planned", "Reads", "Section", "figure",
           "kind", "kinds"]
