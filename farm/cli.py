"""`farmctl`: the command line. Thin: parse, call one function, print, exit.

Exit codes are named in `ExitCode` (farm/errors.py). Every coordinator error
derives from `farm.errors.FarmError` and carries its exit code; one handler
(`_friendly_errors`) prints its message on one line, never a traceback
(FARM_DEBUG=1 shows it), and exits with that code.
"""

from __future__ import annotations

import os
import sys
from functools import wraps
from pathlib import Path

import click

from farm import output
from farm.errors import ExitCode, FarmError, InvalidInput, NoMatch, NotFound

__all__ = ["ExitCode", "main"]


class FarmCliError(click.ClickException):
    """A failure as click prints it: `Error: <message>` on stderr, then the exit code."""

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
            if _debug():
                raise
            raise FarmCliError(*_describe(exc)) from None

    return wrapper


def _debug() -> bool:
    """FARM_DEBUG set: an unexpected error keeps its traceback (also when the
    variable itself is unreadable: the traceback is what helps then)."""
    from farm_contract.settings import SettingsError, setting

    try:
        return bool(setting("debug"))
    except SettingsError:
        return True


def _outside_root() -> tuple[type[Exception], ...]:
    """Errors with an `exit_code` that cannot derive from FarmError: the contract's
    (it imports nothing of the project) and the worker side of tasks' (it imports
    only the contract). Each sets its own `exit_code`. BrokerUnavailable only
    once tasks.broker_state is loaded (no command could have raised it before),
    so a host without Redis's client still gets its one-line error."""
    from farm_contract.routing import UnknownGpuError
    from farm_contract.settings import SettingsError

    broker_state = sys.modules.get("tasks.broker_state")
    if broker_state is None:
        return SettingsError, UnknownGpuError
    return SettingsError, UnknownGpuError, broker_state.BrokerUnavailable


def _library_errors(*modules: tuple[str, str]) -> tuple[type[Exception], ...]:
    """The base error classes of the named libraries that are loaded: an error
    of a library never imported cannot have been raised, and importing it here
    would only slow the failure down."""
    found: list[type[Exception]] = []
    for module, name in modules:
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def _describe(exc: Exception) -> tuple[str, ExitCode]:
    """The one-line message and exit code of an error a command raised."""
    if _needs_credentials(exc):
        return _CREDENTIALS, ExitCode.BROKER_ERROR
    if isinstance(exc, (FarmError, *_outside_root())):
        return str(exc), ExitCode(exc.exit_code)
    if isinstance(exc, _library_errors(("sqlalchemy.exc", "SQLAlchemyError"),
                                       ("psycopg", "Error"), ("sqlite3", "Error"))):
        return f"store unavailable: {str(exc).splitlines()[0]}", ExitCode.STORE_ERROR
    if isinstance(exc, _library_errors(("redis.exceptions", "RedisError"),
                                       ("kombu.exceptions", "KombuError"))):
        return f"broker unavailable: {exc}", ExitCode.BROKER_ERROR
    return (f"unexpected {type(exc).__name__}: {exc} (FARM_DEBUG=1 shows the traceback)",
            ExitCode.INTERNAL)


_CREDENTIALS = ("the broker refused us: it needs a password (or refused the one given); put "
                "it in FARM_BROKER_URL, e.g. redis://:PASSWORD@host:6379/0 or "
                "redis+socket://:PASSWORD@/run/redis/redis.sock (a user: USER:PASSWORD@)")


def _needs_credentials(exc: BaseException) -> bool:
    """Whether Redis refused for want of (good) credentials, here or in what this
    error wraps (BrokerUnavailable keeps Redis's error as its context)."""
    auth = _library_errors(("redis.exceptions", "AuthenticationError"))
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        text = str(seen)
        if (auth and isinstance(seen, auth)) or text.startswith(("NOAUTH", "WRONGPASS")) \
                or "HELLO must be called with the client already authenticated" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _store(upgrade: bool = False):
    from farm.store.repository import Store
    from farm_contract.settings import load_settings

    return Store.open(load_settings().db_url, upgrade=upgrade)


def _sweep(store, name_or_id: str):
    sweep = store.find_sweep(name_or_id)
    if sweep is None:
        raise NotFound(f"no sweep named or with id {name_or_id!r}")
    return sweep


