"""The sweep file's (sweep.toml's) pydantic models: what a lab writes, validated.

Pure: standard library and pydantic only. `SweepSpec` is what a lab writes;
it expands (`farm.sweep`) into `farm_contract.runspec.RunSpec`s, one
measurement each, fully concrete, that travel to GPU workers as JSON. A run's
identity is the hash of its canonical RunSpec (`run_id`), so the same sweep
enqueued twice produces the same ids and nothing twice.

Every list in a sweep is a dimension (cartesian product) except a server
scenario's load list (`concurrency` or `request_rate`): those are load points,
all measured against one engine start within one run.

Reading a file into these models, with each problem located at its field and
line, is `farm.sweep_file`'s job; the checks of the expanded runs are
`farm.sweep_checks`'; the `--simulate` copy is `farm.simulate`'s.
"""

from __future__ import annotations

import re
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

from farm.sweep_bound import bound_errors
from farm.sweep_checks import run_errors
from farm_contract import limits as lim
from farm_contract.engine_args import ErrorDetails, grid_errors, problem
from farm_contract.engines import ENGINE_KINDS, EngineKindName
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
            raise ValidationError.from_exception_data("ServerScenario", [problem(
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
        errors = run_errors(self)
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
            raise ValidationError.from_exception_data("SweepSpec", [problem(
                ("repetitions", "figure"), "a net-of-idle target needs the idle baselines, "
                "and [measurement] idle_baseline_s is 0")])
        return self
