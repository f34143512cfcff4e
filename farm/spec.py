"""The sweep file (sweep.toml): its pydantic models, parsing and line-located errors.

Pure: standard library and pydantic only. `SweepSpec` is what a lab writes;
it expands (`farm.sweep`) into `farm_contract.runspec.RunSpec`s, one
measurement each, fully concrete, that travel to GPU workers as JSON. A run's
identity is the hash of its canonical RunSpec (`run_id`), so the same sweep
enqueued twice produces the same ids and nothing twice.

Every list in a sweep is a dimension (cartesian product) except a server
scenario's load list (`concurrency` or `request_rate`): those are load points,
all measured against one engine start within one run.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from farm.errors import ExitCode, FarmError
from farm.sweep import iter_runs
from farm_contract import limits as lim
from farm_contract.engine_args import ErrorDetails, grid_errors, known_names, problem
from farm_contract.engines import ENGINE_KINDS, SIMULATOR, EngineKindName
from farm_contract.limits import at_most, most_items
from farm_contract.routing import (
    CPU_SLUG,
    UnknownGpuError,
    power_limit_problem,
    resolve_gpu,
    sm_clock_problem,
    split_backend,
)
from farm_contract.rules import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS
from farm_contract.runspec import (
    DEFAULT,
    NAME_PATTERN,
    TUNING_FIELDS,
    Decoding,
    Default,
    MeasurementSpec,
    ModelSpec,
    OneOrMany,
    PositiveFloat,
    PositiveInt,
    PositiveSeconds,
    Scalar,
    Seconds,
    ServerLoad,
    Strict,
)

# Each number a sweep gives, bounded by what the farm can do (farm_contract/limits.py).
GpuCount = Annotated[PositiveInt, at_most(lim.MAX_GPUS_PER_RUN, lim.WHY_GPUS_PER_RUN)]
Concurrency = Annotated[PositiveInt, at_most(lim.MAX_CONCURRENCY, lim.WHY_CONCURRENCY)]
Rate = Annotated[PositiveFloat, at_most(lim.MAX_REQUEST_RATE, lim.WHY_REQUEST_RATE)]
LoadList = most_items(lim.MAX_LOAD_POINTS, lim.WHY_LOAD_POINTS)
Prompts = Annotated[int, Field(strict=True), at_most(lim.MAX_PROMPTS, lim.WHY_PROMPTS)]
Tokens = Annotated[PositiveInt, at_most(lim.MAX_TOKENS, lim.WHY_TOKENS)]
SloMs = Annotated[PositiveFloat, at_most(lim.MAX_SLO_MS, lim.WHY_SLO_MS)]


class HardwareSpec(Strict):
    """GPU models (friendly names; "sim:H100" for a simulated one) and GPUs per run."""

    gpu: OneOrMany[str]
    gpus_per_run: OneOrMany[GpuCount] = [1]
    # Swept like the other axes; null (left out) leaves the GPUs as they are,
    # "default" is the GPU's default limit / no clock lock, as one value of the axis.
    # The worker sets them through the driver and restores them after the run.
    power_limit_w: OneOrMany[PositiveFloat | Default] | None = None
    sm_clock_mhz: OneOrMany[PositiveInt | Default] | None = None

    @field_validator("gpu")
    @classmethod
    def _known_gpus(cls, names: list[str]) -> list[str]:
        for name in names:
            _, model_name = split_backend(name)
            try:
                resolve_gpu(model_name)
            except UnknownGpuError as exc:
                raise ValueError(str(exc)) from None
        if len({_canonical_gpu(n) for n in names}) != len(names):
            raise ValueError("the same GPU model is listed twice")
        if ("sim", CPU_SLUG) in {_canonical_gpu(n) for n in names}:
            raise ValueError("the CPU cannot be simulated: name it \"cpu\"")
        return names

    @model_validator(mode="after")
    def _tunable(self) -> HardwareSpec:
        tuned = [key for key in TUNING_FIELDS if getattr(self, key)]
        errors: list[ErrorDetails] = []
        for name in self.gpu if tuned else []:
            backend, model_name = split_backend(name)
            if backend == "sim":
                errors += [problem((key,), f"cannot be swept on simulated GPUs ({name!r}): the "
                                   "performance model does not model a power limit or a "
                                   "locked clock, so the figures would be made up")
                           for key in tuned]
                continue
            if backend == "cpu":
                errors += [problem((key,), '"cpu" has no power limit or SM clock to set')
                           for key in tuned]
                continue
            slug = resolve_gpu(model_name).slug
            errors += [problem(("power_limit_w",), f"for {name!r}: {why}")
                       for watts in self.power_limit_w or [] if watts != DEFAULT
                       if (why := power_limit_problem(slug, watts)) is not None]
        errors += [problem(("sm_clock_mhz",), why) for mhz in self.sm_clock_mhz or []
                   if mhz != DEFAULT and (why := sm_clock_problem(mhz)) is not None]
        errors += [problem((key,), "lists the same value twice") for key in tuned
                   if len(set(getattr(self, key))) != len(getattr(self, key))]
        if errors:
            # Raised inside a validator, pydantic nests these under `hardware`.
            raise ValidationError.from_exception_data("HardwareSpec", errors)
        return self

    @model_validator(mode="after")
    def _one_cpu_per_host(self) -> HardwareSpec:
        if any(split_backend(n)[0] == "cpu" for n in self.gpu) and max(self.gpus_per_run) > 1:
            raise ValueError('"cpu" is one device per host: gpus_per_run must be [1] '
                             "(put multi-GPU runs in a sweep of their own)")
        return self


def _canonical_gpu(name: str) -> tuple[str, str]:
    backend, model_name = split_backend(name)
    return backend, resolve_gpu(model_name).slug


_ARG_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class EngineSpec(BaseModel):
    """`kind` plus the kind's engine arguments; an argument given as a list is swept.

    The arguments are checked against the kind's model in the contract
    (`farm_contract.engine_args`, named by `ENGINE_KINDS[kind].args`), each value
    of a swept list on its own, so a worker never gets one its engine refuses.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: EngineKindName

    @model_validator(mode="after")
    def _check_args(self) -> EngineSpec:
        for key, value in (self.model_extra or {}).items():
            if not _ARG_NAME.match(key):
                raise ValueError(f"engine argument {key!r} is not a valid argument name")
            values = value if isinstance(value, list) else [value]
            if not values:
                raise ValueError(f"engine argument {key!r}: an empty list sweeps nothing")
            for item in values:
                if not isinstance(item, (bool, int, float, str)):
                    raise ValueError(
                        f"engine argument {key!r}: values must be numbers, strings or "
                        f"booleans, got {type(item).__name__}"
                    )
        listed = {k for k, v in (self.model_extra or {}).items() if isinstance(v, list)}
        errors = grid_errors(ENGINE_KINDS[self.kind].args, self.arg_grid(), listed)
        if errors:
            # Raised inside a validator, pydantic nests these under `engine`.
            raise ValidationError.from_exception_data("EngineSpec", errors)
        return self

    def arg_grid(self) -> dict[str, list[Scalar]]:
        """Each engine argument as the list of values it takes."""
        return {
            key: (value if isinstance(value, list) else [value])
            for key, value in sorted((self.model_extra or {}).items())
        }