def _load(path: str, simulate: bool):
    """The sweep (its simulated copy with `--simulate`) and the file's text; the
    copy's notes (engine arguments the sim engine does not take, dropped) go to stderr."""
    from farm.simulate import load_simulated
    from farm.sweep_file import load_sweep

    if not simulate:
        return load_sweep(path)
    spec, text, notes = load_simulated(path)
    for note in notes:
        click.echo(note, err=True)
    return spec, text


class _Positive(click.ParamType):
    """A finite number above 0: NaN, infinities and negatives are refused at the option
    (NaN compares false with everything, so a limit of NaN silently meant "none")."""

    name = "number>0"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r}: must be a finite number above 0", param, ctx)
        return number


def _positive() -> click.ParamType:
    return _Positive()


class _FarmGroup(click.Group):
    """The command group, whose help ends with the FARM_* variables it reads."""

    def format_epilog(self, ctx, formatter) -> None:
        from farm_contract.settings import Settings, environment_help

        with formatter.section("Environment"):
            formatter.write_dl(environment_help(Settings))
        formatter.write_paragraph()
        formatter.write_text("An empty variable means its default; docs/deployment.md"
                             "#settings says what each one does.")


@click.group(cls=_FarmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="farm")
def main() -> None:
    """A distributed benchmark farm for the energy efficiency of LLM inference."""


# ----------------------------------------------------------------- sweep files

SIMULATE = click.option("--simulate", is_flag=True,
                        help="Run every GPU and engine of the sweep simulated "
                             "(sweep name gets a '-sim' suffix; figures are labelled).")
AMEND = click.option("--amend", is_flag=True,
                     help="Replace the file stored under this sweep name with this one "
                          "(the owner's or an admin's; without it a changed file is "
                          "refused with a diff).")


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@SIMULATE
@_friendly_errors
def validate(sweep_file: str, simulate: bool) -> None:
    """Check a sweep file (with --simulate, its simulated copy too); print how many runs
    it makes."""
    from farm.sweep import expand, plan

    spec, _ = _load(sweep_file, simulate=simulate)
    runs = expand(spec)
    output.print_plan(spec.name, len(runs), plan(runs), header="valid")
    for note in _vllm_notes(spec):
        click.echo(f"note: {note}")


def _vllm_notes(spec) -> list[str]:
    """What a vLLM version the farm knows lacks of an unpinned sweep's arguments."""
    from farm_contract import vllm_versions

    grid = spec.engine.arg_grid()
    if spec.engine.kind != "vllm" or "vllm_version" in grid:
        return []
    return vllm_versions.portability_notes(set(grid))


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan; touch neither Redis nor the store.")
@SIMULATE
@click.option("--owner", default=None, metavar="NAME",
              help="Admins (FARM_ADMINS) only: enqueue for this user. Everyone else's "
                   "sweeps are their own (FARM_OWNER, else the login name).")
@click.option("--priority", default=None, type=int,
              help="Dispatch priority: a higher one goes first (default: 0 for a new "
                   "sweep; the stored one is kept). Changing it is the owner's or an admin's.")
@AMEND
@_friendly_errors
def enqueue(sweep_file: str, dry_run: bool, simulate: bool, owner: str | None,
            priority: int | None, amend: bool) -> None:
    """Expand a sweep into runs and queue the new ones; the dispatcher feeds the GPU
    queues by priority and fair share between owners."""
    import re

    from farm import coordinator
    from farm_contract.settings import OWNER_PATTERN

    if owner is not None and not re.match(OWNER_PATTERN, owner):
        raise InvalidInput(f"--owner {owner!r} is not a short name (at most 64 letters, "
                           "digits or . _ - @)")
    spec, text = _load(sweep_file, simulate)
    if dry_run:
        report = coordinator.dry_run(spec)
        output.print_plan(spec.name, report.total_runs, report.per_queue, header="dry run")
        return
    store = _store(upgrade=True)
    report = coordinator.enqueue(store, spec, text, owner=owner, priority=priority,
                                 amend=amend)
    output.print_enqueue(spec.name, report)
    _say_dispatched(report)
    _warn_unserved(store.queue_counts(report.sweep_id), coordinator.broker_state())


