"""The farm's SQL store, `Store`: every query the rest of the farm needs.

Store is composed of its jobs, one module each: the connection (farm.store.base),
run lifecycle (farm.store.lifecycle: enqueue, start, hand back, cancel, retry),
recording (farm.store.recording: record_result, idempotent), read views
(farm.store.views), the dispatcher's reads and marks (farm.store.dispatching),
adaptive repetitions' reads (farm.store.repetitions)
and the record ↔ row mapping (farm.store.mapping). Callers
import Store (and the names below) from here as before.
"""

from __future__ import annotations

from farm.store.base import CHUNK, StoreBase, chunks
from farm.store.dispatching import Backlog, Dispatching, Usage
from farm.store.lifecycle import RunLifecycle
from farm.store.mapping import (
    HOST_COLUMNS,
    LOAD_POINT_COLUMNS,
    REQUEST_COLUMNS,
    RESULT_LATENCY_STATS,
    RESULT_POINT_FIGURES,
    RESULT_ROW_COLUMNS,
    TRACE_SERIES,
    load_points_t,
    requests_t,
    results_t,
    runs_t,
    steady_energy_j,
    sweeps_t,
    traces_t,
    windows_t,
)
from farm.store.recording import Recording, RecordOutcome
from farm.store.repetitions import RepetitionFigures, RepetitionReads
from farm.store.views import Views

__all__ = [
    "CHUNK",
    "HOST_COLUMNS",
    "LOAD_POINT_COLUMNS",
    "REQUEST_COLUMNS",
    "RESULT_LATENCY_STATS",
    "RESULT_POINT_FIGURES",
    "RESULT_ROW_COLUMNS",
    "TRACE_SERIES",
    "Backlog",
    "RecordOutcome",
    "RepetitionFigures",
    "Store",
    "StoreBase",
    "Usage",
    "chunks",
    "load_points_t",
    "requests_t",
    "results_t",
    "runs_t",
    "steady_energy_j",
    "sweeps_t",
    "traces_t",
    "windows_t",
]


class Store(RunLifecycle, Recording, Views, Dispatching, RepetitionReads):
    """The farm's SQL store. Open with `Store.open(url)`; close when done."""