class ServerScenario(ServerLoad):
    """OpenAI-compatible server under load: the contract's `ServerLoad` as a sweep
    file writes it. Only what the file writes differently is declared here (a name
    that may be left out, one value or a list, the bounds a file is checked
    against); `kind`, `api` and `rate_sweep` are the contract's.

    Closed loop: `concurrency` = simultaneous requests kept in flight. Open loop:
    `request_rate` (requests/s) with gamma arrivals of shape `burstiness`
    (1.0 = Poisson), optionally capped at `max_concurrency`. `slo_ttft_ms` /
    `slo_tpot_ms` are the per-request latency limits goodput is counted against
    (MLPerf Inference's Llama-2-70B server limits by default); they are not part
    of the run id (see `RunSpec.canonical_json`).
    """

    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    concurrency: Annotated[OneOrMany[Concurrency], LoadList] | None = None
    request_rate: Annotated[OneOrMany[Rate], LoadList] | None = None
    burstiness: Annotated[PositiveFloat,
                          at_most(lim.MAX_BURSTINESS, lim.WHY_BURSTINESS)] | None = None
    max_concurrency: Concurrency | None = None
    duration_s: PositiveSeconds
    warmup_s: Seconds = 10.0
    slo_ttft_ms: SloMs = DEFAULT_SLO_TTFT_MS
    slo_tpot_ms: SloMs = DEFAULT_SLO_TPOT_MS

    @model_validator(mode="after")
    def _one_load_kind(self) -> ServerScenario:
        given = [self.concurrency, self.request_rate, self.rate_sweep]
        if sum(v is not None for v in given) != 1:
            raise ValueError("give exactly one of `concurrency` (closed loop), "
                             "`request_rate` (open loop) or `rate_sweep` (open loop, "
                             "stepped to saturation)")
        if self.concurrency is not None and (
            self.burstiness is not None or self.max_concurrency is not None
        ):
            raise ValueError("`burstiness` and `max_concurrency` apply to `request_rate` "
                             "(open loop) only")
        return self

    @model_validator(mode="after")
    def _run_fits_a_day(self) -> ServerScenario:
        # One run sends for warm-up + every load point: each alone may be under a day
        # and all of them together still hold the GPUs for months.
        points = len(self.concurrency or self.request_rate or []) or \
            (self.rate_sweep.max_points if self.rate_sweep else 1)
        sending = self.warmup_s + points * self.duration_s
        if sending > lim.MAX_RUN_S:
            raise ValidationError.from_exception_data("ServerScenario", [_problem(
                ("duration_s",), f"warmup_s + {points} load point(s) × duration_s is "
                f"{sending:,.0f} s of sending in one run, above the farm's maximum of "
                f"{lim.MAX_RUN_S:,.0f} s ({lim.WHY_RUN_S})")])
        return self

    @property
    def label(self) -> str:
        """The scenario's name, else server-closed (concurrency) or server-open (rate)."""
        if self.name:
            return self.name
        if self.rate_sweep is not None:
            return "server-rate-sweep"
        return "server-closed" if self.concurrency else "server-open"


