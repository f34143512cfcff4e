"""The run specification: one measurement, fully concrete, as it travels to a worker.

Part of the contract between the coordinator and the workers (standard library
and pydantic only). A run's identity is the hash of its canonical JSON
(`RunSpec.run_id`), so the same sweep enqueued twice gives the same ids and
nothing twice. The sweep file that expands into these lives on the coordinator
(`farm.spec`); the parts a sweep names verbatim (`ModelSpec`, `Decoding`,
`MeasurementSpec`) are defined here, once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from farm_contract import limits as lim
from farm_contract.engines import EngineKindName, engine_kind
from farm_contract.limits import at_most
from farm_contract.routing import queue_for
from farm_contract.rules import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS

T = TypeVar("T")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
Scalar = bool | int | float | str


def _listify(value: Any) -> Any:
    """Accept a scalar where a list is expected: `gpus_per_run = 1` means [1]."""
    if value is None or isinstance(value, list):
        return value
    return [value]


# A non-empty list that also accepts a single value.
OneOrMany = Annotated[list[T], BeforeValidator(_listify), Field(min_length=1)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# A time a sweep gives (a wait, a window, a baseline): never longer than a run can be.
Seconds = Annotated[NonNegativeFloat, at_most(lim.MAX_RUN_S, lim.WHY_RUN_S)]
PositiveSeconds = Annotated[PositiveFloat, at_most(lim.MAX_RUN_S, lim.WHY_RUN_S)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must fail here, not hours later on a GPU node."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """A model under test. `source` is a hub id or a local path, resolved on the worker."""

    id: Annotated[str, Field(pattern=NAME_PATTERN)]
    source: Annotated[str, Field(min_length=1)]
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    revision: str | None = None
    tokenizer: str | None = None
    # Parameter count in billions. Only the simulated engine needs it, and only
    # when the id or source does not say it (as "…-8B" does).
    params_b: Annotated[PositiveFloat, at_most(lim.MAX_PARAMS_B, lim.WHY_PARAMS_B)] | None = None


class Decoding(Strict):
    """Decoding strategy. temperature 0 is greedy."""

    temperature: Annotated[NonNegativeFloat,
                           at_most(lim.MAX_TEMPERATURE, lim.WHY_TEMPERATURE)] = 0.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[PositiveInt, at_most(lim.MAX_TOP_K, lim.WHY_TOP_K)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, value: Any) -> Any:
        if value == "greedy":
            return {"temperature": 0.0}
        if isinstance(value, str):
            raise ValueError(f'unknown decoding {value!r}: use "greedy" or a table like '
                             "{ temperature = 0.8, top_p = 0.95 }")
        return value

    @property
    def label(self) -> str:
        """A short name for the strategy: "greedy", or e.g. "t0.8-p0.95-k50"."""
        if self.temperature == 0:
            return "greedy"
        label = f"t{self.temperature:g}-p{self.top_p:g}"
        return label + (f"-k{self.top_k}" if self.top_k else "")


class QuietGateSpec(Strict):
    """The quiet-GPU gate, before each run's idle baselines (`workers.quietgate`).

    A GPU is quiet when, over the last `window_s`: its mean power is within the
    band of the lowest quiet power this worker has seen on it (its idle
    reference), the window's two halves differ by no more than the band (power
    is not still falling), and its utilisation stays at or below
    `max_utilization_pct`. The band is `power_band_pct` of the mean, at least
    `power_band_w`. After `timeout_s` the run goes on and records what the gate saw.
    Applies to real GPUs; simulated GPUs and the CPU record that it did not.
    """

    enabled: bool = True
    window_s: PositiveSeconds = 10.0
    power_band_pct: Annotated[float, Field(gt=0, le=50)] = 2.0
    power_band_w: Annotated[PositiveFloat, at_most(lim.MAX_POWER_W, lim.WHY_POWER_W)] = 1.0
    max_utilization_pct: Annotated[float, Field(ge=0, le=100)] = 1.0
    timeout_s: Seconds = 180.0


class MeasurementSpec(Strict):
    """How energy is measured; stored with every result."""

    sample_period_s: Annotated[float, Field(ge=0.01, le=10)] = 0.1
    idle_baseline_s: Seconds = 10.0
    # ISO 3166-1 alpha-3 country of the grid, for CodeCarbon's emissions.
    region: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    # Validity: a steady-state window shorter than this fails the run's checks.
    # Lower it for smoke tests only; the value is stored with every verdict.
    min_steady_s: Seconds = 30.0
    # Counter vs timeline: windows at least `agreement_min_window_s` long whose two
    # energy figures differ by more than `agreement_tolerance` are flagged.
    agreement_tolerance: Annotated[float, Field(gt=0, le=1)] = 0.03
    agreement_min_window_s: Seconds = 5.0
    # Preflight: wait up to this long for the GPUs to cool to within
    # `cooldown_band_c` of their idle temperature (then go on, recording it).
    cooldown_timeout_s: Seconds = 300.0
    cooldown_band_c: Annotated[PositiveFloat,
                               at_most(lim.MAX_TEMPERATURE_C, lim.WHY_TEMPERATURE_C)] = 5.0
    # CPU and RAM energy and emissions through CodeCarbon (offline tracker).
    codecarbon: bool = True
    # Before the idle baselines: wait for the GPUs to be at rest (QuietGateSpec).
    quiet: QuietGateSpec = QuietGateSpec()
    # Self-sizing steady state: a batch load point repeats its prompts (same order,
    # same seeds) and a server load point keeps sending until its steady window
    # lasts min_steady_s × (1 + steady_margin_pct / 100): a fixed prompt count or
    # duration cannot fill the window on every GPU. At most `max_passes` passes
    # (server: max_passes × duration_s of sending), so a broken engine cannot loop.
    self_size: bool = True
    steady_margin_pct: Annotated[float, Field(ge=0, le=100)] = 10.0
    max_passes: Annotated[int, Field(ge=1, le=1000, strict=True)] = 20

    @property
    def steady_target_s(self) -> float:
        """How long self-sizing makes each steady window (0: self-sizing off)."""
        if not self.self_size:
            return 0.0
        return self.min_steady_s * (1.0 + self.steady_margin_pct / 100.0)


# ---------------------------------------------------------------- concrete runs


# The GPU settings a sweep may set per run (RunHardware's fields of the same names):
# sweep axes, result columns, and what a configuration's identity includes.
TUNING_FIELDS = ("power_limit_w", "sm_clock_mhz")
# A tuning value meaning the GPU's own default: its default power limit set, its SM
# clock unlocked. Not the same as leaving the key out (the GPU as it is found), and
# not a lock at the maximum clock (on an H100 that raised idle power 71 → 127 W).
DEFAULT = "default"
Default = Literal["default"]


class RunHardware(Strict):
    """The GPUs a run needs: `gpu_count` of model `gpu_model` (a slug) on `backend`."""

    backend: Literal["gpu", "sim", "cpu"]
    gpu_model: str
    gpu_count: PositiveInt
    # Set by the worker through the driver for the run and restored after it
    # (`workers.gpu.tuning`); None leaves the GPU as it is, "default" sets the
    # GPU's default limit / unlocks its SM clock.
    power_limit_w: PositiveFloat | Default | None = None
    sm_clock_mhz: PositiveInt | Default | None = None

    @property
    def queue(self) -> str:
        """The queue name for this hardware, e.g. "gpu.h100-80gb.x2"."""
        return queue_for(self.backend, self.gpu_model, self.gpu_count)


class RunEngine(Strict):
    """The engine kind that serves the run, with the arguments passed to it."""

    kind: EngineKindName
    args: dict[str, Scalar] = {}


class RateSweep(Strict):
    """An open-loop rate sweep from near idle to saturation (`workers.ratesweep`).

    Load point k offers `start` × `factor`^k req/s, up to `max_points` of them;
    the sweep stops after the first point that meets a stop rule: achieved
    throughput below `min_achieved_pct` % of the rate actually offered
    (`achieved_below_offered`), throughput up less than `min_gain_pct` % over the
    previous point (`throughput_flat`), or median TTFT above `max_ttft_growth` ×
    the first point's (`ttft_growth`). Throughput rules judge only points with at
    least `min_requests` requests in their steady window (fewer: counting noise).
    """

    start: Annotated[PositiveFloat, at_most(lim.MAX_REQUEST_RATE, lim.WHY_REQUEST_RATE)] = 0.05
    factor: Annotated[float, Field(gt=1, le=100, allow_inf_nan=False)] = 2.0
    max_points: Annotated[int, Field(ge=2, le=64, strict=True)] = 12
    min_achieved_pct: Annotated[float, Field(gt=0, le=100)] = 90.0
    min_gain_pct: Annotated[float, Field(ge=0, le=1000)] = 5.0
    max_ttft_growth: Annotated[float, Field(gt=1, allow_inf_nan=False),
                               at_most(lim.MAX_GROWTH, lim.WHY_GROWTH)] = 10.0
    min_requests: Annotated[int, Field(ge=1, strict=True),
                            at_most(lim.MAX_PROMPTS, lim.WHY_PROMPTS)] = 20

    @property
    def rates(self) -> list[float]:
        """Every rate the sweep may offer (req/s), lowest first."""
        return [float(f"{self.start * self.factor ** k:.6g}") for k in range(self.max_points)]


class ServerLoad(Strict):
    """A server scenario with its load points, all measured against one engine start.

    The SLO limits say how goodput is counted, not what is measured: they are
    left out of the run id (`RunSpec.canonical_json`).
    """

    kind: Literal["server"]
    name: str
    concurrency: list[int] | None = None
    request_rate: list[float] | None = None
    burstiness: float | None = None
    max_concurrency: int | None = None
    duration_s: float
    warmup_s: float
    api: Literal["completions", "chat"] = "completions"
    slo_ttft_ms: PositiveFloat = DEFAULT_SLO_TTFT_MS
    slo_tpot_ms: PositiveFloat = DEFAULT_SLO_TPOT_MS
    # Open loop, rates stepped until the server saturates (instead of request_rate).
    rate_sweep: RateSweep | None = None

    @property
    def load_points(self) -> list[tuple[str, float]]:
        """The (axis, value) of each load point: by concurrency if given, else by request
        rate; a rate sweep's are the most it may run (it stops at saturation)."""
        if self.concurrency is not None:
            return [("concurrency", float(c)) for c in self.concurrency]
        if self.rate_sweep is not None:
            return [("request_rate", r) for r in self.rate_sweep.rates]
        return [("request_rate", r) for r in self.request_rate or []]


