"""The open dataset's schema: one definition for the export, the import, the
manifest and docs/dataset.md (a test checks that the document shows exactly
these tables). The runs table's columns also say where each value comes from
(`DatasetColumn.value`, read from a `RunSource`): the export writes
`runs_row(source)`, so a column is declared once, with its value.

A dataset is one sweep: six tables (`runs`, `run_points`, `requests`,
`timelines`, `windows`, and `fits`, derived from run_points), one file each in
Parquet, CSV or JSON Lines, plus `manifest.json`. Every column names its unit
in its name (`_s`, `_ms`, `_j`, `_w`, `_c`, `_mhz`, `_rps`, `_tps`, `_mib`, …)
and null means "not measured", never 0.

Versioning: `SCHEMA_VERSION` is "MAJOR.MINOR". A minor version only adds
columns (readers ignore columns they do not know); anything else is a new major
version, which `farmctl import` of an older farm refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import reduce
from typing import Any

from pydantic import BaseModel

from farm.errors import ExitCode, FarmError
from farm_contract.figures import flat_columns
from farm_contract.records import (
    EnergyWindow,
    HostEnergy,
    IdleBaseline,
    LoadPointResult,
    PowerTrace,
    RunResult,
    load_point_columns,
)
from farm_contract.runspec import RunSpec
from farm_contract.statuses import RUN_STATUSES

SCHEMA_VERSION = "1.8"
DATASET_KIND = "farm-sweep-export"
MANIFEST = "manifest.json"
FORMATS = ("parquet", "csv", "jsonl")

# DatasetColumn types (Parquet / Arrow type; CSV and JSON Lines spelling in docs/dataset.md).
TYPES = ("string", "json", "bool", "int64", "uint64", "float32", "float64", "timestamp",
         "list<string>", "list<int64>", "list<float32>", "list<float64>")

# Physical units and the token each column name carrying them must contain.
UNIT_TOKENS = {
    "s": "s", "ms": "ms", "J": "j", "W": "w", "°C": "c", "MHz": "mhz", "MiB": "mib",
    "req/s": "rps", "tokens/s": "tps", "tokens/J": "j", "g": "g", "g/kWh": "kwh",
    "gCO2e/1k tokens": "gco2e", "%": "pct",
}
# Units that are counts or ratios: no suffix needed (the name says what is counted).
PLAIN_UNITS = ("1", "tokens", "requests", "count", "bitmask", "UTC")


class DatasetError(FarmError, ValueError):
    """An export that cannot be written or read: the message says what and where."""

    exit_code = ExitCode.INVALID_INPUT


class DependencyError(FarmError, RuntimeError):
    """pyarrow (the `report` extra) is not installed."""

    exit_code = ExitCode.INTERNAL


@dataclass(frozen=True)
class RunSource:
    """What one row of the runs table is read from (the export gathers it per run)."""
    sweep: str                    # the sweep's name
    run: Mapping[str, Any]        # the store's row of the run (Store.runs_of)
    spec: RunSpec
    result: RunResult | None      # None: no result (yet)
    figures: Mapping[str, Any]    # the store's flat figures of the result ({}: none)
    n_requests: int               # its rows in `requests`
    n_samples: int                # its rows in `timelines` (samples × GPUs)


RowValue = Callable[[RunSource], Any]


@dataclass(frozen=True)
class DatasetColumn:
    """One column of a dataset table: its name, type (one of TYPES), unit and meaning;
    in the runs table also `value`, where the export reads it."""
    name: str
    type: str
    unit: str | None          # None: not a quantity (ids, names, flags, text)
    description: str
    nullable: bool = True
    value: RowValue | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type!r}")

    def as_manifest(self) -> dict[str, object]:
        """This column as the manifest describes it."""
        return {"name": self.name, "type": self.type, "unit": self.unit,
                "nullable": self.nullable, "description": self.description}


@dataclass(frozen=True)
class Table:
    """One dataset table: what a row is and its columns, in file order."""
    name: str
    row: str                  # what one row is
    description: str
    columns: tuple[DatasetColumn, ...]

    @property
    def names(self) -> list[str]:
        """The column names, in file order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> DatasetColumn:
        """The column called `name`; KeyError if the table has none."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


def _c(name: str, type_: str, unit: str | None, description: str,
       nullable: bool = True, value: RowValue | None = None) -> DatasetColumn:
    return DatasetColumn(name, type_, unit, description, nullable, value)


def _latency(prefix: str, what: str) -> tuple[DatasetColumn, ...]:
    return tuple(_c(f"{prefix}_{stat}_ms", "float64", "ms", f"{what}, {label}")
                 for stat, label in (("mean", "mean"), ("p50", "median"),
                                     ("p90", "90th percentile"), ("p99", "99th percentile")))


# Identity and dimensions a run point repeats from its run (for convenience).
_RUN_DIMS = (
    _c("sweep", "string", None, "sweep name", False),
    _c("repetition", "int64", "count", "repetition index (part of the run id)", False),
    _c("model_id", "string", None, "model id of the sweep file", False),
    _c("backend", "string", None, "`gpu`, `cpu` or `sim` (simulated)", False),
    _c("gpu_model", "string", None, "GPU model slug asked for (e.g. `h100-80gb`)", False),
    _c("gpu_count", "int64", "count", "GPUs per run", False),
    _c("power_limit_w", "float64", "W",
       "power limit per GPU the run asked for (`[hardware] power_limit_w`; null: none set, "
       "or the default asked for)"),
    _c("sm_clock_mhz", "int64", "MHz",
       "SM clock lock the run asked for (`[hardware] sm_clock_mhz`; null: none set, or the "
       "default asked for)"),
    _c("power_limit_default", "bool", None,
       "the run asked for the GPU's default power limit (`power_limit_w = \"default\"`; "
       "null: it did not)"),
    _c("sm_clock_default", "bool", None,
       "the run asked for the GPU's default SM clock, unlocked (`sm_clock_mhz = "
       "\"default\"`; null: it did not)"),
    _c("engine_kind", "string", None, "`vllm`, `hf` or `sim`", False),
    _c("engine_version", "string", None, "engine version the worker reported"),
    _c("engine_args_json", "json", None,
       "engine arguments of the run, a JSON object with sorted keys", False),
    _c("scenario_name", "string", None, "scenario label (e.g. `server-closed`, `batch`)", False),
    _c("scenario_kind", "string", None, "`server` or `batch`", False),
    _c("input_tokens", "int64", "tokens",
       "input length bin: prompt tokens per request (null for a dataset workload)"),
    _c("output_tokens", "int64", "tokens", "output length bin: tokens generated per request",
       False),
    _c("decoding", "string", None, "decoding label (`greedy`, `t0.8-p0.95`, …)", False),
)

_DIM = {c.name: c for c in _RUN_DIMS}


def _dims(*names: str) -> tuple[DatasetColumn, ...]:
    return tuple(_DIM[name] for name in names)


_SCALAR_TYPES = {int: "int64", float: "float64", bool: "bool", str: "string"}
# HostEnergy field → runs column (the others keep the field's name).
HOST_COLUMN_NAMES = {"tracker": "host_tracker", "duration_s": "host_duration_s",
                     "gpu_energy_j": "host_gpu_energy_j", "region": "host_region",
                     "note": "host_note"}


def _record_columns(model: type[BaseModel], names: dict[str, str] | None = None, *,
                    value: Callable[[Any], RowValue]) -> tuple[DatasetColumn, ...]:
    """A run-level record's flat figures as runs columns, with the record's units and
    descriptions; nullable, as a run may lack the record. `value(flat column)` says
    where a column's value is read."""
    return tuple(DatasetColumn((names or {}).get(f.name, f.name), _SCALAR_TYPES[f.type], f.unit,
                        f.description, True, value(f)) for f in flat_columns(model))