class BatchScenario(Strict):
    """Offline: `num_prompts` prompts through the engine at once."""

    kind: Literal["batch"]
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    num_prompts: OneOrMany[Annotated[Prompts, Field(gt=0)]]
    warmup_prompts: Annotated[Prompts, Field(ge=0)] = 8

    @property
    def label(self) -> str:
        """The scenario's name, else "batch"."""
        return self.name or "batch"


Scenario = Annotated[ServerScenario | BatchScenario, Field(discriminator="kind")]


class WorkloadSpec(Strict):
    """What is sent: token-length bins, decoding strategies, the prompt source."""

    input_tokens: OneOrMany[Tokens] | None = None
    output_tokens: OneOrMany[Tokens]
    decoding: OneOrMany[Decoding] = [Decoding()]
    dataset: Annotated[str, Field(min_length=1)] = "synthetic"
    seed: Annotated[int, Field(ge=0, strict=True), at_most(lim.MAX_SEED, lim.WHY_SEED)] = 0

    @model_validator(mode="after")
    def _inputs_known(self) -> WorkloadSpec:
        if self.dataset == "synthetic" and self.input_tokens is None:
            raise ValueError("a synthetic dataset needs `input_tokens`")
        return self


# The J/output token adaptive repetitions may bound, by the name the sweep file uses.
CI_FIGURES = {"gross": "energy_per_output_token_j", "net": "energy_per_output_token_net_j"}


class Repetitions(Strict):
    """Adaptive repetitions: `repetitions = { min = 3, max = 10, ci_half_width_pct = 2 }`.

    `min` repetitions of each configuration are enqueued at once; after each result
    the recorder (farm/adaptive.py) adds the next one while the 95% CI half-width of
    the configuration's J/output token (every load point's, farm.report.stats) is
    above `ci_half_width_pct` % of its mean and the configuration has fewer than
    `max` runs. Failed and invalid runs give no value but count toward `max`.

    `figure` picks the J/output token the interval is on: "gross" (the board's
    whole energy, the default) or "net" (net of the idle power measured before the
    run). For a host-bound engine the gross figure moves with the host's speed —
    idle power × time taken is most of it — while the GPU's own work per token
    does not (docs/measurement.md, the H200 runs), so "net" is the one that can
    be pinned down there; the other is still reported with its own CI.
    """

    min: Annotated[int, Field(ge=2, strict=True)] = 3
    max: Annotated[int, Field(ge=2, strict=True),
                   at_most(lim.MAX_REPETITIONS, lim.WHY_REPETITIONS)] = 10
    ci_half_width_pct: Annotated[PositiveFloat, at_most(lim.MAX_CI_PCT, lim.WHY_CI_PCT)]
    figure: Literal["gross", "net"] = "gross"

    @property
    def column(self) -> str:
        """The load-point figure the interval is on (a LoadPointResult field)."""
        return CI_FIGURES[self.figure]

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Repetitions:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