def _say_dispatched(report) -> None:
    """Who owns the sweep, and how many messages went on queues now."""
    queued = sum(report.dispatched.values()) if report.dispatched is not None else None
    now = ("the recorder's dispatcher was mid-pass: it sends them" if queued is None
           else f"{queued} message(s) put on GPU queues now")
    click.echo(f"owner {report.owner}, priority {report.priority}; {now}; the recorder's "
               "dispatcher feeds the rest as workers free up (by priority, then fair "
               "share between owners)")


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--sim", "sim_specs", multiple=True, metavar="MODEL[xN]",
              help="Start a worker with simulated GPUs, e.g. H100-80GB or L4x2. Repeatable.")
@SIMULATE
@AMEND
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_friendly_errors
def run(sweep_file: str, sim_specs: tuple[str, ...], simulate: bool, amend: bool,
        quiet: bool) -> None:
    """Everything on this machine: private Redis, SQLite store, recorder, workers."""
    from farm.local import run_locally

    spec, text = _load(sweep_file, simulate)
    try:
        code = run_locally(spec, text, list(sim_specs), progress=not quiet, amend=amend)
    except KeyboardInterrupt:   # before any run was sent (run_locally handles the rest)
        click.echo("interrupted", err=True)
        code = ExitCode.INTERRUPTED
    sys.exit(int(code))


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_interspersed_args": False})
@click.option("--gpus", default=None, metavar="MODEL[xN]",
              help="This host's devices the command runs on: H100, H100x2, or cpu.")
@click.option("--sim", default=None, metavar="MODEL[xN]",
              help="Simulated devices instead (figures labelled SIMULATED), e.g. H100-80GB.")
@click.option("--result", default=None, metavar="FILE",
              help="The result file the command's load tool writes: its token and request "
                   "counts. Without it, energy figures only.")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "vllm-bench", "guidellm", "aiperf"]),
              help="How to read --result (auto: from its content).")
@click.option("--output-tokens", required=True, type=click.IntRange(min=1), metavar="N",
              help="Output tokens each request of the tool asks for: the token bin the run "
                   "is filed under, as every run's.")
@click.option("--input-tokens", default=None, type=click.IntRange(min=1), metavar="N",
              help="Prompt tokens per request, where the tool sends one length.")
@click.option("--model", default="command", show_default=True, metavar="ID",
              help="The model the command loads, as the run names it.")
@click.option("--name", default=None, metavar="SWEEP",
              help="The sweep's name (default: measure-DATE-TIME, a new one each time).")
@click.option("--idle-baseline-s", type=float, default=None, metavar="S",
              help="Length of each idle baseline (default 10).")
@click.option("--min-steady-s", type=float, default=None, metavar="S",
              help="Validity: the shortest command run that passes (default 30).")
@click.option("--cooldown-timeout-s", type=float, default=None, metavar="S",
              help="Preflight: the longest wait for the GPUs to cool (default 300).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@_friendly_errors
def measure(command: tuple[str, ...], gpus: str | None, sim: str | None, result: str | None,
            fmt: str, output_tokens: int, input_tokens: int | None, model: str,
            name: str | None, idle_baseline_s: float | None, min_steady_s: float | None,
            cooldown_timeout_s: float | None, quiet: bool) -> None:
    """Run COMMAND (after --) under the farm's meter and store it as a run of kind
    `measure`: quiet gate, idle baselines, energy windows, validity, owner."""
    from farm.measure import MeasureRequest
    from farm.measure import measure as measure_command

    request = MeasureRequest(
        argv=tuple(command), gpus=gpus, sim=sim, result=result, fmt=fmt, name=name,
        model=model, input_tokens=input_tokens, output_tokens=output_tokens,
        idle_baseline_s=idle_baseline_s, min_steady_s=min_steady_s,
        cooldown_timeout_s=cooldown_timeout_s)
    try:
        code = measure_command(request, progress=not quiet)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = ExitCode.INTERRUPTED
    sys.exit(int(code))


# -------------------------------------------------------------------- services


# The worker's options have one parser, tasks/worker_main.py's: click hands them all
# over untouched (--help included), so the two can never disagree.
@main.command(add_help_option=False, context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@_friendly_errors
def worker(args: tuple[str, ...]) -> None:
    """Serve the runs meant for this host's GPUs (discovered through NVML).

    Its options are parsed by tasks/worker_main.py: `farmctl worker --help` lists them.
    """
    # Exec the worker program: this CLI process never loads NVML or engine code.
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "tasks.worker_main", *args])