# ------------------------------------------------- where the runs values come from

# The power trace's series, in the timelines table's order.
TRACE_SERIES = ("power_w", "memory_power_w", "temperature_c", "sm_clock_mhz",
                "throttle_reasons")


def json_text(value: Any) -> str:
    """A JSON column's text: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def asked_number(value: Any) -> Any:
    """A tuning value asked for (`power_limit_w`, `sm_clock_mhz`) as its number
    column: None for "default" (said by the `*_default` column) or none set."""
    return None if isinstance(value, str) else value


def asked_default(value: Any) -> bool | None:
    """A tuning value asked for as its `*_default` column: True for "default"."""
    return True if isinstance(value, str) else None


def tuning_columns(power_limit_w: Any, sm_clock_mhz: Any) -> dict[str, Any]:
    """A run's asked-for GPU tuning as the dataset's columns: the numbers in
    `power_limit_w` / `sm_clock_mhz`, "default" (the GPU's own) as a true
    `*_default` beside a null number; null throughout where none was set."""
    return {"power_limit_w": asked_number(power_limit_w),
            "sm_clock_mhz": asked_number(sm_clock_mhz),
            "power_limit_default": asked_default(power_limit_w),
            "sm_clock_default": asked_default(sm_clock_mhz)}


def trace_header(trace: PowerTrace) -> dict[str, Any]:
    """The runs table's `trace_json`: the trace without its samples."""
    return {"sensor": trace.sensor, "sample_period_s": trace.sample_period_s,
            "gpu_uuids": trace.gpu_uuids, "n_samples": len(trace.t_s),
            "series": [name for name in TRACE_SERIES if getattr(trace, name) is not None]}


def _walk(value: Any, path: str) -> Any:
    """`value.a.b` for path "a.b" ("": value itself); None once a step is None."""
    return reduce(lambda v, part: None if v is None else getattr(v, part),
                  path.split(".") if path else [], value)


def _then(value: Any, then: Callable[[Any], Any] | None) -> Any:
    return value if then is None or value is None else then(value)


def _stored(key: str) -> RowValue:
    """The store's run row's `key`."""
    return lambda r: r.run[key]


def _spec(path: str, then: Callable[[Any], Any] | None = None) -> RowValue:
    """The RunSpec's value at `path` (through `then`, unless None)."""
    return lambda r: _then(_walk(r.spec, path), then)


def _result(path: str, then: Callable[[Any], Any] | None = None) -> RowValue:
    """The RunResult's value at `path` (through `then`); None without one."""
    return lambda r: _then(_walk(r.result, path), then)


def _server(name: str) -> RowValue:
    """A server scenario's field; None for a batch run."""
    return lambda r: getattr(r.spec.scenario, name) if r.spec.scenario.kind == "server" else None


def _batch(name: str) -> RowValue:
    """A batch scenario's field; None for a server run."""
    return lambda r: None if r.spec.scenario.kind == "server" else getattr(r.spec.scenario, name)


def _figure(name: str) -> RowValue:
    """The store's flat figure `name` of the result (None without one)."""
    return lambda r: r.figures.get(name)


def _gpus(r: RunSource) -> list[Any]:
    return r.result.gpus if r.result is not None else []


def _each_gpu(name: str) -> RowValue:
    """The field of each GPU that ran it, in order; None without any."""
    return lambda r: [getattr(g, name) for g in _gpus(r)] or None


def _first_gpu(name: str) -> RowValue:
    """The first GPU's field (one host: the same for all); None without any."""
    return lambda r: getattr(_gpus(r)[0], name) if _gpus(r) else None


def _energy(window: EnergyWindow | None) -> float | None:
    return window.energy_j if window is not None else None


# The runs table is the one table whose values are declared with its columns: each
# column says where its value comes from (`value`, read from a RunSource), and the
# export writes `runs_row(source)`. A column added here is exported, in this order.


def _dim(name: str, value: RowValue) -> DatasetColumn:
    """The shared dimension column `name`, with where the runs table reads it."""
    return replace(_DIM[name], value=value)


RUNS = Table(
    "runs", "run of the sweep (with or without a result)",
    "Identity, the RunSpec's dimensions, provenance (hardware, engine, measurement "
    "method), status, validity and run-level figures of every run; `spec_json` and "
    "`result_json` make the export lossless (`farmctl import` reads them).",
    (
        _c("run_id", "string", None, "hash of the canonical RunSpec (the run's identity)", False,
           value=_stored("id")),
        _dim("sweep", lambda r: r.sweep),
        _c("sweep_id", "string", None, "hash of the sweep name", False,
           value=_stored("sweep_id")),
        _dim("repetition", _spec("repetition")),
        _dim("model_id", _spec("model.id")),
        _c("model_source", "string", None, "hub id or local path of the model", False,
           value=_spec("model.source")),
        _c("model_dtype", "string", None, "weights dtype asked for", False,
           value=_spec("model.dtype")),
        _c("model_revision", "string", None, "model revision asked for",
           value=_spec("model.revision")),
        _dim("backend", _spec("hardware.backend")),
        _dim("gpu_model", _spec("hardware.gpu_model")),
        _dim("gpu_count", _spec("hardware.gpu_count")),
        _dim("power_limit_w", _spec("hardware.power_limit_w", asked_number)),
        _dim("sm_clock_mhz", _spec("hardware.sm_clock_mhz", asked_number)),
        _dim("power_limit_default", _spec("hardware.power_limit_w", asked_default)),
        _dim("sm_clock_default", _spec("hardware.sm_clock_mhz", asked_default)),
        _c("queue", "string", None, "queue the run was sent to (e.g. `gpu.h100-80gb.x1`)",
           False, value=_spec("hardware.queue")),
        _dim("engine_kind", _spec("engine.kind")),
        _dim("engine_version", _result("engine.version")),
        _dim("engine_args_json", _spec("engine.args", json_text)),
        _dim("scenario_name", _spec("scenario.name")),
        _dim("scenario_kind", _spec("scenario.kind")),
        _c("scenario_api", "string", None, "server: `completions` or `chat`",
           value=_server("api")),
        _c("scenario_duration_s", "float64", "s", "server: length of each load point",
           value=_server("duration_s")),
        _c("scenario_warmup_s", "float64", "s", "server: warm-up before the load points",
           value=_server("warmup_s")),
        _c("concurrency_levels", "list<int64>", "requests",
           "closed-loop server: the concurrencies measured (one load point each)",
           value=_server("concurrency")),
        _c("request_rates_rps", "list<float64>", "req/s",
           "open-loop server: the request rates measured (one load point each)",
           value=_server("request_rate")),
        _c("burstiness", "float64", "1", "open loop: gamma shape of arrivals (1 = Poisson)",
           value=_server("burstiness")),
        _c("max_concurrency", "int64", "requests", "open loop: cap on requests in flight",
           value=_server("max_concurrency")),
        _c("num_prompts", "int64", "count", "batch: prompts in the batch",
           value=_batch("num_prompts")),
        _c("warmup_prompts", "int64", "count", "batch: warm-up prompts",
           value=_batch("warmup_prompts")),
        _c("slo_ttft_ms", "float64", "ms", "server: TTFT limit goodput is counted against",
           value=_server("slo_ttft_ms")),
        _c("slo_tpot_ms", "float64", "ms", "server: TPOT limit goodput is counted against",
           value=_server("slo_tpot_ms")),
        _dim("input_tokens", _spec("workload.input_tokens")),
        _dim("output_tokens", _spec("workload.output_tokens")),
        _dim("decoding", _spec("workload.decoding.label")),
        _c("temperature", "float64", "1", "sampling temperature (0 = greedy)", False,
           value=_spec("workload.decoding.temperature")),
        _c("top_p", "float64", "1", "nucleus sampling mass", False,
           value=_spec("workload.decoding.top_p")),
        _c("top_k", "int64", "count", "top-k sampling (null: off)",
           value=_spec("workload.decoding.top_k")),
        _c("dataset", "string", None, "prompt source (`synthetic` or a dataset)", False,
           value=_spec("workload.dataset")),
        _c("seed", "int64", None, "workload seed", False, value=_spec("workload.seed")),
        _c("simulated", "bool", None,
           "simulated GPU or engine: never to be mixed with measured figures", False,
           value=lambda r: bool(r.run["simulated"]
                                or (r.result is not None and r.result.simulated))),
        _c("status", "string", None, ", ".join(f"`{s}`" for s in RUN_STATUSES), False,
           value=_stored("status")),
        _c("attempts", "int64", "count", "attempts the store counted", False,
           value=_stored("attempts")),
        _c("worker", "string", None, "worker (Celery node) that ran it",
           value=_stored("worker")),
        _c("host", "string", None, "host of that worker", value=_result("worker.host")),
        _c("started_at", "timestamp", "UTC", "start of the measured attempt",
           value=_stored("started_at")),
        _c("finished_at", "timestamp", "UTC", "end of the measured attempt",
           value=_stored("finished_at")),
        _c("duration_s", "float64", "s", "length of the measured attempt",
           value=_result("duration_s")),
        _c("error", "string", None, "why the run failed or was handed back (`kind: message`)",
           value=_stored("error")),
        _c("error_kind", "string", None, "failure kind (`engine`, `oom`, `timeout`, …)",
           value=_result("error.kind")),
        _c("error_message", "string", None, "failure message",
           value=_result("error.message")),
        _c("gpu_backend", "string", None, "backend of the GPUs that ran it",
           value=_first_gpu("backend")),
        _c("gpu_names", "list<string>", None, "GPU names as the driver reported them",
           value=_each_gpu("name")),
        _c("gpu_uuids", "list<string>", None, "GPU UUIDs, in the run's GPU order",
           value=lambda r: _each_gpu("uuid")(r) or r.run["gpu_uuids"]),
        _c("gpu_memory_mib", "list<int64>", "MiB", "memory of each GPU",
           value=_each_gpu("memory_mib")),
        _c("gpu_power_limits_w", "list<float64>", "W", "power limit of each GPU",
           value=_each_gpu("power_limit_w")),
        _c("gpu_driver_version", "string", None, "driver version (first GPU; one host)",
           value=_first_gpu("driver_version")),
        _c("gpu_cuda_version", "string", None, "CUDA driver API version (first GPU)",
           value=_first_gpu("cuda_version")),
        _c("energy_sensor", "string", None,
           "energy source of the windows (e.g. `nvml.total_energy_counter`)",
           value=_result("measurement.energy_sensor")),
        _c("power_sensor", "string", None,
           "power source of the timeline (e.g. `nvml.field.power_instant`)",
           value=_result("measurement.power_sensor")),
        _c("sample_period_s", "float64", "s", "timeline sampling period the worker used",
           value=_result("measurement.sample_period_s")),
        _c("measured_in", "string", None,
           "where the sampler and load generator ran: `run process` (a process of the "
           "run's own) or `worker thread` (beside the worker's other runs); null when "
           "not said (stored before it was recorded)",
           value=_result("measurement.measured_in")),
        _c("idle_baseline_s", "float64", "s", "length of each idle window asked for", False,
           value=_spec("measurement.idle_baseline_s")),
        _c("min_steady_s", "float64", "s", "validity: shortest steady window accepted", False,
           value=_spec("measurement.min_steady_s")),
        _c("agreement_tolerance", "float64", "1",
           "validity: largest |timeline ÷ counter − 1| accepted", False,
           value=_spec("measurement.agreement_tolerance")),
        _c("agreement_min_window_s", "float64", "s",
           "validity: shortest window whose agreement is judged", False,
           value=_spec("measurement.agreement_min_window_s")),
        _c("cooldown_timeout_s", "float64", "s", "preflight: longest wait for cool GPUs", False,
           value=_spec("measurement.cooldown_timeout_s")),
        _c("cooldown_band_c", "float64", "°C", "preflight: band above idle temperature", False,
           value=_spec("measurement.cooldown_band_c")),
        _c("codecarbon", "bool", None, "host energy and emissions asked for (CodeCarbon)",
           False, value=_spec("measurement.codecarbon")),
        _c("grid_region", "string", None, "grid region asked for (ISO 3166-1 alpha-3)",
           value=_spec("measurement.region")),
        _c("valid", "bool", None, "validity verdict (null: none computed, e.g. failed)",
           value=_result("validity.valid")),
        _c("invalid_reasons", "string", None, "failed checks, comma-separated (null if valid)",
           value=_figure("invalid_reasons")),
        _c("validity_checks_json", "json", None,
           "every check with its value, threshold and detail (JSON list)",
           value=_result("validity.checks", lambda checks: json_text(
               [c.model_dump(mode="json") for c in checks]))),
        _c("imported_from", "string", None,
           "the export this result was imported from (`export sha256:<manifest digest> "
           "(exported <when>)`); null: measured by this farm's own workers",
           value=_figure("imported_from")),
        _c("cooled", "bool", None, "GPUs within the cool-down band before the run",
           value=_result("preflight.cooled")),
        _c("preflight_waited_s", "float64", "s", "time waited for the GPUs to cool",
           value=_result("preflight.waited_s")),
        _c("preflight_json", "json", None, "GPU state before the run (JSON object)",
           value=_result("preflight", lambda p: p.model_dump_json())),
        # the store's figures of the result: the idle baselines as the store keeps them
        *_record_columns(IdleBaseline, value=lambda column: _figure(column.name)),
        _c("run_energy_j", "float64", "J", "energy of the whole `run` window",
           value=_result("", lambda result: _energy(result.window("run")))),
        _c("steady_energy_j", "float64", "J",
           "sum of the steady windows' energy (null if any is null)",
           value=_figure("energy_j")),
        _c("total_output_tokens", "int64", "tokens", "output tokens over all load points",
           value=_figure("output_tokens")),
        _c("steady_output_tokens", "int64", "tokens", "output tokens inside the steady windows",
           value=_figure("steady_output_tokens")),
        _c("energy_per_output_token_j", "float64", "J",
           "steady_energy_j ÷ steady_output_tokens",
           value=_figure("energy_per_output_token_j")),
        *_record_columns(HostEnergy, HOST_COLUMN_NAMES,
                         value=lambda column: _result("host_energy", column.get)),
        _c("num_requests", "int64", "requests", "rows of this run in `requests`", False,
           value=lambda r: r.n_requests),
        _c("num_timeline_samples", "int64", "count",
           "rows of this run in `timelines` (samples × GPUs)", False,
           value=lambda r: r.n_samples),
        _c("spec_schema_version", "int64", None, "RunSpec schema version", False,
           value=_spec("schema_version")),
        _c("result_schema_version", "int64", None, "RunResult (wire contract) schema version",
           value=_result("schema_version")),
        _c("spec_json", "json", None, "the full RunSpec (`RunSpec.to_json()`)", False,
           value=_stored("spec_json")),
        _c("result_json", "json", None,
           "the RunResult without `requests` and `trace` (null: no result); `worker.pid` "
           "is not stored and reads 0",
           value=_result("", lambda result: result.model_dump_json(
               exclude={"requests", "trace"}))),
        _c("trace_json", "json", None,
           "the power trace's header: sensor, sample_period_s, gpu_uuids, n_samples and "
           "the series it has (null: no trace)",
           value=_result("trace", lambda trace: json_text(trace_header(trace)))),
    ),
)
_unread = [c.name for c in RUNS.columns if c.value is None]
if _unread:
    raise RuntimeError(f"runs columns without a value: {', '.join(_unread)}")


def runs_row(source: RunSource) -> dict[str, Any]:
    """The runs row of one run: each column's value, in file order."""
    return {c.name: c.value(source) for c in RUNS.columns}  # type: ignore[misc]


# run_points takes every flat figure of LoadPointResult (farm_contract.records
# .load_point_columns) with the record's type, unit, description and nullability;
# these are named apart from the run's own columns of the same name.
POINT_COLUMN_NAMES = {"kind": "load_kind", "value": "load_value",
                      "input_tokens": "total_input_tokens",
                      "output_tokens": "total_output_tokens"}
# The load split by its kind, after load_value (export.py fills them from it).
_LOAD_BY_KIND = (
    _c("concurrency", "int64", "requests", "closed loop: requests kept in flight"),
    _c("request_rate_rps", "float64", "req/s", "open loop: arrival rate"),
    _c("batch_prompts", "int64", "count", "batch: prompts in the batch"),
)


def _point_figures() -> tuple[DatasetColumn, ...]:
    """The run_points columns of a load point's figures, from the record's metadata."""
    columns: list[DatasetColumn] = []
    for figure in load_point_columns():
        columns.append(DatasetColumn(POINT_COLUMN_NAMES.get(figure.name, figure.name),
                              _SCALAR_TYPES[figure.type], figure.unit, figure.description,
                              figure.nullable))
        if figure.name == "value":
            columns.extend(_LOAD_BY_KIND)
    return tuple(columns)


RUN_POINTS = Table(
    "run_points", "load point of a run with a result",
    "Every LoadPointResult figure, flat, with the run's dimensions repeated.",
    (
        _c("run_id", "string", None, "the run", False),
        _c("load_point", "int64", None, LoadPointResult.model_fields["index"].description,
           False),
        *_RUN_DIMS,
        _c("simulated", "bool", None, "simulated run", False),
        _c("status", "string", None, "the run's status", False),
        _c("valid", "bool", None, "the run's validity verdict"),
        _c("invalid_reasons", "string", None, "the run's failed checks"),
        *_point_figures(),
        _c("notes", "list<string>", None, LoadPointResult.model_fields["notes"].description),
    ),
)

REQUESTS = Table(
    "requests", "request",
    "Every request as the load generator (or batch engine) saw it. Times are seconds "
    "since the run's own monotonic origin (the same clock as `timelines.t_s` and "
    "`windows.start_s`).",
    (
        _c("run_id", "string", None, "the run", False),
        _c("load_point", "int64", None, "index of its load point", False),
        _c("index", "int64", None, "index of the request in its load point", False),
        _c("scheduled_s", "float64", "s", "open loop: when it was due"),
        _c("sent_s", "float64", "s", "when it was sent", False),
        _c("ttft_s", "float64", "s", "time to first token"),
        _c("e2e_s", "float64", "s", "end-to-end latency"),
        _c("itl_s", "list<float32>", "s", "every inter-token gap (stored as float32)", False),
        _c("input_tokens", "int64", "tokens", "prompt tokens"),
        _c("output_tokens", "int64", "tokens", "tokens generated"),
        _c("ok", "bool", None, "succeeded", False),
        _c("error", "string", None, "why it failed"),
    ),
)

TIMELINES = Table(
    "timelines", "sample of one GPU's timeline (long format)",
    "The power timeline of every GPU of a run, sampled in the background at "
    "`runs.sample_period_s`; a missing sample is null.",
    (
        _c("run_id", "string", None, "the run", False),
        _c("gpu_index", "int64", None, "position of the GPU in the run's GPUs", False),
        _c("gpu_uuid", "string", None, "the GPU", False),
        _c("sample", "int64", None, "index of the sample", False),
        _c("t_s", "float64", "s", "time of the sample since the run's origin", False),
        _c("power_w", "float32", "W", "instantaneous power"),
        _c("memory_power_w", "float32", "W", "memory power (where the GPU reports it)"),
        _c("temperature_c", "float32", "°C", "GPU temperature"),
        _c("sm_clock_mhz", "float32", "MHz", "SM clock"),
        _c("throttle_reasons", "uint64", "bitmask", "NVML clocks-event reasons bitmask"),
    ),
)

WINDOWS = Table(
    "windows", "energy window of a run",
    "Every energy window: `run`, `idle`, `idle_ctx`, `load`, `warmup`, and one "
    "`steady` window per load point; energy summed over the run's GPUs.",
    (
        _c("run_id", "string", None, "the run", False),
        _c("window_index", "int64", None, "position of the window in its run", False),
        _c("name", "string", None, "`run`, `idle`, `idle_ctx`, `load`, `warmup` or `steady`",
           False),
        _c("load_point", "int64", None, "steady windows: index of the load point"),
        _c("start_s", "float64", "s", "start since the run's origin", False),
        _c("duration_s", "float64", "s", "length", False),
        _c("energy_j", "float64", "J", "energy counter delta at the edges"),
        _c("per_gpu_energy_j", "list<float64>", "J", "the same per GPU"),
        _c("timeline_energy_j", "float64", "J", "integral of the power timeline"),
        _c("avg_power_w", "float64", "W", "energy_j ÷ duration_s"),
        _c("peak_power_w", "float64", "W", "highest timeline sample in the window"),
        _c("null_reason", "string", None, "why energy_j is null"),
        _c("agreement", "float64", "1", "timeline_energy_j ÷ energy_j"),
        _c("disagrees", "bool", None,
           "long enough to judge and off by more than the tolerance", False),
        _c("edges", "string", None, "how the counters were read at the edges: `read` (when "
           "the window opened and closed, each up to one counter update stale) or `tick` "
           "(just after each counter moved: the idle baselines); null: not said (stored "
           "before 1.3)"),
    ),
)

def _fit_columns(unit: str, token: str, what: str) -> tuple[DatasetColumn, ...]:
    return (
        _c(f"l_{token}", "float64", unit, f"{what} fits: L, the height of the step"),
        _c(f"l_stderr_{token}", "float64", unit, f"{what} fits: standard error of L"),
        _c(f"y0_{token}", "float64", unit, f"{what} fits: y0, the level the step starts "
           "from (k > 0) or falls to (k < 0)"),
        _c(f"y0_stderr_{token}", "float64", unit, f"{what} fits: standard error of y0"),
        _c(f"rmse_{token}", "float64", unit, f"{what} fits: root mean square residual"),
    )


FITS = Table(
    "fits", "fitted curve of one configuration and figure",
    "The report's fitted curves (farm/report/fits.py): y = L / (1 + exp(−k (log2 b − x0))) "
    "+ y0 fitted by least squares to every usable repetition's value of `figure` against "
    "the batch size b (`x_axis`). Derived from run_points at export; `farmctl import` "
    "does not read it. A configuration with fewer than 4 batch sizes has a row with "
    "`fitted` false, the reason, and null parameters.",
    (
        *_dims("sweep", "model_id", "backend", "gpu_model", "gpu_count", "power_limit_w",
               "sm_clock_mhz", "power_limit_default", "sm_clock_default", "engine_kind",
               "scenario_name", "scenario_kind", "input_tokens", "output_tokens", "decoding"),
        _c("engine_args_json", "json", None, "engine arguments, the batch axis's left out "
           "when it is one", False),
        _c("figure", "string", None, "the run_points column fitted "
           "(`energy_per_output_token_j`, `avg_power_w`, or their net-of-idle forms)", False),
        _c("x_axis", "string", None, "the batch axis b: `concurrency` (closed loop), "
           "`engine.batch_size`, `engine.max_num_seqs` or `num_prompts` (batch scenarios)",
           False),
        _c("model", "string", None, "the fitted function", False),
        _c("n_points", "int64", "count", "values fitted (usable repetitions × batch sizes)",
           False),
        _c("n_batch_sizes", "int64", "count", "distinct batch sizes", False),
        _c("fitted", "bool", None, "whether there is a fit", False),
        _c("no_fit_reason", "string", None, "why there is no fit"),
        _c("k", "float64", "1", "steepness per doubling of b (negative: falls with b)"),
        _c("k_stderr", "float64", "1", "standard error of k (null without degrees of "
           "freedom left)"),
        _c("x0_log2", "float64", "1", "log2 of the batch size at the middle of the step"),
        _c("x0_stderr_log2", "float64", "1", "standard error of x0"),
        _c("r2", "float64", "1", "coefficient of determination of the fitted values"),
        *_fit_columns("J", "j", "J per output token"),
        *_fit_columns("W", "w", "GPU power"),
    ),
)

REPETITIONS = Table(
    "repetitions", "adaptive-repetitions verdict of one configuration at one load point",
    "What adaptive repetitions (`repetitions = { min, max, ci_half_width_pct, figure }`, "
    "farm/adaptive.py) decided per configuration, from the stored runs: how many "
    "repetitions ran, the mean and 95% CI half-width of the figure the target was on at "
    "each load point, and the verdict (the configuration's, repeated on each of its load "
    "points). Empty for a sweep with a fixed number of repetitions. Derived at export; "
    "`farmctl import` does not read it.",
    (
        *_dims("sweep", "model_id", "backend", "gpu_model", "gpu_count", "power_limit_w",
               "sm_clock_mhz", "power_limit_default", "sm_clock_default", "engine_kind"),
        _c("engine_args_json", "json", None, "engine arguments, a JSON object with sorted "
           "keys", False),
        *_dims("scenario_name", "scenario_kind", "input_tokens", "output_tokens", "decoding"),
        _c("first_run_id", "string", None, "the configuration's repetition 0 (the other "
           "repetitions' ids differ only by the index)", False),
        _c("load_point", "int64", None, "index of the load point"),
        _c("load_kind", "string", None, "`concurrency`, `request_rate` or `batch`"),
        _c("load_value", "float64", "1", "the load point's value (its unit is load_kind's)"),
        _c("figure", "string", None, "the run_points column the target was on "
           "(`energy_per_output_token_j` or `energy_per_output_token_net_j`)", False),
        _c("runs", "int64", "count", "repetitions stored, any status", False),
        _c("usable", "int64", "count", "repetitions that succeeded and passed validity",
           False),
        _c("n", "int64", "count", "usable repetitions with a value of `figure` here", False),
        _c("figure_mean_j", "float64", "J", "mean of `figure` over the n values"),
        _c("ci_half_width_pct", "float64", "%", "95% CI half-width (Student's t, n − 1 "
           "degrees of freedom) as a percentage of the mean; null with n < 2"),
        _c("target_ci_half_width_pct", "float64", "%", "the target half-width", False),
        _c("max_runs", "int64", "count", "the most repetitions the policy allows", False),
        _c("verdict", "string", None, "`met`, `max` (reached without meeting the target), "
           "`more` (next repetition due), `waiting` (one queued or running), `no usable "
           "run`, `no value` or `cancelled`", False),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (RUNS, RUN_POINTS, REQUESTS, TIMELINES, WINDOWS,
                                                FITS, REPETITIONS)}
# Tables computed from the others at export: an import reads them from nowhere, and
# a dataset of schema 1.0 (before them) still imports.
DERIVED_TABLES = ("fits", "repetitions")


def file_name(table: str, fmt: str) -> str:
    """The file name of `table` in format `fmt` ("runs.parquet")."""
    return f"{table}.{fmt}"


def schema_major(version: str) -> int:
    """The major number of "MAJOR.MINOR"; DatasetError for anything else."""
    try:
        major, _minor = str(version).split(".")
        return int(major)
    except ValueError:
        raise DatasetError(f"unreadable dataset schema version {version!r}") from None


def markdown_columns(table: Table) -> str:
    """The column table of docs/dataset.md for `table` (the test compares them)."""
    lines = ["| column | type | unit | null | description |", "|---|---|---|---|---|"]
    for c in table.columns:
        lines.append(f"| `{c.name}` | {c.type} | {c.unit or ''} | "
                     f"{'yes' if c.nullable else 'no'} | {c.description} |")
    return "\n".join(lines)


def with_current_tables(doc: str) -> str:
    """`doc` (docs/dataset.md's text) with each table's column table replaced by
    `markdown_columns`: the first column table after its `### name` heading."""
    for table in TABLES.values():
        heading = doc.index(f"\n### {table.name}\n")
        start = doc.index("\n| column | type | unit | null | description |\n", heading) + 1
        end = start
        while end < len(doc) and doc.startswith("|", end):
            end = doc.find("\n", end) + 1 or len(doc)
        doc = doc[:start] + markdown_columns(table) + "\n" + doc[end:]
    return doc


def main(argv: list[str] | None = None) -> int:
    """`python -m farm.report.dataset [--check] DOC`: rewrite DOC's column tables
    from the schema (after a new figure), or with --check exit 1 if they differ."""
    import sys
    from pathlib import Path

    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    path = Path(next((a for a in args if a != "--check"), "docs/dataset.md"))
    text = path.read_text(encoding="utf-8")
    current = with_current_tables(text)
    if check:
        print(f"{path}: {'up to date' if current == text else 'column tables differ'}")
        return ExitCode.OK if current == text else ExitCode.RUNS_FAILED
    path.write_text(current, encoding="utf-8")
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())


# ------------------------------------------------------------------ Arrow types
# pyarrow is imported on first use: it is the `report` extra, not a core dependency.


def pyarrow_module():
    """pyarrow, or a DatasetError saying how to install it."""
    try:
        import pyarrow
    except ImportError:
        raise DependencyError("the dataset export and import need pyarrow: "
                              "pip install 'farm[report]'") from None
    return pyarrow


def arrow_type(type_: str):
    """The pyarrow type of a dataset column type ("float32", "list<int64>", ...)."""
    pa = pyarrow_module()
    scalar = {"string": pa.string(), "json": pa.string(), "bool": pa.bool_(),
              "int64": pa.int64(), "uint64": pa.uint64(), "float32": pa.float32(),
              "float64": pa.float64(), "timestamp": pa.timestamp("us", tz="UTC")}
    if type_.startswith("list<"):
        return pa.list_(scalar[type_[5:-1]])
    return scalar[type_]


def arrow_schema(table: Table):
    """The pyarrow schema of `table`, with each column's nullability."""
    pa = pyarrow_module()
    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable)
                      for c in table.columns])
