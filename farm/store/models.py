"""Tables of the store, and the packed encodings of its bulky columns.

Sized for millions of rows: per-request latencies and power timelines are kept,
but packed (one row per request with its inter-token gaps as a float32 blob; one
row per run × GPU with the whole timeline as a blob per series), never a row per
token or per sample. Every datetime is stored and read back as timezone-aware UTC.

Blob encodings (all little-endian, no header; the sample count is len / width):
  pack_f64  float64, no missing values (t_s)
  pack_f32  float32, NaN = a missing (None) sample (power, clocks, temperatures, ITLs)
  pack_u64  uint64, U64_NONE (2**64 - 1) = a missing sample (NVML throttle bitmasks;
            NVML never sets all 64 bits, and packing refuses that value)

Changing a table means writing a migration in migrations/versions/.
"""

from __future__ import annotations

import math
import sys
import types
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

# Named constraints keep future migrations possible on SQLite, whose batch mode
# recreates tables and must name what it drops.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

from farm_contract.records import load_point_columns  # noqa: E402
from farm_contract.statuses import RESULT_STATUSES, RUN_STATUSES  # noqa: E402


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """DateTime(timezone=True) that always gives back aware UTC datetimes.

    PostgreSQL keeps the instant (timestamptz) but returns it in the session's
    time zone; SQLite keeps no zone at all. Values are stored as UTC and tagged
    UTC on the way out. A naive value is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The value as stored: UTC, without an offset on SQLite."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite's DATETIME text has no offset: store the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The stored value as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> JSON:
    # None is stored as SQL NULL, not as the JSON text 'null'.
    return JSON(none_as_null=True)


# ------------------------------------------------------------------ packing

def _little_endian(values: array) -> array:
    if sys.byteorder == "big":
        values.byteswap()
    return values


def pack_f32(values: Sequence[float | None]) -> bytes | None:
    """float32 little-endian; None becomes NaN. An empty list packs to None."""
    if not values:
        return None
    try:
        floats = array("f", values)  # type: ignore[arg-type]
    except TypeError:  # a None among them: the slow path
        floats = array("f", (math.nan if v is None else v for v in values))
    return _little_endian(floats).tobytes()


def pack_f64(values: Sequence[float]) -> bytes | None:
    """float64 little-endian. An empty list packs to None."""
    if not values:
        return None
    return _little_endian(array("d", values)).tobytes()


def _unpack(code: str, blob: bytes | None) -> array:
    values = array(code)
    if blob:
        values.frombytes(blob)
        _little_endian(values)
    return values


def unpack_f32(blob: bytes | None, nan_as_none: bool = False) -> list[float | None]:
    """pack_f32's samples; NaN read back as None when `nan_as_none`."""
    values: Iterable[float] = _unpack("f", blob)
    if nan_as_none:
        return [None if math.isnan(v) else v for v in values]
    return list(values)


def unpack_f64(blob: bytes | None) -> list[float]:
    """pack_f64's samples (an empty list for None)."""
    return list(_unpack("d", blob))


U64_NONE = 2**64 - 1
"""The uint64 sentinel pack_u64 writes for a missing (None) sample."""


def pack_u64(values: Sequence[int | None]) -> bytes | None:
    """uint64 little-endian; None becomes U64_NONE. An empty list packs to None.

    Raises ValueError for a value outside 0 .. 2**64 - 2 (U64_NONE itself included).
    """
    if not values:
        return None
    try:
        try:
            ints = array("Q", values)  # type: ignore[arg-type]
            missing = 0
        except TypeError:  # a None among them: the slow path
            ints = array("Q", (U64_NONE if v is None else v for v in values))
            missing = sum(v is None for v in values)
    except OverflowError:
        raise ValueError("pack_u64 takes integers in 0 .. 2**64 - 2") from None
    if ints.count(U64_NONE) != missing:
        raise ValueError(f"pack_u64 cannot store {U64_NONE}: it is the None sentinel")
    return _little_endian(ints).tobytes()


def unpack_u64(blob: bytes | None) -> list[int | None]:
    """pack_u64's samples, U64_NONE read back as None."""
    return [None if v == U64_NONE else v for v in _unpack("Q", blob)]


# ------------------------------------------------------------------- tables