def _repetitions_form(value: Any) -> str:
    return "adaptive-repetitions" if isinstance(value, dict | Repetitions) else "repetition-count"


# `repetitions = 3` (a fixed count) or the adaptive table; the tags name the form,
# so an error is reported for the form the file used only.
RepetitionsField = Annotated[
    Annotated[PositiveInt, at_most(lim.MAX_REPETITIONS, lim.WHY_REPETITIONS),
              Tag("repetition-count")] | Annotated[Repetitions,
                                                                Tag("adaptive-repetitions")],
    Discriminator(_repetitions_form),
]


EXCLUDE_KEYS = (
    "model", "gpu", "gpus_per_run", "scenario", "input_tokens", "output_tokens",
    "decoding", "num_prompts", "power_limit_w", "sm_clock_mhz",
)


class SweepSpec(Strict):
    """A whole sweep file."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str | None = None
    repetitions: RepetitionsField = 1
    model: Annotated[list[ModelSpec], Field(min_length=1)]
    hardware: HardwareSpec
    engine: EngineSpec
    scenario: Annotated[list[Scenario], Field(min_length=1)]
    workload: WorkloadSpec
    measurement: MeasurementSpec = MeasurementSpec()
    # Combinations to leave out, e.g. { gpu = "L4", input_tokens = 2048 }.
    exclude: Annotated[list[dict[str, Scalar | list[Scalar]]],
                       most_items(lim.MAX_EXCLUDE_RULES, lim.WHY_EXCLUDE_RULES)] = []

    @property
    def adaptive(self) -> Repetitions | None:
        """The adaptive repetitions policy, None for a fixed count."""
        return self.repetitions if isinstance(self.repetitions, Repetitions) else None

    @property
    def initial_repetitions(self) -> int:
        """Repetitions of each configuration enqueued at once: the count, or `min`."""
        return self.repetitions.min if isinstance(self.repetitions, Repetitions) \
            else self.repetitions

    @field_validator("model")
    @classmethod
    def _unique_models(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        ids = [m.id for m in models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model ids must be unique, got {ids}")
        return models

    @field_validator("exclude")
    @classmethod
    def _known_exclude_keys(cls, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for rule in rules:
            if not rule:
                raise ValueError("an empty exclude rule would exclude every run")
            for key in rule:
                if key not in EXCLUDE_KEYS and not key.startswith("engine."):
                    raise ValueError(f"unknown exclude key {key!r}; known: "
                                     f"{', '.join(EXCLUDE_KEYS)}, engine.<argument>")
        return rules

    @model_validator(mode="after")
    def _within_the_farm(self) -> SweepSpec:
        # Before the run checks below, which walk the expanded runs: counted from the
        # axis lengths, so a sweep of a billion runs is refused without making one.
        from farm.sweep_bound import bound_errors  # it reads this module's models

        errors = bound_errors(self)
        if errors:
            raise ValidationError.from_exception_data("SweepSpec", errors)
        return self

    @model_validator(mode="after")
    def _scenarios_fit_engine(self) -> SweepSpec:
        engine = ENGINE_KINDS[self.engine.kind]
        unfit = engine.fit_problem([s.kind for s in self.scenario],
                                   {split_backend(g)[0] == "sim" for g in self.hardware.gpu})
        if unfit:
            raise ValueError(unfit)
        errors = _run_errors(self)
        if errors:
            raise ValidationError.from_exception_data("SweepSpec", errors)
        return self

    @model_validator(mode="after")
    def _net_target_has_baselines(self) -> SweepSpec:
        # Without idle baselines no run has a net figure: a net target would run
        # every configuration to max and bound nothing.
        policy = self.adaptive
        if policy is not None and policy.figure == "net" and \
                self.measurement.idle_baseline_s == 0:
            raise ValidationError.from_exception_data("SweepSpec", [_problem(
                ("repetitions", "figure"), "a net-of-idle target needs the idle baselines, "
                "and [measurement] idle_baseline_s is 0")])
        return self


# ------------------------------------------- what the runs need, known before a GPU

MAX_PROBLEMS_PER_CHECK = 5


def _problem(loc: tuple, message: str) -> ErrorDetails:
    return problem(loc, message)


def _run_errors(spec: SweepSpec) -> list[ErrorDetails]:
    """Checks of the expanded runs that a worker would otherwise fail at engine start,
    the engine kind's (`farm_contract.engines.EngineKind`): GPUs per run the engine
    can use, server-only arguments, each run's GPU layout (vLLM's parallel degrees
    against the GPU count) and the kind's own check (the sim engine's model fit)."""
    engine = ENGINE_KINDS[spec.engine.kind]
    batch = [s.label for s in spec.scenario if s.kind == "batch"]
    errors = [_problem(loc, message) for loc, message in engine.sweep_problems(
        spec.hardware.gpus_per_run, spec.engine.arg_grid(), batch[0] if batch else None)]
    if errors:
        return errors
    seen: dict[str, set[str]] = {}
    model_index = {m.id: i for i, m in enumerate(spec.model)}
    for run in iter_runs(spec):
        if run.repetition:
            continue
        for loc, message in engine.run_problems(run):
            # ("model",) is the run's model: located at its [[model]] entry.
            where = ("model", model_index[run.model.id]) if loc == ("model",) else loc
            found = seen.setdefault(where[0], set())
            if message not in found and len(found) < MAX_PROBLEMS_PER_CHECK:
                found.add(message)
                errors.append(_problem(where, message))
    return errors


# ------------------------------------------------------------- parsing + errors


@dataclass(frozen=True)
class Problem:
    """One problem of a sweep file: the field it is in, what is wrong, its line if known."""

    field: str
    message: str
    line: int | None = None


class SpecError(FarmError, ValueError):
    """A sweep file that cannot be used; every problem names its field and line."""

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        """The problems as text: a header naming the source, then one line per problem."""
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        for p in self.problems:
            where = f"line {p.line}: " if p.line else ""
            field = f"{p.field}: " if p.field else ""
            lines.append(f"  {where}{field}{p.message}")
        return "\n".join(lines)


def _key_lines(text: str) -> dict[tuple, int]:
    """Map TOML paths (('scenario', 1, 'duration_s')) to the line that sets them.

    A light scan of headers and `key =` lines, enough to point a user at the
    line of a validation error; tomllib itself keeps no positions.
    """
    lines: dict[tuple, int] = {}
    table: tuple = ()
    array_counts: dict[tuple, int] = {}
    header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    key_line = re.compile(r'^\s*([A-Za-z0-9_."\'-]+)\s*=')
    for number, raw in enumerate(text.splitlines(), start=1):
        match = header.match(raw)
        if match:
            path = tuple(part.strip().strip('"\'') for part in match.group(2).split("."))
            if match.group(1) == "[[":
                index = array_counts.get(path, -1) + 1
                array_counts[path] = index
                table = (*path, index)
            else:
                table = path
            lines.setdefault(table, number)
            lines.setdefault(table[:1], number)
            continue
        match = key_line.match(raw)
        if match:
            keys = tuple(k.strip().strip('"\'') for k in match.group(1).split("."))
            lines.setdefault((*table, *keys), number)
    return lines


def _field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop pydantic's union tags and validator names, keeping the path into the data."""
    path: list = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not path_is_tag(part):
            path.append(part)  # a missing or unknown key: still the user's name
            node = None
    return tuple(path)


