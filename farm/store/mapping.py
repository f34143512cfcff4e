"""Record ↔ row: how each record of the wire contract is kept in the store's
tables and read back (no queries). The load point columns are derived from
LoadPointResult's fields (farm_contract.records.load_point_columns)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Table,
)

from farm.store.models import (
    LoadPointRow,
    RequestRow,
    ResultRow,
    RunRow,
    SweepRow,
    TraceRow,
    WindowRow,
    pack_f32,
    pack_f64,
    pack_u64,
    unpack_f32,
    unpack_f64,
    unpack_u64,
    utcnow,
)
from farm_contract.figures import flat_values, nested_values
from farm_contract.records import (
    TUNING_READ_BACK_FIELDS,
    TUNING_REFUSAL_FIELD,
    EnergySourceInfo,
    EnergyWindow,
    EngineStartup,
    ErrorInfo,
    GpuInfo,
    GpuTuning,
    HostEnergy,
    IdleBaseline,
    LoadPointResult,
    PowerTrace,
    Preflight,
    RequestRecord,
    RunResult,
    Validity,
    ValidityCheck,
    load_point_columns,
)
from farm_contract.runspec import RunSpec

REQUEST_COLUMNS = ("run_id", "load_point", "idx", "scheduled_s", "sent_s", "ttft_s", "e2e_s",
                   "itl_s", "input_tokens", "output_tokens", "ok", "error")
# LoadPointResult's flat figures: load_points columns of the same names (LatencyStats
# as {metric}_{stat}_ms), from the record's own field list (farm_contract.figures).
LOAD_POINT_COLUMNS = load_point_columns()
# What result_rows carries of a load point, as lp_{name} of the query: every figure
# but those under another name (kind → load_kind, value → load_value), those whose
# names the run's own columns take (duration_s, the token counts) and the latency
# statistics outside RESULT_LATENCY_STATS; a new figure is carried without an edit.
RESULT_LATENCY_STATS = {"ttft": ("p50_ms", "p90_ms"), "tpot": ("p50_ms", "p90_ms"),
                        "e2e": ("p50_ms", "p90_ms"), "lateness": ("p50_ms", "p99_ms")}
_RESULT_OMITS = ("kind", "value", "duration_s", "input_tokens", "output_tokens",
                 "steady_output_tokens")
RESULT_POINT_FIGURES = tuple(
    column.name for column in LOAD_POINT_COLUMNS
    if (column.path[1] in RESULT_LATENCY_STATS.get(column.path[0], ())
        if len(column.path) == 2 else column.name not in _RESULT_OMITS))
# PowerTrace's optional series: (field, pack, unpack).
TRACE_SERIES: tuple[tuple[str, Callable[[Any], bytes | None], Callable[[Any], list[Any]]], ...] = (
    ("memory_power_w", pack_f32, lambda blob: unpack_f32(blob, nan_as_none=True)),
    ("temperature_c", pack_f32, lambda blob: unpack_f32(blob, nan_as_none=True)),
    ("sm_clock_mhz", pack_f32, lambda blob: unpack_f32(blob, nan_as_none=True)),
    ("throttle_reasons", pack_u64, unpack_u64),
)
# Result-level columns result_rows carries under their own names.
RESULT_ROW_COLUMNS = ("valid", "invalid_reasons", "cooled", "idle_power_w", "idle_ctx_power_w",
                      "cpu_energy_j", "ram_energy_j", "cpu_method", "ram_method", "emissions_g",
                      "model_weights", "imported_from")
# HostEnergy field → results column.
HOST_COLUMNS = {"tracker": "host_tracker", "duration_s": "host_duration_s",
                "cpu_energy_j": "cpu_energy_j", "cpu_method": "cpu_method",
                "ram_energy_j": "ram_energy_j", "ram_method": "ram_method",
                "gpu_energy_j": "host_gpu_energy_j", "emissions_g": "emissions_g",
                "region": "region",
                "carbon_intensity_g_per_kwh": "carbon_intensity_g_per_kwh",
                "note": "host_note"}

runs_t: Table = RunRow.__table__  # type: ignore[assignment]
sweeps_t: Table = SweepRow.__table__  # type: ignore[assignment]
results_t: Table = ResultRow.__table__  # type: ignore[assignment]
load_points_t: Table = LoadPointRow.__table__  # type: ignore[assignment]
windows_t: Table = WindowRow.__table__  # type: ignore[assignment]
requests_t: Table = RequestRow.__table__  # type: ignore[assignment]
traces_t: Table = TraceRow.__table__  # type: ignore[assignment]


def as_utc(value: datetime) -> datetime:
    """Aware UTC (a naive time from a worker is taken as UTC, as the store does)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ------------------------------------------------------------------ writing