@main.command()
@click.option("--name", default=None, help="Celery node name.")
@click.option("--loglevel", default="INFO", show_default=True)
@_friendly_errors
def recorder(name: str | None, loglevel: str) -> None:
    """Write results into the store (the only writer). Also reaps orphaned runs."""
    from farm_contract.settings import load_settings
    from tasks.broker_state import credentials_refused
    from tasks.record import serve

    refused = credentials_refused(load_settings().broker_url)
    if refused:
        click.echo(f"Error: {refused}", err=True)
        sys.exit(ExitCode.BROKER_ERROR)
    code = serve(name, loglevel)
    if code:
        # Celery stopped on an error: say so to systemd/compose (Restart=on-failure).
        sys.exit(code)


@main.command()
@click.option("--once", is_flag=True, help="One pass, then exit.")
@click.option("--dry-run", is_flag=True, help="One pass that prints its decision and submits "
                                              "nothing.")
@click.option("--loglevel", default="INFO", show_default=True)
@_friendly_errors
def slurm(once: bool, dry_run: bool, loglevel: str) -> None:
    """Submit Slurm worker jobs for GPU queues with waiting runs (FARM_SLURM_* settings)."""
    from farm.slurm.cli import main as slurm_main

    slurm_main(once=once, dry_run=dry_run, loglevel=loglevel)


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", default=5555, show_default=True, type=int)
@click.option("--no-auth", is_flag=True,
              help="Allow no basic auth (only with --address 127.0.0.1).")
@_friendly_errors
def flower(address: str, port: int, no_auth: bool) -> None:
    """Flower on the farm's broker, with basic auth from FARM_FLOWER_USER/PASSWORD."""
    from farm.flower import flower_argv
    from farm_contract.settings import load_settings

    try:
        argv = flower_argv(load_settings(), address, port, no_auth)
    except ValueError as exc:          # farm.flower's refusals are plain ValueErrors
        raise InvalidInput(str(exc)) from None
    from tasks.app import app

    app.start(argv)


@main.group()
def db() -> None:
    """Store administration."""


@db.command("upgrade")
@_friendly_errors
def db_upgrade() -> None:
    """Create or migrate the store's schema to the latest version."""
    from farm.store.db import upgrade
    from farm_contract.settings import load_settings, redact

    url = load_settings().db_url
    upgrade(url)
    click.echo(f"store at {redact(url)} is at the latest schema")


# ----------------------------------------------------------------------- views


@main.command()
@click.argument("sweep", required=False)
@click.option("--watch", is_flag=True, help="Refresh until every run is finished.")
@click.option("--interval", default=2.0, show_default=True, type=_positive(),
              help="Seconds between refreshes.")
@_friendly_errors
def status(sweep: str | None, watch: bool, interval: float) -> None:
    """Runs per status (per sweep, or per queue for one SWEEP)."""
    from farm.store import counts  # driver only: status must start fast
    from farm_contract.settings import load_settings

    with counts.connect(load_settings().db_url) as connection:
        if sweep is None:
            output.print_status(lambda: counts.status_counts(connection), "sweep",
                                watch=watch, interval_s=interval)
            output.print_owners(counts.owner_counts(connection,
                                                    load_settings().fair_share_window_s))
            _report_slurm_jobs()
            _report_parked(counts.queue_counts(connection))
            return
        sid = counts.find_sweep_id(connection, sweep)
        if sid is None:
            raise NotFound(f"no sweep named or with id {sweep!r}")
        output.print_status(lambda: counts.queue_counts(connection, sid), "queue",
                            watch=watch, interval_s=interval)
        from farm.failures import format_failures, group_failures

        click.echo(format_failures(group_failures(counts.failed_runs(connection, sid)), sweep),
                   nl=False)
        queue_counts = counts.queue_counts(connection, sid)
    _report_parked(queue_counts)


def _report_slurm_jobs() -> None:
    """farm's Slurm worker jobs, pending and running (nothing where Slurm is absent)."""
    from farm.slurm.status import lines_for_status
    from farm_contract.settings import SettingsError, load_slurm_settings

    try:
        prefix = load_slurm_settings().job_prefix
    except SettingsError as exc:    # only `farmctl slurm` must stop on a bad FARM_SLURM_*
        click.echo(f"note: slurm worker jobs not listed: {exc}", err=True)
        return
    lines, note = lines_for_status(prefix)
    for line in lines:
        click.echo(line)
    if note:
        click.echo(note, err=True)


