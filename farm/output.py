"""What `farmctl` prints: tables (rich), CSV and JSON. No queries, no logic.

Missing figures print as "—" in tables and null in JSON/CSV-empty, never 0.
Simulated figures carry a visible "SIMULATED" label in every format.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click

SIM_BANNER = "SIMULATED — figures come from the farm's performance model, not from hardware"


def _console():
    from rich.console import Console

    # Piped output (CSV-like use, CI logs) keeps wide tables on one line each.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 220)


def _table(title: str | None = None, caption: str | None = None):
    from rich.table import Table

    return Table(title=title, caption=caption, title_justify="left", caption_justify="left")


def fmt_value(value: Any, digits: int = 3) -> str:
    """3 significant digits, thousands separated above 100; None (or NaN) → "—", never 0."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def print_plan(name: str, total: int, per_queue: Counter[str], header: str) -> None:
    """The runs a sweep would enqueue (a dry run): `total` and a table of runs per queue."""
    click.echo(f"{name}: {header}, {total} run(s)")
    table = _table()
    table.add_column("queue")
    table.add_column("runs", justify="right")
    for queue, count in sorted(per_queue.items()):
        table.add_row(queue, str(count))
    _console().print(table)


def print_enqueue(name: str, report) -> None:
    """What an enqueue did: runs enqueued now and runs already known, per queue and in all."""
    skipped = report.total_runs - report.new_runs
    click.echo(f"{name} (sweep {report.sweep_id}): {report.new_runs} run(s) enqueued, "
               f"{skipped} already known")
    table = _table()
    table.add_column("queue")
    table.add_column("enqueued now", justify="right")
    table.add_column("in sweep", justify="right")
    for queue, count in sorted(report.per_queue.items()):
        table.add_row(queue, str(report.new_per_queue.get(queue, 0)), str(count))
    _console().print(table)


STATUS_ORDER = ("queued", "running", "succeeded", "failed", "cancelled")


def _status_table(rows, first: str):
    grid: dict[str, Counter[str]] = {}
    for key, status, count in rows:
        grid.setdefault(key, Counter())[status] += count
    table = _table()
    table.add_column(first)
    for status in STATUS_ORDER:
        table.add_column(status, justify="right")
    table.add_column("done", justify="right")
    unfinished = 0
    for key, counts in sorted(grid.items()):
        total = sum(counts.values())
        finished = sum(counts[s] for s in ("succeeded", "failed", "cancelled"))
        unfinished += total - finished
        table.add_row(key, *[str(counts.get(s, 0)) for s in STATUS_ORDER],
                      f"{100 * finished / total:.0f}%" if total else "—")
    return table, unfinished, bool(grid)


def print_status(fetch: Callable[[], list[tuple[str, str, int]]], first: str, watch: bool,
                 interval_s: float) -> None:
    """Counts by `first` (sweep or queue) and status; `fetch` reads them."""
    console = _console()
    if not watch:
        table, _, any_rows = _status_table(fetch(), first)
        console.print(table if any_rows else "no runs in the store yet")
        return
    from rich.live import Live

    with Live(console=console, refresh_per_second=4) as live:
        while True:
            table, unfinished, _ = _status_table(fetch(), first)
            live.update(table)
            if unfinished == 0:
                return
            time.sleep(interval_s)


def print_workers(workers: Sequence[Mapping[str, Any]], as_json: bool) -> None:
    """The live workers, one row per GPU (what it runs or "idle"), or their JSON."""
    if as_json:
        click.echo(json.dumps(list(workers), indent=2))
        return
    if not workers:
        click.echo("no live workers")
        return
    table = _table("live workers")
    for col in ("worker", "backend", "GPU", "model", "memory MiB", "driver", "UUID", "running"):
        table.add_column(col)
    for w in workers:
        busy = w.get("busy", {})
        for gpu in w.get("gpus", []):
            backend = w.get("backend")
            table.add_row(w["name"], "SIMULATED" if backend == "sim" else backend,
                          str(gpu["index"]), gpu["model"], fmt_value(gpu.get("memory_mib")),
                          fmt_value(gpu.get("driver_version")), gpu["uuid"],
                          busy.get(gpu["uuid"], "idle"))
    _console().print(table)


def print_sweeps(sweeps) -> None:
    """The sweeps in the store: id, name, creation time and whether SIMULATED."""
    if not sweeps:
        click.echo("no sweeps in the store yet")
        return
    table = _table("sweeps")
    for col in ("id", "name", "created", "simulated"):
        table.add_column(col)
    for s in sweeps:
        table.add_row(s.id, s.name, s.created_at.strftime("%Y-%m-%d %H:%M"),
                      "SIMULATED" if s.simulated else "no")
    _console().print(table)