def run_row(sweep: str, run_id: str, run: RunSpec, now: datetime) -> dict[str, Any]:
    """The `runs` row of a new run: queued, nothing measured yet."""
    return {
        "id": run_id, "sweep_id": sweep, "repetition": run.repetition, "model_id": run.model.id,
        "backend": run.hardware.backend, "gpu_model": run.hardware.gpu_model,
        "gpu_count": run.hardware.gpu_count, "engine_kind": run.engine.kind,
        "scenario_name": run.scenario.name, "scenario_kind": run.scenario.kind,
        "input_tokens": run.workload.input_tokens, "output_tokens": run.workload.output_tokens,
        "decoding": run.workload.decoding.label, "queue": run.hardware.queue,
        "spec_json": run.to_json(), "status": "queued", "attempts": 0, "worker": None,
        "gpu_uuids": None, "created_at": now, "queued_at": now, "started_at": None,
        "finished_at": None, "error": None, "simulated": run.simulated,
        "dispatched_at": None,   # the dispatcher sends it (farm/dispatch.py)
    }


def steady_energy_j(windows: Iterable[EnergyWindow]) -> float | None:
    """Sum of the steady windows' energy; None if there is none or any is unmeasured."""
    values = [w.energy_j for w in windows if w.name == "steady"]
    if not values or any(v is None for v in values):
        return None
    return float(sum(values))  # type: ignore[arg-type]


def result_row(result: RunResult, imported_from: str | None = None) -> dict[str, Any]:
    """The `results` row of a RunResult: its flat fields and run-level figures;
    `imported_from` the export it was imported from (None: measured here)."""
    energy_j = steady_energy_j(result.windows)
    output_tokens = (sum(lp.output_tokens for lp in result.load_points)
                     if result.load_points else None)
    # J/token over the same interval as the energy: tokens emitted in the steady windows.
    steady = [lp.steady_output_tokens for lp in result.load_points]
    steady_tokens = sum(steady) if steady and None not in steady else None  # type: ignore[arg-type]
    per_token = (energy_j / steady_tokens
                 if energy_j is not None and steady_tokens else None)
    error = result.error
    return {
        "run_id": result.run_id, "recorded_at": utcnow(), "attempt": result.attempt,
        "imported_from": imported_from,
        "status": result.status, "worker": result.worker.name, "host": result.worker.host,
        "gpus_json": [gpu.model_dump(mode="json") for gpu in result.gpus],
        "engine_kind": result.engine.kind, "engine_version": result.engine.version,
        "model_weights": result.engine.model_weights,
        "engine_startup_json": (result.engine.startup.model_dump(mode="json")
                                if result.engine.startup is not None else None),
        "simulated": result.simulated or result.engine.simulated or result.measurement.simulated,
        "energy_sensor": result.measurement.energy_sensor,
        "power_sensor": result.measurement.power_sensor,
        "sample_period_s": result.measurement.sample_period_s,
        "measured_in": result.measurement.measured_in,
        "started_at": result.started_at, "finished_at": result.finished_at,
        "duration_s": result.duration_s, "energy_j": energy_j, "output_tokens": output_tokens,
        "steady_output_tokens": steady_tokens, "energy_per_output_token_j": per_token,
        "error_kind": error.kind if error else None,
        "error_message": error.message if error else None,
        "log_tail": list(error.log_tail) if error and error.log_tail else None,
        **validity_columns(result.validity),
        "preflight_json": (result.preflight.model_dump(mode="json")
                           if result.preflight is not None else None),
        "cooled": result.preflight.cooled if result.preflight is not None else None,
        "idle_power_w": result.idle.idle_power_w if result.idle is not None else None,
        "idle_ctx_power_w": result.idle.idle_ctx_power_w if result.idle is not None else None,
        **host_columns(result.host_energy),
        "energy_sources_json": [source.model_dump(mode="json") for source
                                in result.measurement.energy_sources] or None,
    }


def validity_columns(validity: Validity | None) -> dict[str, Any]:
    """The `results` columns of a Validity (all null without one)."""
    if validity is None:
        return {"valid": None, "validity_json": None, "invalid_reasons": None}
    failed = [check.name for check in validity.checks if not check.passed]
    return {
        "valid": validity.valid,
        "validity_json": [check.model_dump(mode="json") for check in validity.checks],
        # Null when valid; an invalid run names its failed checks ("" if it names none).
        "invalid_reasons": None if validity.valid else ",".join(failed),
    }


def host_columns(host: HostEnergy | None) -> dict[str, Any]:
    """The `results` columns of a HostEnergy (all null without one)."""
    return {column: getattr(host, field) if host is not None else None
            for field, column in HOST_COLUMNS.items()}


