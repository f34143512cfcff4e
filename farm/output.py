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

from farm_contract.runspec import TUNING_FIELDS
from farm_contract.statuses import RUN_STATUSES, TERMINAL_STATUSES

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




def _status_table(rows, first: str):
    grid: dict[str, Counter[str]] = {}
    for key, status, count in rows:
        grid.setdefault(key, Counter())[status] += count
    table = _table()
    table.add_column(first)
    for status in RUN_STATUSES:
        table.add_column(status, justify="right")
    table.add_column("done", justify="right")
    unfinished = 0
    for key, counts in sorted(grid.items()):
        total = sum(counts.values())
        finished = sum(counts[s] for s in TERMINAL_STATUSES)
        unfinished += total - finished
        table.add_row(key, *[str(counts.get(s, 0)) for s in RUN_STATUSES],
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
    for col in ("worker", "backend", "GPU", "model", "memory MiB", "driver", "UUID", "state"):
        table.add_column(col)
    for w in workers:
        busy = w.get("busy", {})
        states = {s["uuid"]: s for s in w.get("gpu_states", [])}
        for gpu in w.get("gpus", []):
            backend = w.get("backend")
            table.add_row(w["name"], "SIMULATED" if backend == "sim" else backend,
                          str(gpu["index"]), gpu["model"], fmt_value(gpu.get("memory_mib")),
                          fmt_value(gpu.get("driver_version")), gpu["uuid"],
                          gpu_state_text(states.get(gpu["uuid"]), busy.get(gpu["uuid"]),
                                         w.get("settle_s")))
    _console().print(table)


def gpu_state_text(state: Mapping[str, Any] | None, running: str | None,
                   settle_s: float | None, now: float | None = None) -> str:
    """A GPU of a worker's advertisement: "free", "free (settling, 12 s of 30 s)",
    "running RUN_ID" or "held by pid N (since 14:02:11)". An advertisement from a
    worker without the tenant watch has no state: "running RUN_ID" or "free"."""
    if state is None:
        return f"running {running}" if running else "free"
    since = state.get("since")
    if state.get("state") == "held":
        pids = ", ".join(str(p) for p in state.get("pids", []))
        when = (f" (since {time.strftime('%H:%M:%S', time.localtime(since))})"
                if since is not None else "")
        return f"held by pid {pids}{when}"
    if state.get("state") == "running":
        return f"running {state.get('run_id') or running}"
    if not state.get("settled", True) and since is not None and settle_s is not None:
        waited = (time.time() if now is None else now) - since
        return f"free (settling, {waited:.0f} s of {settle_s:g} s)"
    return "free"


def print_sweeps(sweeps) -> None:
    """The sweeps in the store: id, name, creation time and whether SIMULATED."""
    if not sweeps:
        click.echo("no sweeps in the store yet")
        return
    table = _table("sweeps")
    for col in ("id", "name", "owner", "priority", "created", "simulated"):
        table.add_column(col, justify="right" if col == "priority" else "left")
    for s in sweeps:
        table.add_row(s.id, s.name, s.owner or "-", str(s.priority),
                      s.created_at.strftime("%Y-%m-%d %H:%M"),
                      "SIMULATED" if s.simulated else "no")
    _console().print(table)


def print_owners(rows) -> None:
    """`farmctl status`'s per-owner table (farm.store.counts.owner_counts): runs
    queued (of which waiting for dispatch: in the store, on no broker queue yet),
    running, succeeded, failed, and GPU-hours in the fair-share window."""
    if not rows:
        return
    table = _table("owners")
    table.add_column("owner")
    for col in ("sweeps", "queued", "(not dispatched)", "running", "succeeded", "failed",
                "GPU-h (window)"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["owner"] or "-", str(r["sweeps"]), str(r["queued"]),
                      str(r["waiting"]), str(r["running"]), str(r["succeeded"]),
                      str(r["failed"]), f"{r['gpu_hours']:.2f}")
    _console().print(table)


# -------------------------------------------------------------------- results

# The results table's own columns (the row keys they show; --columns names),
# in display order, with their rank: lower is kept longer on a narrow terminal.
# Every other scalar field of the rows is a column too (--wide, --columns), its
# header from its name and the unit its figure was declared with.
# A figure's header (None here) is the one its record field declares (`figure()`,
# farm_contract/records.py), so the unit reads the same in every table.
_RESULT_COLUMNS: tuple[tuple[str, str | None, str | None, bool, int], ...] = (
    # name, header, header-line label, numeric, rank
    ("model", "model", None, False, 14),
    ("gpu_model", "GPU", None, False, 1),
    ("gpu_count", "×", "GPUs per run", True, 9),
    # the run's requested GPU tuning: what tells apart the runs of a power-limit sweep
    ("power_limit_w", "power limit", None, False, 2),
    ("sm_clock_mhz", "SM clock", None, False, 2),
    ("engine", "engine", None, False, 15),
    ("scenario", "scenario", None, False, 4),
    ("load", "load", None, False, 2),
    ("input_tokens", "in", "input tokens", True, 10),
    ("output_tokens", "out", "output tokens", True, 13),
    ("decoding", "decoding", None, False, 17),
    ("repetition", "rep", "repetition", True, 18),
    ("status", "status", None, False, 16),
    ("passes", "passes", None, True, 21),
    ("request_throughput_rps", None, None, True, 40),
    ("output_throughput_tps", None, None, True, 8),
    ("ttft_p50_ms", None, None, True, 11),
    ("tpot_p50_ms", None, None, True, 12),
    ("goodput_rps", None, None, True, 20),
    ("slo_attainment", None, None, True, 19),
    ("energy_per_output_token_j", None, None, True, 3),
    ("energy_per_output_token_net_j", None, None, True, 5),
    # J per total (input + output) token beside J per output token (InferenceX's pair)
    ("energy_per_total_token_j", None, None, True, 6),
    ("energy_per_total_token_net_j", None, None, True, 22),
    ("energy_per_request_j", None, None, True, 6),
    ("avg_power_w", None, None, True, 41),
    ("valid", "valid", None, False, 7),
    # provenance of an imported result (farmctl import): the export it came from
    ("imported_from", "imported from", None, False, 30),
)
# What a row was run with (the rest is what was measured): the line above the
# table takes those the same in every row. (input_tokens/output_tokens here are
# the run's token bins, not the load point's totals of the same names.)
_SETUP_COLUMNS = ("model", "gpu_model", "gpu_count", "power_limit_w", "sm_clock_mhz", "engine",
                  "scenario", "load", "input_tokens", "output_tokens", "decoding", "repetition",
                  "status", "valid", "imported_from")
# Setup columns that are no part of a row's configuration: they may be left out for
# width even where they differ (farm.tables never drops one that tells rows apart).
_NOT_IDENTITY = ("repetition", "status", "valid", "imported_from")
_RESULT_DEFAULTS = tuple(name for name, *_ in _RESULT_COLUMNS
                         if name not in ("request_throughput_rps", "avg_power_w"))
# Server load points' goodput: in the default table when any row has it (a
# batch-only sweep keeps the narrower table).
GOODPUT_FIELDS = ("goodput_rps", "slo_attainment")
# The rate sweep's stop rules (workers/ratesweep.py) in words; an unknown rule
# prints as its name.
SATURATION_WORDS = {"achieved_below_offered": "achieved below offered",
                    "throughput_flat": "throughput flat", "ttft_growth": "TTFT growth"}
# Fields the table's own columns show (load = load_kind + load_value, valid =
# valid + invalid_reasons, engine = engine + the arguments that vary).
_SHOWN_BY_OWN = ("load_kind", "load_value", "invalid_reasons", "engine_args")
def _figure_metadata() -> dict[str, Any]:
    """{field: its FlatColumn} of the figures the result rows carry: unit, description,
    label and header as the records declare them (farm_contract.records)."""
    from farm_contract.figures import FlatColumn, default_label, unit_of
    from farm_contract.records import (
        TUNING_READ_BACK_FIELDS,
        TUNING_REFUSAL_FIELD,
        GpuTuning,
        result_figures,
    )

    meta = dict(result_figures())
    # What the worker read back of the tuning (measured, so never hoisted), as its
    # record declares it, over the run's GPUs.
    columns = [(name, field, "lowest GPU") for name, field in TUNING_READ_BACK_FIELDS.items()]
    columns.append((*TUNING_REFUSAL_FIELD, "per GPU"))
    for name, field, over in columns:
        info = GpuTuning.model_fields[field]
        meta[name] = FlatColumn(name, (name,), str, True, unit_of(info),
                                f"{info.description} ({over})", label=default_label(name))
    return meta


def _cell_of(key: str) -> Callable[[Mapping[str, Any]], str]:
    def cell(row: Mapping[str, Any]) -> str:
        value = row.get(key)
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value)) or "—"
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True)
        return fmt_value(_jsonable(value))
    return cell