class BatchLoad(Strict):
    """An offline batch scenario: `num_prompts` prompts after `warmup_prompts` unmeasured ones."""

    kind: Literal["batch"]
    name: str
    num_prompts: int
    warmup_prompts: int

    @property
    def load_points(self) -> list[tuple[str, float]]:
        """The batch's single load point: ("batch", the number of prompts)."""
        return [("batch", float(self.num_prompts))]


class RunWorkload(Strict):
    """What one run sends: its token lengths, decoding strategy and prompt source.

    `input_tokens` None means the dataset's prompts at their own lengths (a
    synthetic dataset needs it); `seed` fixes the prompt order and sampling seeds.
    """

    input_tokens: int | None
    output_tokens: int
    decoding: Decoding
    dataset: str
    seed: int


# Fields of a RunSpec left out of its run id: goodput can be recounted from the
# per-request records under any SLO, so changing the limits measures nothing new
# (and run ids from before the SLO existed stay the same).
NOT_IN_RUN_ID: dict[str, Any] = {"scenario": {"slo_ttft_ms", "slo_tpot_ms"}}
# Fields added after runs were first stored: left out of the id while at their
# default, so every run id from before stays the same; a sweep that sets one
# measures something else and gets new ids.
IN_RUN_ID_UNLESS_DEFAULT: dict[str, dict[str, Any]] = {
    "measurement": {"quiet": QuietGateSpec().model_dump(mode="json"),
                    "self_size": True, "steady_margin_pct": 10.0, "max_passes": 20},
    "scenario": {"rate_sweep": None},
    "hardware": {"power_limit_w": None, "sm_clock_mhz": None},
}