def _report_parked(queue_counts=()) -> None:
    """Say how many messages are parked as unreadable, which `farmctl run`s on this
    machine serve queues from their own broker, and which queues with runs waiting no
    live worker serves; stay quiet without a broker."""
    from farm.coordinator import broker_state

    local = _local_run_workers()
    try:
        state = broker_state()
        parked = state.unreadable_count()
    except Exception as exc:   # status reads the store; a broker outage must not fail it
        why = _CREDENTIALS if _needs_credentials(exc) else "the broker is unreachable"
        click.echo(f"note: {why}: unreadable messages not counted", err=True)
        return
    if parked:
        click.echo(f"{parked} unreadable message(s) parked in farm:unreadable "
                   "(redis-cli LRANGE farm:unreadable 0 -1 shows queue, reason and text)")
    _warn_unserved(queue_counts, state, local)


def _local_run_workers() -> list[dict]:
    """The workers of the `farmctl run`s in progress on this machine (each on its own
    broker), each named on stderr: their runs are being measured, not waiting."""
    from farm.coordinator import local_run_workers

    try:
        found = local_run_workers()
    except Exception:   # a note only: it must never fail the command
        return []
    workers = []
    for run, advertised in found:
        queues = sorted({q for w in advertised for q in w.get("queues") or ()})
        click.echo(f"note: `farmctl run` (pid {run.pid}, sweep {run.sweep}) is measuring on "
                   f"this machine with its own broker: {len(advertised)} worker(s)"
                   + (f" serving {', '.join(queues)}" if queues else ""), err=True)
        workers += advertised
    return workers