def path_is_tag(part: str) -> bool:
    """Whether a pydantic location part is a union tag or validator name, not a user's key."""
    return (part in ("server", "batch", "adaptive-repetitions", "repetition-count")
            or "[" in part or part.startswith("function-"))


def _message(err: dict, loc: tuple, data: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1] if loc else ""
        parent = _lookup_model_fields(loc[:-1], data)
        hint = difflib.get_close_matches(str(key), parent, n=1) if parent else []
        return "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    if kind == "missing":
        return "required key is missing"
    message = err["msg"]
    return message.removeprefix("Value error, ")


_SECTION_FIELDS: dict[str, type[BaseModel]] = {
    "model": ModelSpec, "hardware": HardwareSpec, "workload": WorkloadSpec,
    "measurement": MeasurementSpec, "repetitions": Repetitions,
}


def _lookup_model_fields(loc: tuple, data: Any) -> list[str]:
    """Field names valid at `loc`, for "did you mean" hints."""
    if not loc:
        return list(SweepSpec.model_fields)
    head = loc[0]
    if head == "scenario" and len(loc) >= 2 and isinstance(data, dict):
        try:
            kind = data["scenario"][loc[1]].get("kind")
        except (KeyError, IndexError, TypeError, AttributeError):
            kind = None
        model = {"server": ServerScenario, "batch": BatchScenario}.get(kind)
        return list(model.model_fields) if model else []
    if head == "workload" and "decoding" in loc:
        return list(Decoding.model_fields)
    if head == "engine" and isinstance(data, dict):
        kind = (data.get("engine") or {}).get("kind") if isinstance(data.get("engine"),
                                                                       dict) else None
        return known_names(ENGINE_KINDS[kind].args) if kind in ENGINE_KINDS else []
    model = _SECTION_FIELDS.get(head)
    return list(model.model_fields) if model else []


