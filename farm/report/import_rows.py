"""An export's rows read back as the farm's records: a run's result, its requests
and its power timeline, each bad value refused with the file, row and field
that hold it (`farmctl import`, farm/report/importer.py).

Values no load generator or sampler writes (NaN, a negative latency or token
count, a reading float32 cannot hold) are refused here, as the rows are read;
what the figures derived from them must satisfy is farm/report/recheck.py's.
"""

from __future__ import annotations

import json
import math
from array import array
from typing import Any

from pydantic import ValidationError

from farm.report.dataset import DatasetError
from farm.report.export import TRACE_SERIES
from farm.report.recheck import Where
from farm_contract.records import PowerTrace, RequestRecord, RunResult

FLOAT32_MAX = 3.4028234663852886e38     # the store keeps timeline readings as float32


def first_error(exc: ValidationError) -> str:
    """A validation error's first problem, located by its field path."""
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"


def is_count(value: Any) -> bool:
    """A whole number ≥ 0 (JSON's true is none)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def shown(value: Any) -> str:
    """A value as a refusal quotes it, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_result(run: dict[str, Any], where: Where, requests: list[RequestRecord],
               sample_rows: list[dict[str, Any]]) -> RunResult:
    """A runs-table row's result with its requests and its timeline rebuilt from rows."""
    run_id = run["run_id"]
    at = f"{where.runs_file} row {where.runs_row} (run {run_id})"
    try:
        result = RunResult.model_validate_json(run["result_json"])
    except ValidationError as exc:
        raise DatasetError(f"{at}, result_json {first_error(exc)}") from None
    if result.run_id != run_id:
        raise DatasetError(f"{at}, result_json run_id: the result of run {result.run_id}")
    trace = _trace(run_id, run["trace_json"], sample_rows, where)
    return result.model_copy(update={"requests": requests, "trace": trace})


# Latencies no request has negative; scheduled_s and sent_s are offsets.
REQUEST_TIMES = {"scheduled_s": False, "sent_s": False, "ttft_s": True, "e2e_s": True}


def request_records(run_id: str, rows: list[dict[str, Any]], file: str,
                    first_row: int) -> list[RequestRecord]:
    """A run's request rows as RequestRecords (`first_row`: the first one's row)."""
    return [_request(r, f"{file} row {first_row + i} (run {run_id})")
            for i, r in enumerate(rows)]


def _request(r: dict[str, Any], at: str) -> RequestRecord:
    """A request row as a RequestRecord; DatasetError naming the row and field."""
    for field, non_negative in REQUEST_TIMES.items():
        value = r[field]
        if value is not None and (not _finite(value) or (non_negative and value < 0)):
            raise DatasetError(f"{at} {field} = {shown(value)}: not a time in seconds"
                               f"{' (≥ 0)' if non_negative else ''}")
    for field in ("input_tokens", "output_tokens"):
        if r[field] is not None and not is_count(r[field]):
            raise DatasetError(f"{at} {field} = {shown(r[field])}: not a number of tokens")
    try:
        return RequestRecord(load_point=r["load_point"], index=r["index"],
                             scheduled_s=r["scheduled_s"], sent_s=r["sent_s"],
                             ttft_s=r["ttft_s"], e2e_s=r["e2e_s"],
                             itl_s=_gaps(r["itl_s"], at), input_tokens=r["input_tokens"],
                             output_tokens=r["output_tokens"], ok=r["ok"], error=r["error"])
    except ValidationError as exc:
        raise DatasetError(f"{at} {first_error(exc)}") from None


def _gaps(itl_s: Any, at: str) -> list[float]:
    """The inter-token gaps as stored; each a time ≥ 0 that float32 holds."""
    if itl_s is None:
        return []
    try:
        if not isinstance(itl_s, list):
            raise TypeError
        gaps = _as_stored(itl_s)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{at} itl_s = {shown(itl_s)}: not a list of gaps in seconds"
                           ) from None
    # sum() and min() run at C speed; a gap inf or NaN makes the sum so.
    if gaps and not (math.isfinite(sum(gaps)) and min(gaps) >= 0):
        i = next(i for i, gap in enumerate(gaps) if not (math.isfinite(gap) and gap >= 0))
        raise DatasetError(f"{at} itl_s[{i}] = {shown(itl_s[i])}: not a gap in "
                           "seconds (≥ 0)")
    return gaps


