"""`farmctl measure -- COMMAND …`: any command under the farm's meter, as a run.

The command becomes a sweep of one run of engine kind `measure` (its engine,
`workers/engines/measure.py`, runs it as the run's one load point) and goes
through `farmctl run`'s machinery (`farm.local`): private Redis, the recorder,
a worker on this host's GPUs (or simulated ones, `--sim`), the store. So the
run has everything any run has — quiet gate, idle baselines, counter windows
with the timeline cross-check, isolation watch, validity verdict, owner
(FARM_OWNER, else the login name) — and lands in the store beside the others.

The sweep's text is written here and stored with the run, so `farmctl status`,
`results`, `report` and `export` read it like any sweep. Each invocation is a
sweep of its own (`measure-<date>-<time>`) unless `--name` gives one: a name
measured before is the same run, already done.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime

from farm.errors import ExitCode, InvalidInput
from farm_contract.routing import CPU_SLUG, parse_host_spec

SCENARIO = "command"


@dataclass(frozen=True)
class MeasureRequest:
    """What `farmctl measure` was asked: the command and how to file its run."""

    argv: tuple[str, ...]
    gpus: str | None = None            # "H100", "H100x2", "cpu": this host's devices
    sim: str | None = None             # "H100-80GB": simulated devices instead
    result: str | None = None          # the tool's result file
    fmt: str = "auto"
    name: str | None = None
    model: str = "command"
    input_tokens: int | None = None
    output_tokens: int = 1             # the run's token bin (farmctl requires it)
    idle_baseline_s: float | None = None
    min_steady_s: float | None = None
    cooldown_timeout_s: float | None = None


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _hardware(request: MeasureRequest) -> tuple[str, int]:
    """(the sweep's gpu name, GPUs per run)."""
    if request.sim and request.gpus:
        raise InvalidInput("give --gpus (this host's) or --sim (simulated), not both")
    spec = request.sim or request.gpus
    if spec is None:
        raise InvalidInput("name the devices the command runs on: --gpus MODEL[xN] (this "
                           "host's, e.g. H100 or H100x2, or cpu) or --sim MODEL[xN]")
    if spec.lower() == "cpu":
        if request.sim:
            raise InvalidInput('the CPU cannot be simulated: --gpus cpu')
        return "cpu", 1
    try:
        slug, count = parse_host_spec(spec)
    except ValueError as exc:
        raise InvalidInput(f"--{'sim' if request.sim else 'gpus'} {spec!r}: {exc}") from None
    if slug == CPU_SLUG:
        return "cpu", 1
    return (f"sim:{slug}" if request.sim else slug), count


def sweep_text(request: MeasureRequest, cwd: str, now: datetime) -> str:
    """The sweep file of the one run that measures `request`'s command."""
    if not request.argv:
        raise InvalidInput("no command: `farmctl measure [OPTIONS] -- COMMAND [ARGS…]`")
    gpu, count = _hardware(request)
    name = request.name or f"measure-{now.strftime('%Y%m%d-%H%M%S')}"
    lines = [
        f"name = {_q(name)}",
        f"description = {_q('farmctl measure -- ' + shlex.join(request.argv))}",
        "[[model]]", f"id = {_q(request.model)}", f"source = {_q(request.model)}",
        "[hardware]", f"gpu = [{_q(gpu)}]", f"gpus_per_run = {count}",
        "[engine]", 'kind = "measure"', f"command = {_q(shlex.join(request.argv))}",
        f"cwd = {_q(cwd)}", f"format = {_q(request.fmt)}",
    ]
    if request.result:
        lines.append(f"result = {_q(os.path.join(cwd, request.result))}")
    lines += ["[[scenario]]", 'kind = "batch"', f"name = {_q(SCENARIO)}",
              "num_prompts = 1", "warmup_prompts = 0",
              "[workload]", 'dataset = "load-tool"', f"output_tokens = {request.output_tokens}"]
    if request.input_tokens is not None:
        lines.append(f"input_tokens = {request.input_tokens}")
    lines.append("[measurement]")
    for key in ("idle_baseline_s", "min_steady_s", "cooldown_timeout_s"):
        value = getattr(request, key)
        if value is not None:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


def measure(request: MeasureRequest, progress: bool = True) -> ExitCode:
    """Measure the command on this host; prints the results and returns the exit code."""
    from farm.local import run_locally
    from farm.sweep_file import parse_sweep

    text = sweep_text(request, os.getcwd(), datetime.now())
    spec = parse_sweep(text, "<farmctl measure>")
    # The private worker `run_locally` starts runs this command (its own host's
    # policy, FARM_ALLOW_COMMANDS); no other worker does.
    os.environ["FARM_ALLOW_COMMANDS"] = "1"
    sims = [request.sim] if request.sim else []
    code = run_locally(spec, text, sims, progress=progress)
    _say_provenance(spec.name)
    return code


def _say_provenance(name: str) -> None:
    """Who measured what, and where the counts came from (the run's notes)."""
    from farm.store.repository import Store
    from farm_contract.settings import load_settings

    store = Store.open(load_settings().db_url)
    sweep = store.find_sweep(name)
    if sweep is None:
        return
    for row in store.result_rows(sweep.id):
        figures = ", ".join(
            f"{label} {row[key]:.4g} J" if row.get(key) is not None else f"{label} —"
            for key, label in (("energy_per_output_token_j", "J/output token"),
                               ("energy_per_total_token_j", "J/total token")))
        valid = {True: "valid", False: "INVALID", None: "no verdict"}[row.get("valid")]
        sim = "SIMULATED, " if row.get("simulated") else ""
        print(f"{row['run_id']} (owner {sweep.owner}): {sim}{valid}; {figures}",
              file=sys.stderr)
        for note in row.get("notes") or []:
            print(f"  {note}", file=sys.stderr)