# -------------------------------------------------------------------- results

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "model"), ("gpu_model", "GPU"), ("gpu_count", "×"), ("engine", "engine"),
    ("scenario", "scenario"), ("load", "load"), ("input_tokens", "in"),
    ("output_tokens", "out"), ("decoding", "decoding"), ("repetition", "rep"),
    ("status", "status"), ("request_throughput_rps", "req/s"),
    ("output_throughput_tps", "tok/s"), ("ttft_p50_ms", "TTFT p50 ms"),
    ("tpot_p50_ms", "TPOT p50 ms"), ("energy_per_output_token_j", "J/token"),
    ("energy_per_request_j", "J/request"), ("energy_per_output_token_net_j", "net J/token"),
    ("avg_power_w", "W"), ("valid", "valid"),
)
# Server load points' goodput under the scenario's SLO, shown after "TPOT p50 ms"
# when any row has one (a batch-only sweep keeps the narrower table).
GOODPUT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("goodput_rps", "good req/s"), ("slo_attainment", "SLO %"),
)


def _table_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    if not any(r.get(key) is not None for r in rows for key, _ in GOODPUT_COLUMNS):
        return TABLE_COLUMNS
    at = [key for key, _ in TABLE_COLUMNS].index("tpot_p50_ms") + 1
    return TABLE_COLUMNS[:at] + GOODPUT_COLUMNS + TABLE_COLUMNS[at:]


def _percent(fraction: Any) -> str:
    """0.973 → "97.3"; never "100.0" unless every request was good."""
    if fraction is None:
        return "—"
    percent = 100.0 * fraction
    text = f"{percent:.1f}"
    return "99.9" if text == "100.0" and fraction < 1 else text


def _load_label(row: Mapping[str, Any]) -> str:
    kind, value = row.get("load_kind"), row.get("load_value")
    if kind is None:
        return "—"
    if kind == "concurrency":
        return f"c={value:g}"
    if kind == "request_rate":
        return f"{value:g} req/s"
    return f"batch {value:g}"


def _varying_engine_args(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Engine arguments whose value (or absence) differs between rows; the others
    say nothing about a row."""
    args = [row.get("engine_args") or {} for row in rows]
    names = {key for a in args for key in a}
    return sorted(key for key in names if len(
        {json.dumps(a[key], sort_keys=True) if key in a else None for a in args}) > 1)


def _engine_label(row: Mapping[str, Any], varying: Sequence[str]) -> str:
    """"hf batch_size=8": the engine and those of its arguments that vary in the table."""
    args = row.get("engine_args") or {}
    shown = [f"{key}={json.dumps(args[key]) if not isinstance(args[key], str) else args[key]}"
             for key in varying if key in args]
    return " ".join([str(row.get("engine") or "—"), *shown])


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""                      # missing, never 0
    if isinstance(value, (list, dict)):
        return json.dumps(value)       # lists of GPU names/UUIDs stay machine-readable
    return _jsonable(value)


def format_results(rows: list[dict[str, Any]], fmt: str, title: str,
                   simulated: bool | None = None) -> str:
    """`simulated` labels the output; by default, whether any row is simulated."""
    if simulated is None:
        simulated = any(r.get("simulated") for r in rows)
    if fmt == "json":
        return json.dumps({"sweep": title, "simulated": simulated,
                           "rows": [{k: _jsonable(v) for k, v in r.items()} for r in rows]},
                          indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        return buffer.getvalue()
    table = _table()
    columns = _table_columns(rows)
    varying = _varying_engine_args(rows)
    for _, header in columns:
        table.add_column(header, justify="right" if header[0].isupper() or "/" in header
                         else "left")
    for row in rows:
        values = []
        for key, _ in columns:
            if key == "slo_attainment":
                values.append(_percent(row.get(key)))
            elif key == "load":
                values.append(_load_label(row))
            elif key == "engine":
                values.append(_engine_label(row, varying))
            elif key == "gpu_model" and row.get("simulated"):
                values.append(f"{row.get(key)} (sim)")
            elif key == "valid" and row.get("valid") is False:
                values.append(f"no: {row.get('invalid_reasons')}")
            else:
                values.append(fmt_value(row.get(key)))
        table.add_row(*values)
    console = _console()
    with console.capture() as capture:
        console.print(table)
    head = f"{title}: {len(rows)} row(s)\n"
    banner = f"{SIM_BANNER}\n" if simulated else ""
    # The label goes above and below: a long table must not hide what it is.
    return banner + head + capture.get() + banner