class SweepRow(SQLModel, table=True):
    """Table sweeps: one sweep, keyed by id (the hash of its unique name)."""
    __tablename__ = "sweeps"

    id: str = Field(primary_key=True)  # farm_contract.runspec.sweep_id(name)
    name: str = Field(unique=True)
    created_at: datetime = Field(sa_type=UTCDateTime())
    updated_at: datetime = Field(sa_type=UTCDateTime())
    spec_toml: str = Field(sa_type=Text())  # the file as last enqueued
    simulated: bool
    # Who enqueued it ('' for sweeps older than owners) and its dispatch priority
    # (higher first): farm/dispatch.py. A re-enqueue updates both.
    owner: str = Field(default="", sa_column_kwargs={"server_default": ""})
    priority: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class RunRow(SQLModel, table=True):
    """One RunSpec and where it stands. The flat columns are for filtering."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_sweep_id_status", "sweep_id", "status"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_sweep_id_queue_status", "sweep_id", "queue", "status"),
        Index("ix_runs_queue_status_dispatched_at", "queue", "status", "dispatched_at"),
        CheckConstraint(f"status IN {RUN_STATUSES}", name="status"),
    )

    id: str = Field(primary_key=True)  # RunSpec.run_id
    sweep_id: str = Field(foreign_key="sweeps.id")
    repetition: int
    model_id: str
    backend: str  # gpu | sim
    gpu_model: str  # canonical slug asked for
    gpu_count: int
    engine_kind: str
    scenario_name: str
    scenario_kind: str
    input_tokens: int | None = None
    output_tokens: int
    decoding: str  # Decoding.label
    queue: str
    spec_json: str = Field(sa_type=Text())  # RunSpec.to_json()
    status: str
    attempts: int = 0
    worker: str | None = None
    gpu_uuids: list[str] | None = Field(default=None, sa_type=_json())
    created_at: datetime = Field(sa_type=UTCDateTime())
    queued_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    error: str | None = Field(default=None, sa_type=Text())
    simulated: bool
    # When its message was put on its broker queue; NULL: queued in the store
    # only, waiting for the dispatcher (farm/dispatch.py).
    dispatched_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class ResultRow(SQLModel, table=True):
    """The one result of a run (RunResult without its lists), plus run-level figures."""

    __tablename__ = "results"
    __table_args__ = (CheckConstraint(f"status IN {RESULT_STATUSES}", name="status"),)

    run_id: str = Field(primary_key=True, foreign_key="runs.id")
    recorded_at: datetime = Field(sa_type=UTCDateTime())
    attempt: int
    status: str
    worker: str
    host: str
    gpus_json: list[dict[str, Any]] = Field(sa_type=_json())  # GpuInfo dicts
    engine_kind: str
    engine_version: str | None = None
    simulated: bool
    energy_sensor: str
    power_sensor: str | None = None
    sample_period_s: float | None = None
    measured_in: str | None = None  # "run process" | "worker thread"; null before 0012
    started_at: datetime = Field(sa_type=UTCDateTime())
    finished_at: datetime = Field(sa_type=UTCDateTime())
    duration_s: float
    energy_j: float | None = None  # sum of the steady windows; null if any is null
    output_tokens: int | None = None  # sum over load points
    steady_output_tokens: int | None = None  # emitted inside the steady windows
    energy_per_output_token_j: float | None = None
    error_kind: str | None = None
    error_message: str | None = Field(default=None, sa_type=Text())
    log_tail: list[str] | None = Field(default=None, sa_type=_json())
    # Validity: null when none was computed (e.g. a failed run), never false by default.
    valid: bool | None = None
    validity_json: list[dict[str, Any]] | None = Field(default=None, sa_type=_json())  # checks
    invalid_reasons: str | None = Field(default=None, sa_type=Text())  # failed checks, a,b
    # Preflight: the whole record as JSON, `cooled` flat for filtering.
    preflight_json: dict[str, Any] | None = Field(default=None, sa_type=_json())
    cooled: bool | None = None
    # IdleBaseline, summed over the run's GPUs.
    idle_power_w: float | None = None
    idle_ctx_power_w: float | None = None
    # HostEnergy, flat; host_tracker is set exactly when the run reported host energy.
    host_tracker: str | None = None
    host_duration_s: float | None = None
    cpu_energy_j: float | None = None
    cpu_method: str | None = None
    ram_energy_j: float | None = None
    ram_method: str | None = None
    host_gpu_energy_j: float | None = None
    emissions_g: float | None = None
    carbon_intensity_g_per_kwh: float | None = None
    region: str | None = None
    host_note: str | None = Field(default=None, sa_type=Text())
    # MeasurementInfo.energy_sources (migration 0005): the extra sources read beside
    # the GPUs, as EnergySourceInfo dicts; NULL when there were none.
    energy_sources_json: list[dict[str, Any]] | None = Field(default=None, sa_type=_json())
    # EngineInfo (migration 0009): "random" for a random-weight model, NULL otherwise;
    # the engine's start-up (EngineStartup's fields: times, KV cache), NULL if none.
    model_weights: str | None = None
    engine_startup_json: dict[str, Any] | None = Field(default=None, sa_type=_json())
    # Provenance of an imported result (migration 0010): "export sha256:<manifest
    # digest> (exported <when>)"; NULL for one this farm's own workers measured.
    imported_from: str | None = None


def _load_point_table(namespace: dict[str, Any]) -> None:
    """The class body of LoadPointRow: its keys, one column per flat figure of
    LoadPointResult (farm_contract.records.load_point_columns, same names, None
    where the record allows None) and the JSON notes."""
    annotations: dict[str, Any] = {"run_id": str, "idx": int}
    namespace.update(
        __module__=__name__, __qualname__="LoadPointRow", __tablename__="load_points",
        __doc__="One load point of a result: the LoadPointResult's figures, flat.",
        run_id=Field(primary_key=True, foreign_key="results.run_id", ondelete="CASCADE"),
        idx=Field(primary_key=True),
    )
    for column in load_point_columns():
        if column.nullable:
            annotations[column.name] = column.type | None
            namespace[column.name] = None
        else:
            annotations[column.name] = column.type
    annotations["notes"] = list[str] | None
    namespace["notes"] = Field(default=None, sa_type=_json())  # NULL = no notes
    namespace["__annotations__"] = annotations


# Generated from the record, so a new LoadPointResult figure is a new column here
# without an edit (its migration is still written by hand; a test compares them).
LoadPointRow: Any = types.new_class("LoadPointRow", (SQLModel,), {"table": True},
                                    _load_point_table)


class WindowRow(SQLModel, table=True):
    """Table energy_windows: one energy window of a result, keyed by an integer id."""
    __tablename__ = "energy_windows"
    __table_args__ = (Index("ix_energy_windows_run_id", "run_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="results.run_id", ondelete="CASCADE")
    name: str  # idle | load | warmup | steady | run
    load_point: int | None = None
    start_s: float
    duration_s: float
    energy_j: float | None = None
    per_gpu_energy_j: list[float | None] | None = Field(default=None, sa_type=_json())
    timeline_energy_j: float | None = None
    avg_power_w: float | None = None
    peak_power_w: float | None = None
    null_reason: str | None = None
    agreement: float | None = None  # timeline_energy_j / energy_j
    # '0' is false on both dialects (see migration 0003 for why not an SQL expression).
    disagrees: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    # EnergyWindow.sources (migration 0005): {source name: {energy_j, null_reason}};
    # NULL when the run read no extra source.
    sources: dict[str, Any] | None = Field(default=None, sa_type=_json())
    # EnergyWindow.edges (migration 0008): "read" or "tick"; NULL on older rows.
    edges: str | None = None


class RequestRow(SQLModel, table=True):
    """One request; its inter-token gaps packed with pack_f32."""

    __tablename__ = "requests"
    __table_args__ = (Index("ix_requests_run_id_load_point", "run_id", "load_point"),)

    # SQLite autoincrements only an INTEGER PRIMARY KEY (a 64-bit rowid anyway).
    id: int | None = Field(
        default=None, primary_key=True,
        sa_type=BigInteger().with_variant(Integer(), "sqlite"),
    )
    run_id: str = Field(foreign_key="results.run_id", ondelete="CASCADE")
    load_point: int
    idx: int
    scheduled_s: float | None = None
    sent_s: float
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: bytes | None = Field(default=None, sa_type=LargeBinary())
    input_tokens: int | None = None
    output_tokens: int | None = None
    ok: bool
    error: str | None = Field(default=None, sa_type=Text())


class TraceRow(SQLModel, table=True):
    """The power timeline of one GPU of a run (gpu_index = position in the run's GPUs)."""

    __tablename__ = "power_traces"

    run_id: str = Field(primary_key=True, foreign_key="results.run_id", ondelete="CASCADE")
    gpu_index: int = Field(primary_key=True)
    gpu_uuid: str
    sensor: str
    sample_period_s: float
    n_samples: int
    t_s: bytes | None = Field(default=None, sa_type=LargeBinary())  # pack_f64
    power_w: bytes | None = Field(default=None, sa_type=LargeBinary())  # pack_f32, NaN = missing
    # The optional series: NULL when the run has no such series at all, b"" when
    # it has one without samples; pack_f32 (NaN = missing) / pack_u64 (U64_NONE = missing).
    memory_power_w: bytes | None = Field(default=None, sa_type=LargeBinary())
    temperature_c: bytes | None = Field(default=None, sa_type=LargeBinary())
    sm_clock_mhz: bytes | None = Field(default=None, sa_type=LargeBinary())
    throttle_reasons: bytes | None = Field(default=None, sa_type=LargeBinary())


CHILD_TABLES = (RequestRow, TraceRow, WindowRow, LoadPointRow)
ALL_TABLES = (SweepRow, RunRow, ResultRow, *CHILD_TABLES)