def result_columns(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Every column the results table can show (farm.tables.Column), in --wide's
    order: its own columns, then the rows' other fields."""
    from farm.tables import Column

    varying = _varying_engine_args(rows)
    special: dict[str, Callable[[Mapping[str, Any]], str]] = {
        "slo_attainment": lambda r: _percent(r.get("slo_attainment")),
        "load": _load_label,
        "power_limit_w": lambda r: setting_text(r.get("power_limit_w"), "W"),
        "sm_clock_mhz": lambda r: setting_text(r.get("sm_clock_mhz"), "MHz"),
        "engine": lambda r: _engine_label(r, varying),
        "gpu_model": _gpu_label,
        "valid": _valid_label,
    }
    meta = _figure_metadata()
    # The setup goes to the header line when constant; measured figures stay.
    columns = [Column(name, header or meta[name].header, special.get(name) or _cell_of(name),
                      numeric, rank, label, hoist=name in _SETUP_COLUMNS,
                      identifies=name not in _NOT_IDENTITY,
                      description="" if name in _SETUP_COLUMNS or name not in meta
                      else meta[name].description)
               for name, header, label, numeric, rank in _RESULT_COLUMNS]
    known = {c.name for c in columns} | set(_SHOWN_BY_OWN)
    fields = list(rows[0]) if rows else list(meta)
    for rank, key in enumerate((k for k in fields if k not in known), start=100):
        figure = meta.get(key)
        numeric = (figure is not None and figure.unit is not None) or (bool(rows) and all(
            isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            for r in rows if r.get(key) is not None))
        columns.append(Column(key, figure.header if figure else key.replace("_", " "),
                              _cell_of(key), numeric, rank,
                              description=figure.description if figure else "",
                              hoist=figure is None))
    return columns


def _gpu_label(row: Mapping[str, Any]) -> str:
    """"sim:l4" for a simulated GPU, as a sweep names it; "l4" for a real one."""
    model = row.get("gpu_model")
    if model is None:
        return "—"
    return f"sim:{model}" if row.get("simulated") else str(model)


def _valid_label(row: Mapping[str, Any]) -> str:
    if row.get("valid") is False:
        return f"no: {row.get('invalid_reasons')}"
    return fmt_value(row.get("valid"))


def _percent(fraction: Any) -> str:
    """0.973 → "97.3"; never "100.0" unless every request was good."""
    if fraction is None:
        return "—"
    percent = 100.0 * fraction
    text = f"{percent:.1f}"
    return "99.9" if text == "100.0" and fraction < 1 else text


def load_label(kind: str | None, value: float | None) -> str:
    """A load point as a label: "c=8", "2 req/s", "256 prompts" (a batch load point:
    the prompts given at once; an engine's own batch_size is an engine argument);
    "—" when there is none."""
    if kind is None or value is None:
        return "—"
    if kind == "concurrency":
        return f"c={value:g}"
    if kind == "request_rate":
        return f"{value:g} req/s"
    return f"{value:g} prompts"


def saturation_words(rule: str) -> str:
    """A rate sweep's stop rule in words ("throughput flat")."""
    return SATURATION_WORDS.get(rule, rule)


def _load_label(row: Mapping[str, Any]) -> str:
    """The load, and for a rate sweep's point whether it is the knee or which stop
    rule it met: "4 req/s (knee)", "8 req/s (saturated: throughput flat)"."""
    if row.get("engine") == "measure":     # `farmctl measure`: the load is the command's
        return "the command"
    label = load_label(row.get("load_kind"), row.get("load_value"))
    if row.get("saturation"):
        return f"{label} (saturated: {saturation_words(row['saturation'])})"
    if row.get("knee"):
        return f"{label} (knee)"
    return label


def setting_text(value: float | str | None, unit: str) -> str:
    """A GPU setting as a sweep gives it: "300 W", "1200 MHz", "default" (the GPU's
    own, asked for); "—" where none was set."""
    if value is None:
        return "—"
    return value if isinstance(value, str) else f"{value:g} {unit}"


def power_limit_label(watts: float | str | None) -> str:
    """"300 W cap"; "default power limit" where none was set or the default asked for."""
    return "default power limit" if watts is None or isinstance(watts, str) \
        else f"{watts:g} W cap"


def sm_clock_label(mhz: float | str | None) -> str:
    """"SM 1200 MHz"; "default SM clock" where none was locked or the default asked for."""
    return "default SM clock" if mhz is None or isinstance(mhz, str) else f"SM {mhz:g} MHz"


def tuning_label(power_limit_w: float | str | None, sm_clock_mhz: float | str | None) -> str:
    """The GPU tuning a run asked for: "300 W cap", "SM 1200 MHz", both joined by " · ";
    "" when it asked for none."""
    parts = []
    if power_limit_w is not None:
        parts.append(power_limit_label(power_limit_w))
    if sm_clock_mhz is not None:
        parts.append(sm_clock_label(sm_clock_mhz))
    return " · ".join(parts)


def _default_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The default table's columns: goodput where a server point has it, the GPU
    tuning where a run set it, passes where a batch took more than one pass, the
    provenance where a result was imported; a sweep without them keeps the
    narrower table."""
    def some(keys: Sequence[str], test: Callable[[Any], bool] = lambda v: v is not None) -> bool:
        return any(test(row.get(key)) for row in rows for key in keys)

    hidden = set()
    if not some(GOODPUT_FIELDS):
        hidden |= set(GOODPUT_FIELDS)
    if not some(TUNING_FIELDS):
        hidden |= set(TUNING_FIELDS)
    if not some(("passes",), lambda v: v is not None and v > 1):
        hidden.add("passes")
    if not some(("imported_from",)):       # every result measured here
        hidden.add("imported_from")
    return [name for name in _RESULT_DEFAULTS if name not in hidden]


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
                   simulated: bool | None = None, *, columns: str | None = None,
                   wide: bool = False, width: int | str | None = "auto") -> str:
    """`simulated` labels the output; by default, whether any row is simulated.

    The table shows `columns` (comma-separated names), every column (`wide`) or
    the default ones, fitted to `width` ("auto": the terminal's when stdout is
    one; None: as wide as it needs, for files and pipes). CSV and JSON always
    carry every field.
    """
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
    from farm.tables import choose_columns, render_table, terminal_width

    catalogue = result_columns(rows)
    defaults = _default_columns(rows)
    chosen = choose_columns(catalogue, defaults, columns, wide)
    body = render_table(chosen, rows, terminal_width() if width == "auto" else width,
                        hint="--columns or a pipe shows them")
    head = f"{title}: {len(rows)} row(s)\n"
    banner = f"{SIM_BANNER}\n" if simulated else ""
    # The label goes above and below: a long table must not hide what it is.
    return banner + head + body + banner