def parse_sweep(text: str, source: str = "<sweep>") -> SweepSpec:
    """Parse and validate a sweep file's text. Raises `SpecError`, never anything else."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise SpecError(source, [Problem("", f"invalid TOML: {exc}",
                                         int(match.group(1)) if match else None)]) from None
    return _validate(data, text, source)


def _validate(data: Any, text: str | None, source: str) -> SweepSpec:
    """`data` as a SweepSpec; a SpecError with each problem's field, and its line in
    `text` (the file the data came from) where known."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        positions = _key_lines(text) if text is not None else {}
        problems = []
        for err in exc.errors():
            loc = _clean_loc(err["loc"], data)
            line = None
            for end in range(len(loc), 0, -1):
                line = positions.get(loc[:end])
                if line:
                    break
            problems.append(Problem(_field_name(loc) or "(top level)",
                                    _message(err, loc, data), line))
        raise SpecError(source, problems) from None


def _read(path: str | Path) -> str:
    """The file's text, refused before parsing when it is not a regular file (a device
    such as /dev/zero, or a FIFO, reads forever) or is larger than MAX_SWEEP_BYTES."""
    def refuse(message: str) -> SpecError:
        return SpecError(str(path), [Problem("", message)])

    try:
        # Non-blocking: opening a FIFO nobody writes to would wait forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise refuse("not a regular file (a device, a pipe or a folder): a sweep is "
                             "a .toml file")
            if info.st_size > lim.MAX_SWEEP_BYTES:
                raise refuse(_too_big(info.st_size))
            data = handle.read(lim.MAX_SWEEP_BYTES + 1)    # it may grow while read
        if len(data) > lim.MAX_SWEEP_BYTES:
            raise refuse(_too_big(len(data)))
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise refuse(f"cannot read the file: {exc}") from None


def _too_big(size: int) -> str:
    return (f"{size:,} bytes, above the farm's maximum of {lim.MAX_SWEEP_BYTES:,} for a sweep "
            f"file ({lim.WHY_SWEEP_BYTES}): split the study into sweeps")


def load_sweep(path: str | Path) -> tuple[SweepSpec, str]:
    """Read and validate a sweep file; returns the spec and the file's text."""
    text = _read(path)
    return parse_sweep(text, str(path)), text


def load_simulated(path: str | Path) -> tuple[SweepSpec, str, list[str]]:
    """Read a sweep file, validate it, and validate its simulated copy (`--simulate`),
    with the file's lines in both; returns the copy, the file's text and the notes
    on what the copy left out (`simulated_copy_with_notes`)."""
    text = _read(path)
    spec = parse_sweep(text, str(path))
    copy, notes = simulated_copy_with_notes(spec, text=text, source=f"{path} (--simulate)")
    return copy, text, notes


