"""The energy-source seam: meters read beside the GPUs' counters, window by window.

The GPUs' own counters make a window's `energy_j` (`workers.power.Meter`). An
`EnergySource` is anything else with a cumulative energy reading — the host's
RAPL counters, a PDU outlet or a Redfish chassis read over HTTP — that the
Meter reads at the same window edges, so every window also carries each
source's energy over the same interval (`EnergyWindow.sources[name]`). A
source's energy is never added to `energy_j`: it measures what it is wired to
(a whole host, an outlet), not the run's GPUs.

Where a source cannot give a window's energy — a read failed at an edge, its
counter went backwards, its readings were interrupted inside the window, the
window is shorter than twice its update period — the figure is None with the
reason, never 0, and the window is kept like any other.

A source kind is one module of this package defining an `EnergySource`
subclass registered with `@register_source_kind`; it is built from a spec
string `KIND` or `KIND:key=value;key=value` (`parse_source_specs`). A worker
is told which sources its host has by `FARM_ENERGY_SOURCES` (specs separated by
whitespace) or `--energy-source SPEC` (`tasks.worker_main`); secrets are named
by environment variable in a spec, never written in it.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from farm_contract.records import EnergySourceInfo
from farm_contract.settings import setting
from workers.gpu.base import GpuDevice

log = logging.getLogger(__name__)

S = TypeVar("S", bound="type[EnergySource]")


class SourceSpecError(ValueError):
    """An energy-source spec the worker cannot use (unknown kind, missing option)."""


@dataclass(frozen=True)
class SourceReading:
    """One read of a source's cumulative energy.

    Attributes:
        energy_j: energy since the source's own origin (Units: J); None when the
            read failed.
        reason: why `energy_j` is None, in words.
        epoch: changes whenever the source's readings were interrupted (a missed
            poll of a power meter): two reads of different epochs do not bound
            the energy between them.
    """

    energy_j: float | None
    reason: str | None = None
    epoch: int = 0


class EnergySource(ABC):
    """A cumulative energy reading beside the GPUs' counters.

    Attributes:
        kind: the spec's KIND ("rapl", "http").
        name: key of its energy in `EnergyWindow.sources` (unique per worker).
        sensor: what is read, stored with the run ("rapl.package+dram",
            "http.energy_counter").
        scope: what the source measures ("host", "outlet").
        update_s: how often the reading moves (Units: s); a window shorter than
            twice this is null.
        wraps_at_j: where the cumulative reading wraps to 0 (Units: J), or None.
    """

    kind: ClassVar[str]
    name: str
    sensor: str
    scope: str = "host"
    update_s: float = 0.0
    wraps_at_j: float | None = None
    # The spec it was built from (`parse_source_spec`); None for one built in code.
    spec: str | None = None

    @abstractmethod
    def read(self) -> SourceReading:
        """The cumulative energy now; a failure is a reading with a reason, not an error.

        Called at window edges, from several runs' threads at once: it must be
        thread-safe and bounded in time (a network read has a timeout).
        """

    def detail(self) -> str | None:
        """Where the source is read, for the run's record (no credentials)."""
        return None

    def info(self) -> EnergySourceInfo:
        """The source's description, stored with every run that read it."""
        return EnergySourceInfo(name=self.name, kind=self.kind, sensor=self.sensor,
                                scope=self.scope, update_s=self.update_s or None,
                                detail=self.detail())

    def redundant_with(self, gpus: Sequence[GpuDevice]) -> bool:
        """True where the run's devices already measure what this source does."""
        return False

    def close(self) -> None:
        """Stop what the source runs in the background (nothing by default)."""

    @classmethod
    @abstractmethod
    def from_options(cls, name: str, options: Mapping[str, str]) -> EnergySource:
        """The source a spec describes; `SourceSpecError` for a bad or missing option."""


_KINDS: dict[str, type[EnergySource]] = {}
_loaded = False


def register_source_kind(cls: S) -> S:
    """Class decorator: make an `EnergySource` subclass buildable from specs of its `kind`."""
    if cls.kind in _KINDS and _KINDS[cls.kind] is not cls:
        raise ValueError(f"two energy source kinds named {cls.kind!r}")
    _KINDS[cls.kind] = cls
    return cls


def source_kinds() -> dict[str, type[EnergySource]]:
    """Every registered source kind (importing each module of this package once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules(__path__):
            try:
                importlib.import_module(f"{__name__}.{module.name}")
            except ImportError as exc:
                log.info("energy source module %s not loaded: %s", module.name, exc)
    return dict(_KINDS)


def parse_source_spec(spec: str) -> EnergySource:
    """One source from `KIND` or `KIND:key=value;key=value` (`name=` names it, else KIND)."""
    kind, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SourceSpecError(f"energy source {spec!r}: expected key=value, got {item!r}")
        options[key.strip()] = value.strip()
    kinds = source_kinds()
    if kind not in kinds:
        raise SourceSpecError(f"unknown energy source kind {kind!r} in {spec!r}; known: "
                              f"{', '.join(sorted(kinds)) or 'none'}")
    name = options.pop("name", kind)
    source = kinds[kind].from_options(name, options)
    source.spec = spec.strip()      # how a run process builds the same source again
    return source


def parse_source_specs(specs: Sequence[str] | str) -> list[EnergySource]:
    """Sources from specs (a string: specs separated by whitespace); names must be unique."""
    items = specs.split() if isinstance(specs, str) else [s for s in specs if s.strip()]
    sources = [parse_source_spec(item) for item in items]
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SourceSpecError(f"two energy sources named {', '.join(duplicates)}: "
                              "give each a distinct name=")
    return sources


_configured: list[EnergySource] | None = None
_config_lock = threading.Lock()


def configure_sources(sources: list[EnergySource]) -> None:
    """Set the worker's extra sources (replacing, and closing, any set before)."""
    global _configured
    with _config_lock:
        for old in _configured or []:
            old.close()
        _configured = list(sources)


def configured_sources(environ: Mapping[str, str] | None = None) -> list[EnergySource]:
    """The worker's extra sources: as configured, else from `FARM_ENERGY_SOURCES` (once)."""
    global _configured
    with _config_lock:
        if _configured is None:
            _configured = parse_source_specs(setting("energy_sources", environ) or "")
        return list(_configured)


def read_safely(source: EnergySource) -> SourceReading:
    """`source.read()`; a source that raises anyway gives a reading with the reason."""
    try:
        return source.read()
    except Exception as exc:   # a source's failure is missing data, never a failed run
        return SourceReading(None, f"{type(exc).__name__}: {exc}")


_pool: ThreadPoolExecutor | None = None


def read_all(sources: Sequence[EnergySource]) -> list[SourceReading]:
    """Every source read at once (each on its own thread), so an edge costs the slowest read."""
    global _pool
    if not sources:
        return []
    if len(sources) == 1:
        return [read_safely(sources[0])]
    with _config_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="energy-source")
    return list(_pool.map(read_safely, sources))