def load_point_row(run_id: str, lp: LoadPointResult) -> dict[str, Any]:
    """The `load_points` row of a LoadPointResult: its flat figures."""
    return {"run_id": run_id, "idx": lp.index, **flat_values(lp, LOAD_POINT_COLUMNS),
            "notes": list(lp.notes) or None}


def window_row(run_id: str, window: EnergyWindow) -> dict[str, Any]:
    """The `energy_windows` row of an EnergyWindow."""
    row = {"run_id": run_id, **window.model_dump()}
    row["sources"] = row["sources"] or None      # NULL: the run read no extra source
    return row


def trace_rows(run_id: str, trace: PowerTrace) -> list[dict[str, Any]]:
    """The `power_traces` rows of a PowerTrace, one per GPU, series packed."""
    if len(trace.power_w) != len(trace.gpu_uuids):
        raise ValueError(f"run {run_id}: power trace has {len(trace.power_w)} series for "
                         f"{len(trace.gpu_uuids)} GPUs")
    t_s = pack_f64(trace.t_s)
    rows = [{"run_id": run_id, "gpu_index": index, "gpu_uuid": uuid, "sensor": trace.sensor,
             "sample_period_s": trace.sample_period_s, "n_samples": len(trace.t_s),
             "t_s": t_s, "power_w": pack_f32(series)}
            for index, (uuid, series) in enumerate(zip(trace.gpu_uuids, trace.power_w))]
    for name, pack, _ in TRACE_SERIES:
        per_gpu = getattr(trace, name)
        if per_gpu is not None and len(per_gpu) != len(rows):
            raise ValueError(f"run {run_id}: power trace has {len(per_gpu)} {name} series "
                             f"for {len(rows)} GPUs")
        for index, row in enumerate(rows):
            # b"" keeps a series without samples apart from no series at all (NULL).
            row[name] = None if per_gpu is None else pack(per_gpu[index]) or b""
    return rows


def request_row(run_id: str, request: RequestRecord) -> dict[str, Any]:
    """The `requests` row of a RequestRecord, inter-token gaps packed."""
    return {
        "run_id": run_id, "load_point": request.load_point, "idx": request.index,
        "scheduled_s": request.scheduled_s, "sent_s": request.sent_s, "ttft_s": request.ttft_s,
        "e2e_s": request.e2e_s, "itl_s": pack_f32(request.itl_s),
        "input_tokens": request.input_tokens, "output_tokens": request.output_tokens,
        "ok": request.ok, "error": request.error,
    }


# ------------------------------------------------------------------ reading


def request_record(row: Any) -> RequestRecord:
    """A `requests` row back into its RequestRecord."""
    return RequestRecord(
        load_point=row["load_point"], index=row["idx"], scheduled_s=row["scheduled_s"],
        sent_s=row["sent_s"], ttft_s=row["ttft_s"], e2e_s=row["e2e_s"],
        itl_s=unpack_f32(row["itl_s"]), input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"], ok=row["ok"], error=row["error"],
    )


def load_point_record(row: Any) -> LoadPointResult:
    """A `load_points` row back into the LoadPointResult it was made from."""
    return LoadPointResult(index=row["idx"], **nested_values(row, LOAD_POINT_COLUMNS),
                           notes=row["notes"] or [])


def trace_record(rows: Sequence[Any]) -> PowerTrace:
    """A run's `power_traces` rows (by GPU index, at least one) back into its
    PowerTrace: every series, missing samples as None."""
    first = rows[0]
    series: dict[str, Any] = {}
    for name, _, unpack in TRACE_SERIES:
        # NULL on every GPU: the run had no such series (b"" is one without samples).
        if any(row[name] is not None for row in rows):
            series[name] = [unpack(row[name]) for row in rows]
    return PowerTrace(
        sensor=first["sensor"], sample_period_s=first["sample_period_s"],
        gpu_uuids=[row["gpu_uuid"] for row in rows], t_s=unpack_f64(first["t_s"]),
        power_w=[unpack_f32(row["power_w"], nan_as_none=True) for row in rows],
        **series,
    )