def _as_stored(itl_s: list[float]) -> list[float]:
    """Inter-token gaps as the store keeps them (float32), so the figures derived on
    import are those the stored gaps give (the text formats write float32's shortest
    decimal, which reads back as a different double)."""
    return array("f", itl_s).tolist()


TRACE_KEYS = ("sensor", "sample_period_s", "gpu_uuids", "n_samples", "series")


def _trace(run_id: str, header_json: str | None, rows: list[dict[str, Any]],
           where: Where) -> PowerTrace | None:
    at = f"{where.runs_file} row {where.runs_row} (run {run_id}), trace_json"
    if header_json is None:
        if rows:
            raise DatasetError(f"{at}: null, but the run has timeline samples")
        return None
    header = _trace_header(header_json, at)
    uuids, n, present = header["gpu_uuids"], header["n_samples"], header["series"]
    if len(rows) != n * len(uuids):
        raise DatasetError(f"{at}: {len(rows)} timeline samples, trace_json says "
                           f"{n} × {len(uuids)} GPUs")
    for i, r in enumerate(rows):
        _check_sample(r, present, f"{where.timelines_file} row {where.timelines_row + i} "
                                  f"(run {run_id})")
    rows = sorted(rows, key=lambda r: (r["gpu_index"], r["sample"]))
    per_gpu = [rows[i * n:(i + 1) * n] for i in range(len(uuids))]
    for index, samples in enumerate(per_gpu):
        if [(r["gpu_index"], r["sample"]) for r in samples] != [(index, s) for s in range(n)]:
            raise DatasetError(f"run {run_id}: timeline samples of GPU {index} are not "
                               f"0 … {n - 1}")
    # float32 series as the store keeps them (JSON Lines gives the shortest decimal back)
    series = {name: [[r[name] if name == "throttle_reasons" or r[name] is None
                      else _as_stored([r[name]])[0] for r in samples] for samples in per_gpu]
              for name in TRACE_SERIES if name in present}
    series.setdefault("power_w", [[None] * n for _ in uuids])
    try:
        return PowerTrace(sensor=header["sensor"], sample_period_s=header["sample_period_s"],
                          gpu_uuids=uuids, t_s=[r["t_s"] for r in per_gpu[0]] if uuids else [],
                          **series)
    except ValidationError as exc:
        raise DatasetError(f"{at} {first_error(exc)}") from None


def json_object(text: Any, keys: tuple[str, ...], at: str) -> dict[str, Any]:
    """`text` read as a JSON object holding `keys`; DatasetError naming `at` otherwise."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise DatasetError(f"{at}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{at}: not a JSON object")
    missing = [key for key in keys if key not in value]
    if missing:
        raise DatasetError(f"{at}: no {', '.join(missing)}")
    return value


def _trace_header(header_json: Any, at: str) -> dict[str, Any]:
    """trace_json read, with the keys the import needs, of the types it needs."""
    header = json_object(header_json, TRACE_KEYS, at)
    uuids, series = header["gpu_uuids"], header["series"]
    if not isinstance(uuids, list) or not all(isinstance(u, str) for u in uuids):
        raise DatasetError(f"{at} gpu_uuids = {shown(uuids)}: not a list of GPU UUIDs")
    if not is_count(header["n_samples"]):
        raise DatasetError(f"{at} n_samples = {shown(header['n_samples'])}: not a number "
                           "of samples")
    if not isinstance(series, list) or not all(isinstance(s, str) for s in series):
        raise DatasetError(f"{at} series = {shown(series)}: not a list of series names")
    return header


def _check_sample(r: dict[str, Any], present: list[str], at: str) -> None:
    """A timeline row's index, time and readings of the types a trace holds."""
    for field in ("gpu_index", "sample"):
        if not is_count(r[field]):
            raise DatasetError(f"{at} {field} = {shown(r[field])}: not an index")
    if not _finite(r["t_s"]):
        raise DatasetError(f"{at} t_s = {shown(r['t_s'])}: not a time in seconds")
    for name in TRACE_SERIES:
        value = r[name]
        if name not in present or value is None:
            continue
        if name == "throttle_reasons" and not is_count(value):
            raise DatasetError(f"{at} {name} = {shown(value)}: not a bitmask")
        if name != "throttle_reasons" and not (_finite(value) and abs(value) <= FLOAT32_MAX):
            raise DatasetError(f"{at} {name} = {shown(value)}: not a finite number")