def simulated_copy(spec: SweepSpec) -> SweepSpec:
    """The same sweep on simulated GPUs with the simulated engine (notes dropped);
    see `simulated_copy_with_notes`."""
    return simulated_copy_with_notes(spec)[0]


def simulated_copy_with_notes(spec: SweepSpec, *, text: str | None = None,
                              source: str = "<sweep> (--simulate)",
                              ) -> tuple[SweepSpec, list[str]]:
    """The same sweep on simulated GPUs with the simulated engine, and notes for the user.

    The name gets a "-sim" suffix so simulated runs never share a sweep (or a
    report) with measured ones. Engine arguments are mapped explicitly: those
    the sim engine takes (named as vLLM's: `max_num_seqs`,
    `gpu_memory_utilization`; hf's `batch_size` as `max_num_seqs`) are carried,
    every other one is dropped with a
    note, and so is an `[[exclude]]` rule that names a dropped one. The copy is
    validated as a sweep of its own (the model's size, memory fit), its
    problems located at the lines of `text`. Raises SpecError.
    """
    def as_sim(name: str) -> str:
        return name if split_backend(name)[0] == "sim" else f"sim:{name}"

    if any(split_backend(g)[0] == "cpu" for g in spec.hardware.gpu):
        line = _key_lines(text).get(("hardware", "gpu")) if text is not None else None
        raise SpecError(source, [Problem(
            "hardware.gpu", '"cpu" has no simulated counterpart (the sim engine models '
            "catalogue GPUs): --simulate needs a sweep on GPUs", line)])
    notes: list[str] = []
    carried: dict[str, Any] = {}
    # The kind's own mapping (`EngineKind.simulate_as`); the rest by the sim engine's names.
    mapping = ENGINE_KINDS[spec.engine.kind].simulate_as
    renamed = {key: sim_name for key, (sim_name, _) in mapping.items()}
    takes = set(ENGINE_KINDS[SIMULATOR].args.model_fields)
    for key, value in sorted((spec.engine.model_extra or {}).items()):
        if key in mapping:
            carried[renamed[key]] = value
            notes.append(f"--simulate: engine argument {key} = {value!r} carried as "
                         f"{renamed[key]} ({mapping[key][1]})")
        elif key in takes:
            carried[key] = value
        else:
            notes.append(f"--simulate: engine argument {key} = {value!r} dropped: the sim "
                         "engine does not model it")
    exclude = []
    dropped: dict[str, list[int]] = {}      # the dropped arguments a rule names → rules
    for number, given in enumerate(spec.exclude, start=1):
        # A rule naming a renamed argument names it as the copy does.
        rule = {f"engine.{renamed[k.removeprefix('engine.')]}"
                if k.startswith("engine.") and k.removeprefix("engine.") in renamed else k: v
                for k, v in given.items()}
        gone = sorted(k for k in rule if k.startswith("engine.")
                      and k.removeprefix("engine.") not in carried)
        if gone:
            dropped.setdefault(", ".join(gone), []).append(number)
            continue
        # Exclude rules that name GPUs must keep matching the renamed GPUs.
        exclude.append({k: ([as_sim(str(x)) for x in v] if isinstance(v, list)
                            else as_sim(str(v))) if k == "gpu" else v
                        for k, v in rule.items()})
    for names, numbers in dropped.items():
        rules = f"rule {numbers[0]}" if len(numbers) == 1 else \
            f"rules {', '.join(map(str, numbers))}"
        notes.append(f"--simulate: [[exclude]] {rules} dropped: naming {names}, which the "
                     "simulated sweep does not set")
    data = spec.model_dump(mode="python")
    for key in TUNING_FIELDS:
        if data["hardware"].pop(key, None) is not None:
            notes.append(f"--simulate: [hardware] {key} dropped: the sim engine does not "
                         "model it")
    data["name"] = spec.name if spec.name.endswith("-sim") else f"{spec.name}-sim"
    data["hardware"]["gpu"] = [as_sim(n) for n in spec.hardware.gpu]
    data["engine"] = {"kind": SIMULATOR, **carried}
    data["exclude"] = exclude
    return _validate(data, text, source), notes