def _warn_unserved(queue_counts, state, extra_workers=()) -> None:
    """A warning on stderr for queues with runs waiting that no live worker serves
    (on the farm's broker, or `extra_workers`: those of local runs)."""
    from farm import unserved

    try:
        line = unserved.check(queue_counts, state, extra_workers)
    except Exception:   # a warning only: the broker going away now must not fail the command
        return
    if line:
        click.echo(line, err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@_friendly_errors
def workers(as_json: bool) -> None:
    """Live workers, their GPUs and what each GPU is running."""
    from farm.coordinator import broker_state, local_run_workers

    # with the workers a `farmctl run` on this machine started on its private broker
    local = [w for _, advertised in local_run_workers() for w in advertised]
    output.print_workers(broker_state().workers() + local, as_json)


TABLE_COLUMNS = click.option(
    "--columns", default=None, metavar="NAME,…",
    help="The table's columns, in this order (an unknown name lists the known ones).")
TABLE_WIDE = click.option("--wide", is_flag=True, help="Every column the table has.")


def _table_only(fmt: str, columns: str | None, wide: bool) -> None:
    """--columns and --wide shape the table; CSV and JSON always carry every field."""
    if fmt != "table" and (columns is not None or wide):
        raise InvalidInput(f"{'--wide' if wide else '--columns'} shapes the table only; "
                           f"--format {fmt} always carries every field")


@main.command()
@click.argument("sweep", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to a file.")
@click.option("--valid-only", is_flag=True,
              help="Leave out runs that failed a validity check (and runs without results).")
@TABLE_COLUMNS
@TABLE_WIDE
@_friendly_errors
def results(sweep: str | None, fmt: str, out: str | None, valid_only: bool,
            columns: str | None, wide: bool) -> None:
    """Per-run, per-load-point figures of a sweep (the latest sweep if none given)."""
    _table_only(fmt, columns, wide)
    store = _store()
    if sweep:
        target = _sweep(store, sweep)
    else:
        known = store.list_sweeps()
        target = max(known, key=lambda s: s.updated_at) if known else None
    if target is None:
        raise NotFound("the store has no sweeps yet")
    rows = store.result_rows(target.id)
    simulated = target.simulated        # the label holds even when --valid-only drops rows
    failed = _failure_groups(rows)      # before --valid-only: a failure is news either way
    if valid_only:
        rows = [r for r in rows if r.get("valid")]
    # A file is never cut; stdout is fitted when it is a terminal.
    text = output.format_results(rows, fmt, title=target.name, simulated=simulated,
                                 columns=columns, wide=wide, width=None if out else "auto")
    text = _with_failures(text, fmt, failed, target.name)
    text = _with_repetitions(store, text, fmt, target.id)
    if out:
        from farm.outfiles import write_text

        write_text(out, text)
    else:
        click.echo(text, nl=False)


def _with_repetitions(store, text: str, fmt: str, sid: str) -> str:
    """An adaptive sweep's configurations (runs, n, CI reached, verdict): under the
    table, in the JSON document ("repetitions"), or on stderr beside CSV."""
    import json

    from farm import adaptive

    configs = adaptive.sweep_summary(store, sid)
    if not configs:
        return text
    if fmt == "json":
        document = json.loads(text)
        document["repetitions"] = adaptive.summary_json(configs)
        return json.dumps(document, indent=2) + "\n"
    if fmt == "table":
        return text + adaptive.format_summary(configs)
    click.echo(adaptive.format_summary(configs), err=True, nl=False)
    return text


def _failure_groups(rows):
    from farm.failures import from_result_rows

    return from_result_rows(rows)


def _with_failures(text: str, fmt: str, groups, sweep: str) -> str:
    """Failed runs' reasons, grouped: in the JSON document, under the table, or on
    stderr beside CSV (which stays one table)."""
    from farm import failures

    if fmt == "json":
        return failures.add_to_json(text, groups)
    note = failures.format_failures(groups, sweep)
    if fmt == "table":
        return text + note
    if note:
        click.echo(note, err=True, nl=False)
    return text


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


# ---------------------------------------------------------------------- report


@main.command()
@click.argument("sweep")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Directory to write (default farm-report-SWEEP/).")
@click.option("--runs", "runs", multiple=True, metavar="RUN_ID[,RUN_ID…]",
              help="Runs whose power timelines to draw (ids or unique prefixes; repeatable or "
                   "comma-separated). Default: per GPU, the run with the most load points.")
@click.option("--net", is_flag=True,
              help="Plot energy net of idle instead of gross (the table shows both).")
@click.option("--force", is_flag=True, help="Overwrite a report already in --out.")
@_friendly_errors
def report(sweep: str, out: str | None, runs: tuple[str, ...], net: bool, force: bool) -> None:
    """A self-contained HTML report of a sweep, with its figures as PNG files."""
    from farm.outfiles import check_report_dir, writing
    from farm.report.report import default_out_dir, write_report

    store = _store()
    target = _sweep(store, sweep)
    folder = Path(out) if out else default_out_dir(target.name)
    check_report_dir(folder, force)
    wanted = [r.strip() for value in runs for r in value.split(",") if r.strip()]
    with writing("--out", folder):
        done = write_report(store, target.id, folder, wanted, net)
    if done.simulated:
        click.echo(output.SIM_BANNER)
    click.echo(f"{done.sweep}: report of {done.points} run point(s) written to {done.index} "
               f"({len(done.figures)} figure(s) in {done.index.parent / 'figures'}/)")


# ------------------------------------------------------- recommend and compare


@main.command()
@click.argument("sweep")
@click.option("--model", default=None, metavar="ID",
              help="The model to serve (default: the sweep's only model).")
@click.option("--ttft-ms", type=_positive(), default=None,
              help="Limit on the p90 TTFT, ms (default: the sweep's SLO, else 2000).")
@click.option("--tpot-ms", type=_positive(), default=None,
              help="Limit on the p90 TPOT, ms (default: the sweep's SLO, else 200).")
@click.option("--rate", type=_positive(), default=None, metavar="REQ/S",
              help="Arrival rate: amortise idle power over replicas serving it.")
@click.option("--input-tokens", type=int, default=None, help="Rank this input bin only.")
@click.option("--output-tokens", type=int, default=None, help="Rank this output bin only.")
@click.option("--draws", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Bootstrap resamples of the repetitions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@TABLE_COLUMNS
@_friendly_errors
def recommend(sweep: str, model: str | None, ttft_ms: float | None, tpot_ms: float | None,
              rate: float | None, input_tokens: int | None, output_tokens: int | None,
              draws: int, seed: int, fmt: str, columns: str | None) -> None:
    """Rank GPUs and configurations that meet a latency limit by energy per good request."""
    _table_only(fmt, columns, wide=False)
    from farm.report.attainment import StoredAttainment
    from farm.report.points import load_run_points
    from farm.report.recommend import recommend as rank
    from farm.report.recommend_text import format_recommendation

    store = _store()
    target = _sweep(store, sweep)
    _, points = load_run_points(store, target.id)
    rec = rank(
        points, sweep=target.name, model=model, ttft_ms=ttft_ms, tpot_ms=tpot_ms,
        rate_rps=rate, input_tokens=input_tokens, output_tokens=output_tokens,
        simulated=target.simulated, attainment=StoredAttainment(store),
        draws=draws, seed=seed)
    click.echo(format_recommendation(rec, fmt, columns=columns), nl=False)
    if not rec.met:
        raise NoMatch(rec.nothing_met_message())


@main.command()
@click.argument("sweep_a")
@click.argument("sweep_b")
@click.option("--ignore-arg", "ignore_args", multiple=True, metavar="NAME",
              help="Match points regardless of this engine argument. Repeatable.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@TABLE_COLUMNS
@_friendly_errors
def compare(sweep_a: str, sweep_b: str, ignore_args: tuple[str, ...], fmt: str,
            columns: str | None) -> None:
    """Deltas of J/token (with 95% CIs), TTFT and throughput at the points two sweeps share."""
    _table_only(fmt, columns, wide=False)
    from farm.report import compare as cmp_module
    from farm.report.points import load_run_points

    store = _store()
    a, b = _sweep(store, sweep_a), _sweep(store, sweep_b)
    _, points_a = load_run_points(store, a.id)
    _, points_b = load_run_points(store, b.id)
    result = cmp_module.compare(points_a, points_b, sweep_a=a.name, sweep_b=b.name,
                                simulated_a=a.simulated, simulated_b=b.simulated,
                                ignore_args=ignore_args)
    click.echo(cmp_module.format_comparison(result, fmt, columns=columns), nl=False)
    if not result.matched:
        raise NoMatch(f"no configuration point of {a.name} matches one of {b.name} "
                      f"({result.only_a} only in A, {result.only_b} only in B)")


# ------------------------------------------------------ dataset export/import


@main.command()
@click.argument("sweep")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "jsonl"]),
              default="parquet", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Directory to write (default farm-export-SWEEP-FORMAT/).")
@click.option("--force", is_flag=True,
              help="Replace an export already in --out (only the files its manifest lists).")
@_friendly_errors
def export(sweep: str, fmt: str, out: str | None, force: bool) -> None:
    """A sweep as an open dataset: runs, run points, requests, timelines, windows."""
    from farm.report.export import export_sweep

    store = _store()
    target = _sweep(store, sweep)
    from farm.outfiles import writing

    with writing("--out", out or "(the export folder)"):
        done = export_sweep(store, target.id, fmt, Path(out) if out else None, force=force)
    label = " (SIMULATED: every row is marked simulated)" if done.simulated else ""
    rows = done.rows
    click.echo(f"{done.sweep}{label}: {rows['runs']} run(s), {rows['run_points']} run "
               f"point(s), {rows['requests']} request(s), {rows['timelines']} timeline "
               f"sample(s), {rows['windows']} window(s) written as {done.fmt} to "
               f"{done.out_dir}/ in {done.seconds:.1f} s")


@main.command("import")
@click.argument("directory", type=click.Path(file_okay=False))
@_friendly_errors
def import_(directory: str) -> None:
    """Merge an export (any format) into the store; what it has already is kept."""
    from farm.report.importer import import_dataset, read_manifest

    read_manifest(Path(directory))      # a bad directory fails before the store opens
    done = import_dataset(_store(upgrade=True), Path(directory))
    label = " (SIMULATED)" if done.simulated else ""
    sweep_note = "sweep recorded" if done.sweep_recorded else "sweep already in the store"
    click.echo(f"{done.sweep}{label} from {directory} ({done.fmt}): {sweep_note}; "
               f"{done.runs_added} run(s) added, {done.results_imported} result(s) imported"
               + (f" ({done.failures_replaced} replacing a stored failure)"
                  if done.failures_replaced else "")
               + f", {done.duplicates} duplicate(s) skipped"
               + (f", {done.runs_without_result} run(s) without a result not imported"
                  if done.runs_without_result else "")
               + f" in {done.seconds:.1f} s")

if __name__ == "__main__":
    main()
