"""`farmctl`: the command line. Thin: parse, call one function, print, exit.

Exit codes are named in `ExitCode`; errors print one clear message, never a
traceback (FARM_DEBUG=1 shows it).
"""

from __future__ import annotations

import os
import sys
from enum import IntEnum
from functools import wraps
from pathlib import Path

import click

from farm import output


class ExitCode(IntEnum):
    OK = 0
    RUNS_FAILED = 1          # everything ran, some runs failed
    INVALID_INPUT = 2        # bad sweep file or arguments (click uses 2 too)
    STORE_ERROR = 3          # database unreachable or schema missing
    BROKER_ERROR = 4         # Redis unreachable
    NOT_FOUND = 5            # no such sweep
    NO_HARDWARE = 6          # no GPU (and no --sim) for a worker
    INTERNAL = 70            # a bug or an environment failure (EX_SOFTWARE)


class FarmCliError(click.ClickException):
    def __init__(self, message: str, code: ExitCode):
        super().__init__(message)
        self.exit_code = int(code)


def _friendly_errors(fn):
    """Turn known failures into one-line errors with a named exit code."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("FARM_DEBUG"):
                raise
            raise _classify(exc) from None

    return wrapper


def _classify(exc: Exception) -> FarmCliError:
    name = type(exc).__name__
    module = type(exc).__module__
    if name == "SpecError":        # by name: importing farm.spec would slow every command
        return FarmCliError(exc.render(), ExitCode.INVALID_INPUT)
    if name == "SettingsError":
        return FarmCliError(str(exc), ExitCode.INVALID_INPUT)
    if name == "SchemaError":
        return FarmCliError(str(exc), ExitCode.STORE_ERROR)
    if module.startswith(("sqlalchemy", "psycopg", "sqlite3")):
        return FarmCliError(f"store unavailable: {str(exc).splitlines()[0]}",
                            ExitCode.STORE_ERROR)
    if name == "BrokerUnavailable":
        return FarmCliError(str(exc), ExitCode.BROKER_ERROR)
    if module.startswith(("redis", "kombu")):
        return FarmCliError(f"broker unavailable: {exc}", ExitCode.BROKER_ERROR)
    if name in ("EmbeddedRedisError", "LocalRunError"):
        return FarmCliError(str(exc), ExitCode.INTERNAL)
    return FarmCliError(f"unexpected {name}: {exc} (FARM_DEBUG=1 shows the traceback)",
                        ExitCode.INTERNAL)


def _store(upgrade: bool = False):
    from farm.settings import load_settings
    from farm.store.repository import Store

    return Store.open(load_settings().db_url, upgrade=upgrade)


def _sweep(store, name_or_id: str):
    sweep = store.find_sweep(name_or_id)
    if sweep is None:
        raise FarmCliError(f"no sweep named or with id {name_or_id!r}", ExitCode.NOT_FOUND)
    return sweep


def _load(path: str, simulate: bool):
    from farm.spec import load_sweep, simulated_copy

    spec, text = load_sweep(path)
    return (simulated_copy(spec), text) if simulate else (spec, text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="farm")
def main() -> None:
    """A distributed benchmark farm for the energy efficiency of LLM inference."""


# ----------------------------------------------------------------- sweep files

SIMULATE = click.option("--simulate", is_flag=True,
                        help="Run every GPU and engine of the sweep simulated "
                             "(sweep name gets a '-sim' suffix; figures are labelled).")


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@_friendly_errors
def validate(sweep_file: str) -> None:
    """Check a sweep file; print how many runs it makes."""
    from farm.sweep import expand, plan

    spec, _ = _load(sweep_file, simulate=False)
    runs = expand(spec)
    output.print_plan(spec.name, len(runs), plan(runs), header="valid")


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan; touch neither Redis nor the store.")
@SIMULATE
@_friendly_errors
def enqueue(sweep_file: str, dry_run: bool, simulate: bool) -> None:
    """Expand a sweep into runs and put the new ones on their GPU queues."""
    from farm import coordinator

    spec, text = _load(sweep_file, simulate)
    if dry_run:
        report = coordinator.dry_run(spec)
        output.print_plan(spec.name, report.total_runs, report.per_queue, header="dry run")
        return
    report = coordinator.enqueue(_store(upgrade=True), spec, text)
    output.print_enqueue(spec.name, report)


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--sim", "sim_specs", multiple=True, metavar="MODEL[xN]",
              help="Start a worker with simulated GPUs, e.g. H100-80GB or L4x2. Repeatable.")
@SIMULATE
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_friendly_errors
def run(sweep_file: str, sim_specs: tuple[str, ...], simulate: bool, quiet: bool) -> None:
    """Everything on this machine: private Redis, SQLite store, recorder, workers."""
    from farm.local import run_locally

    spec, text = _load(sweep_file, simulate)
    code = run_locally(spec, text, list(sim_specs), progress=not quiet)
    sys.exit(int(code))


# -------------------------------------------------------------------- services


@main.command()
@click.option("--sim", "sim_specs", multiple=True, metavar="MODEL[xN]",
              help="Simulated GPUs instead of NVML, e.g. H100-80GBx2. Repeatable.")
@click.option("--gpus", default=None, metavar="0,1,…",
              help="Use only these NVML GPU indices.")
@click.option("--name", default=None,
              help="Celery node name (default farm-gpu-PID@HOST or farm-sim-PID@HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--cpu", is_flag=True,
              help="Serve runs on the host CPU (sweeps naming gpu = [\"cpu\"]; energy from "
                   "RAPL where readable, else null).")
@click.option("--probe", is_flag=True,
              help="Print the GPUs found and the queues this worker would serve, as JSON.")
@_friendly_errors
def worker(sim_specs: tuple[str, ...], gpus: str | None, name: str | None,
           loglevel: str, cpu: bool, probe: bool) -> None:
    """Serve the runs meant for this host's GPUs (discovered through NVML)."""
    # Exec the worker program: this CLI process never loads NVML or engine code.
    args = ["--loglevel", loglevel]
    for spec in sim_specs:
        args += ["--sim", spec]
    if gpus:
        args += ["--gpus", gpus]
    if name:
        args += ["--name", name]
    if cpu:
        args.append("--cpu")
    if probe:
        args.append("--probe")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "tasks.worker_main", *args])