def result_record(row: Any, windows: Sequence[Any]) -> dict[str, Any]:
    """result_for's dict from a `results` row and the run's `energy_windows` rows."""
    out = {key: value for key, value in row.items()
           if key not in ("gpus_json", "validity_json", "preflight_json", "log_tail",
                          "energy_sources_json", "engine_startup_json")}
    out["engine_startup"] = (EngineStartup.model_validate(row["engine_startup_json"])
                             if row["engine_startup_json"] is not None else None)
    out["energy_sources"] = [EnergySourceInfo.model_validate(source)
                             for source in row["energy_sources_json"] or []]
    out["gpus"] = [GpuInfo.model_validate(gpu) for gpu in row["gpus_json"] or []]
    out["error"] = (ErrorInfo(kind=row["error_kind"], message=row["error_message"] or "",
                              log_tail=row["log_tail"] or [])
                    if row["error_kind"] is not None else None)
    out["validity"] = (Validity(valid=row["valid"], checks=[
                           ValidityCheck.model_validate(check)
                           for check in row["validity_json"] or []])
                       if row["valid"] is not None else None)
    out["preflight"] = (Preflight.model_validate(row["preflight_json"])
                        if row["preflight_json"] is not None else None)
    idle = (row["idle_power_w"], row["idle_ctx_power_w"])
    out["idle"] = (IdleBaseline(idle_power_w=idle[0], idle_ctx_power_w=idle[1])
                   if idle != (None, None) else None)
    out["host_energy"] = (HostEnergy(**{field: row[column]
                                        for field, column in HOST_COLUMNS.items()})
                          if row["host_tracker"] is not None else None)
    out["windows"] = [EnergyWindow.model_validate(
                          {**{k: v for k, v in window.items() if k not in ("id", "run_id")},
                           "sources": window["sources"] or {}})     # NULL: none read
                      for window in windows]
    return out


def tuning_columns(preflight: dict[str, Any] | None) -> dict[str, Any]:
    """What the worker applied of a run's power limit / SM clock lock, from its
    preflight's tuning records (one per GPU): the lowest read back over the GPUs
    (per GPU, not summed: the cap that binds on a multi-GPU run; a GPU that read
    none back is not counted), and the refusals as "UUID: words", "; "-joined.
    All null where nothing was set (or no preflight was recorded)."""
    tuning = [GpuTuning.model_validate(t) for t in (preflight or {}).get("tuning") or []]

    def lowest(values: Iterable[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return min(known) if known else None

    column, field = TUNING_REFUSAL_FIELD
    refused = [f"{t.uuid}: {getattr(t, field)}" for t in tuning if getattr(t, field)]
    row: dict[str, Any] = {column: "; ".join(refused) or None}
    row.update({name: lowest(getattr(t, field) for t in tuning)
                for name, field in TUNING_READ_BACK_FIELDS.items()})
    return row


def result_dict(row: Any) -> dict[str, Any]:
    """result_rows' dict of one joined (run, result, load point) row."""
    has_result = row["result_run_id"] is not None
    gpus = row["gpus_json"] or []
    spec = json.loads(row["spec_json"])
    return {
        "run_id": row["id"], "sweep": row["sweep"], "repetition": row["repetition"],
        "model": row["model_id"], "backend": row["backend"], "gpu_model": row["gpu_model"],
        "gpu_count": row["gpu_count"],
        # the run's requested GPU tuning (None: the sweep set none); what was applied
        # is further on (tuning_columns)
        "power_limit_w": spec["hardware"].get("power_limit_w"),
        "sm_clock_mhz": spec["hardware"].get("sm_clock_mhz"),
        "engine": row["engine_kind"], "engine_version": row["engine_version"],
        # the engine's own arguments (batch_size, max_num_seqs...): what tells apart
        # runs that differ only there
        "engine_args": spec["engine"]["args"],
        "scenario": row["scenario_name"],
        "scenario_kind": row["scenario_kind"], "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"], "decoding": row["decoding"],
        "status": row["status"], "attempts": row["attempts"],
        "worker": row["result_worker"] if has_result else row["worker"],
        "gpu_names": [gpu["name"] for gpu in gpus] or None,
        "gpu_uuids": [gpu["uuid"] for gpu in gpus] if gpus else row["gpu_uuids"],
        "simulated": bool(row["simulated"] or row["result_simulated"]),
        "load_point": row["lp_idx"], "load_kind": row["lp_kind"],
        "load_value": row["lp_value"],
        **{figure: row[f"lp_{figure}"] for figure in RESULT_POINT_FIGURES},
        "notes": row["lp_notes"],
        "energy_sensor": row["energy_sensor"],
        "started_at": row["result_started_at"], "finished_at": row["result_finished_at"],
        "duration_s": row["result_duration_s"], "error": row["error"],
        **{name: row[name] for name in RESULT_ROW_COLUMNS},
        **tuning_columns(row["preflight_json"]),
    }



def sortable(value: Any) -> tuple[int, Any]:
    """A key that orders an engine argument's or tuning's values the way a reader
    expects: absent first, numbers by value (batch 1, 8, 64 — not "1", "64", "8"),
    anything else by its JSON text."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


def configuration_order(args: dict[str, Any], power_limit_w: Any, sm_clock_mhz: Any,
                        ) -> tuple[Any, ...]:
    """Where a run's configuration sorts among its sweep's by the parts that live in
    spec_json (the engine's arguments, the GPU tuning), so that repetitions of one
    configuration stay together."""
    return (tuple((name, sortable(args[name])) for name in sorted(args)),
            sortable(power_limit_w), sortable(sm_clock_mhz))