def _compact(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class RunSpec(Strict):
    """One measurement, fully concrete. `run_id` is its identity."""

    schema_version: Literal[1] = 1
    sweep: str
    repetition: int
    model: ModelSpec
    hardware: RunHardware
    engine: RunEngine
    scenario: Annotated[ServerLoad | BatchLoad, Field(discriminator="kind")]
    workload: RunWorkload
    measurement: MeasurementSpec

    def canonical_json(self) -> str:
        """The run's identity: every field but those in `NOT_IN_RUN_ID` (which say how
        the results are read, not what is measured), sorted keys, no spaces."""
        data = self.model_dump(mode="json", exclude=NOT_IN_RUN_ID)
        for part, defaults in IN_RUN_ID_UNLESS_DEFAULT.items():
            for key, default in defaults.items():
                if key in data[part] and data[part][key] == default:
                    del data[part][key]
        return _compact(data)

    def to_json(self) -> str:
        """Everything, as sent to a worker and kept in the store (`canonical_json`
        plus the fields left out of the id)."""
        return _compact(self.model_dump(mode="json"))

    @property
    def run_id(self) -> str:
        """Stable hash of the canonical content (which includes the repetition index)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:24]

    @property
    def simulated(self) -> bool:
        """Whether the run's GPUs or its engine are simulated (its figures are not measurements)."""
        return self.hardware.backend == "sim" or engine_kind(self.engine.kind).simulated


def sweep_id(name: str) -> str:
    """A sweep is identified by its name: re-enqueueing a file extends the same sweep."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]