@main.command()
@click.option("--name", default=None, help="Celery node name.")
@click.option("--loglevel", default="INFO", show_default=True)
@_friendly_errors
def recorder(name: str | None, loglevel: str) -> None:
    """Write results into the store (the only writer). Also reaps orphaned runs."""
    from tasks.record import serve

    serve(name, loglevel)


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", default=5555, show_default=True, type=int)
@click.option("--no-auth", is_flag=True,
              help="Allow no basic auth (only with --address 127.0.0.1).")
@_friendly_errors
def flower(address: str, port: int, no_auth: bool) -> None:
    """Flower on the farm's broker, with basic auth from FARM_FLOWER_USER/PASSWORD."""
    from farm.flower import flower_argv
    from farm.settings import load_settings

    try:
        argv = flower_argv(load_settings(), address, port, no_auth)
    except ValueError as exc:
        raise FarmCliError(str(exc), ExitCode.INVALID_INPUT) from None
    from tasks.app import app

    app.start(argv)


@main.group()
def db() -> None:
    """Store administration."""


@db.command("upgrade")
@_friendly_errors
def db_upgrade() -> None:
    """Create or migrate the store's schema to the latest version."""
    from farm.settings import load_settings, redact
    from farm.store.db import upgrade

    url = load_settings().db_url
    upgrade(url)
    click.echo(f"store at {redact(url)} is at the latest schema")


# ----------------------------------------------------------------------- views


@main.command()
@click.argument("sweep", required=False)
@click.option("--watch", is_flag=True, help="Refresh until every run is finished.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@_friendly_errors
def status(sweep: str | None, watch: bool, interval: float) -> None:
    """Runs per status (per sweep, or per queue for one SWEEP)."""
    from farm.settings import load_settings
    from farm.store import counts  # driver only: status must start fast

    with counts.connect(load_settings().db_url) as connection:
        if sweep is None:
            output.print_status(lambda: counts.status_counts(connection), "sweep",
                                watch=watch, interval_s=interval)
            return
        sid = counts.find_sweep_id(connection, sweep)
        if sid is None:
            raise FarmCliError(f"no sweep named or with id {sweep!r}", ExitCode.NOT_FOUND)
        output.print_status(lambda: counts.queue_counts(connection, sid), "queue",
                            watch=watch, interval_s=interval)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@_friendly_errors
def workers(as_json: bool) -> None:
    """Live workers, their GPUs and what each GPU is running."""
    from farm.coordinator import broker_state

    output.print_workers(broker_state().workers(), as_json)


@main.command()
@click.argument("sweep", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to a file.")
@click.option("--valid-only", is_flag=True,
              help="Leave out runs that failed a validity check (and runs without results).")
@_friendly_errors
def results(sweep: str | None, fmt: str, out: str | None, valid_only: bool) -> None:
    """Per-run, per-load-point figures of a sweep (the latest sweep if none given)."""
    store = _store()
    if sweep:
        target = _sweep(store, sweep)
    else:
        known = store.list_sweeps()
        target = max(known, key=lambda s: s.updated_at) if known else None
    if target is None:
        raise FarmCliError("the store has no sweeps yet", ExitCode.NOT_FOUND)
    rows = store.result_rows(target.id)
    simulated = target.simulated        # the label holds even when --valid-only drops rows
    if valid_only:
        rows = [r for r in rows if r.get("valid")]
    text = output.format_results(rows, fmt, title=target.name, simulated=simulated)
    if out:
        Path(out).write_text(text)
    else:
        click.echo(text, nl=False)


@main.command()
@_friendly_errors
def sweeps() -> None:
    """Every sweep in the store."""
    output.print_sweeps(_store().list_sweeps())


@main.command()
@click.argument("sweep")
@_friendly_errors
def cancel(sweep: str) -> None:
    """Cancel a sweep's queued runs (running runs finish and are recorded)."""
    from farm import coordinator

    store = _store(upgrade=True)
    target = _sweep(store, sweep)
    cancelled = coordinator.cancel(store, target.id)
    click.echo(f"{target.name}: {len(cancelled)} queued run(s) cancelled")


@main.command()
@click.argument("sweep")
@click.option("--queued", is_flag=True,
              help="Also re-send runs still queued (after a broker lost its data).")
@_friendly_errors
def retry(sweep: str, queued: bool) -> None:
    """Send a sweep's failed and cancelled runs again."""
    from farm import coordinator

    store = _store(upgrade=True)
    target = _sweep(store, sweep)
    runs = coordinator.retry(store, target.id, include_queued=queued)
    click.echo(f"{target.name}: {len(runs)} run(s) sent again")


if __name__ == "__main__":
    main()
