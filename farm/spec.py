"""The sweep file (sweep.toml) and the concrete runs it expands into.

Pure: standard library and pydantic only. `SweepSpec` is what a lab writes;
`RunSpec` is one measurement, fully concrete, that travels to a GPU worker as
JSON. A run's identity is the hash of its canonical RunSpec (`run_id`), so the
same sweep enqueued twice produces the same ids and nothing twice.

Every list in a sweep is a dimension (cartesian product) except a server
scenario's load list (`concurrency` or `request_rate`): those are load points,
all measured against one engine start within one run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from farm.routing import CPU_SLUG, UnknownGpuError, queue_for, resolve_gpu, split_backend

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
    params_b: PositiveFloat | None = None


class HardwareSpec(Strict):
    """GPU models (friendly names; "sim:H100" for a simulated one) and GPUs per run."""

    gpu: OneOrMany[str]
    gpus_per_run: OneOrMany[PositiveInt] = [1]

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
    def _one_cpu_per_host(self) -> HardwareSpec:
        if any(split_backend(n)[0] == "cpu" for n in self.gpu) and max(self.gpus_per_run) > 1:
            raise ValueError('"cpu" is one device per host: gpus_per_run must be [1] '
                             "(put multi-GPU runs in a sweep of their own)")
        return self


def _canonical_gpu(name: str) -> tuple[str, str]:
    backend, model_name = split_backend(name)
    return backend, resolve_gpu(model_name).slug


ENGINE_KINDS = ("vllm", "hf", "sim")
_ARG_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class EngineSpec(BaseModel):
    """`kind` plus any engine argument; an argument given as a list is swept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["vllm", "hf", "sim"]

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
        return self

    def arg_grid(self) -> dict[str, list[Scalar]]:
        """Each engine argument as the list of values it takes."""
        return {
            key: (value if isinstance(value, list) else [value])
            for key, value in sorted((self.model_extra or {}).items())
        }


# Goodput limits: MLPerf Inference's Llama-2-70B server scenario (v4.0 onwards).
DEFAULT_SLO_TTFT_MS = 2000.0
DEFAULT_SLO_TPOT_MS = 200.0


class ServerScenario(Strict):
    """OpenAI-compatible server under load.

    Closed loop: `concurrency` = simultaneous requests kept in flight. Open loop:
    `request_rate` (requests/s) with gamma arrivals of shape `burstiness`
    (1.0 = Poisson), optionally capped at `max_concurrency`. `slo_ttft_ms` /
    `slo_tpot_ms` are the per-request latency limits goodput is counted against
    (MLPerf Inference's Llama-2-70B server limits by default); they are not part
    of the run id (see `RunSpec.canonical_json`).
    """

    kind: Literal["server"]
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    concurrency: OneOrMany[PositiveInt] | None = None
    request_rate: OneOrMany[PositiveFloat] | None = None
    burstiness: PositiveFloat | None = None
    max_concurrency: PositiveInt | None = None
    duration_s: PositiveFloat
    warmup_s: NonNegativeFloat = 10.0
    api: Literal["completions", "chat"] = "completions"
    slo_ttft_ms: PositiveFloat = DEFAULT_SLO_TTFT_MS
    slo_tpot_ms: PositiveFloat = DEFAULT_SLO_TPOT_MS

    @model_validator(mode="after")
    def _one_load_kind(self) -> ServerScenario:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of `concurrency` (closed loop) or "
                             "`request_rate` (open loop)")
        if self.concurrency is not None and (
            self.burstiness is not None or self.max_concurrency is not None
        ):
            raise ValueError("`burstiness` and `max_concurrency` apply to `request_rate` "
                             "(open loop) only")
        return self

    @property
    def label(self) -> str:
        return self.name or ("server-closed" if self.concurrency else "server-open")


class BatchScenario(Strict):
    """Offline: `num_prompts` prompts through the engine at once."""

    kind: Literal["batch"]
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    num_prompts: OneOrMany[PositiveInt]
    warmup_prompts: Annotated[int, Field(ge=0, strict=True)] = 8

    @property
    def label(self) -> str:
        return self.name or "batch"


Scenario = Annotated[ServerScenario | BatchScenario, Field(discriminator="kind")]


class Decoding(Strict):
    """Decoding strategy. temperature 0 is greedy."""

    temperature: NonNegativeFloat = 0.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: PositiveInt | None = None

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
        if self.temperature == 0:
            return "greedy"
        label = f"t{self.temperature:g}-p{self.top_p:g}"
        return label + (f"-k{self.top_k}" if self.top_k else "")


class WorkloadSpec(Strict):
    """What is sent: token-length bins, decoding strategies, the prompt source."""

    input_tokens: OneOrMany[PositiveInt] | None = None
    output_tokens: OneOrMany[PositiveInt]
    decoding: OneOrMany[Decoding] = [Decoding()]
    dataset: Annotated[str, Field(min_length=1)] = "synthetic"
    seed: Annotated[int, Field(ge=0, strict=True)] = 0

    @model_validator(mode="after")
    def _inputs_known(self) -> WorkloadSpec:
        if self.dataset == "synthetic" and self.input_tokens is None:
            raise ValueError("a synthetic dataset needs `input_tokens`")
        return self


class MeasurementSpec(Strict):
    """How energy is measured; stored with every result."""

    sample_period_s: Annotated[float, Field(ge=0.01, le=10)] = 0.1
    idle_baseline_s: NonNegativeFloat = 10.0
    # ISO 3166-1 alpha-3 country of the grid, for CodeCarbon's emissions.
    region: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    # Validity: a steady-state window shorter than this fails the run's checks.
    # Lower it for smoke tests only; the value is stored with every verdict.
    min_steady_s: NonNegativeFloat = 30.0
    # Counter vs timeline: windows at least `agreement_min_window_s` long whose two
    # energy figures differ by more than `agreement_tolerance` are flagged.
    agreement_tolerance: Annotated[float, Field(gt=0, le=1)] = 0.03
    agreement_min_window_s: NonNegativeFloat = 5.0
    # Preflight: wait up to this long for the GPUs to cool to within
    # `cooldown_band_c` of their idle temperature (then go on, recording it).
    cooldown_timeout_s: NonNegativeFloat = 300.0
    cooldown_band_c: PositiveFloat = 5.0
    # CPU and RAM energy and emissions through CodeCarbon (offline tracker).
    codecarbon: bool = True


EXCLUDE_KEYS = (
    "model", "gpu", "gpus_per_run", "scenario", "input_tokens", "output_tokens",
    "decoding", "num_prompts",
)


class SweepSpec(Strict):
    """A whole sweep file."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str | None = None
    repetitions: PositiveInt = 1
    model: Annotated[list[ModelSpec], Field(min_length=1)]
    hardware: HardwareSpec
    engine: EngineSpec
    scenario: Annotated[list[Scenario], Field(min_length=1)]
    workload: WorkloadSpec
    measurement: MeasurementSpec = MeasurementSpec()
    # Combinations to leave out, e.g. { gpu = "L4", input_tokens = 2048 }.
    exclude: list[dict[str, Scalar | list[Scalar]]] = []

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
    def _scenarios_fit_engine(self) -> SweepSpec:
        simulated = {split_backend(g)[0] == "sim" for g in self.hardware.gpu}
        # One sweep is all simulated or all measured: reports never mix the two.
        if self.engine.kind == "sim" and simulated != {True}:
            raise ValueError('the sim engine runs on simulated GPUs only: name them "sim:MODEL"')
        if self.engine.kind != "sim" and True in simulated:
            raise ValueError(f"the {self.engine.kind} engine needs real GPUs; simulated ones "
                             '("sim:…") take engine kind "sim"')
        if self.engine.kind == "hf":
            for scenario in self.scenario:
                if scenario.kind == "server":
                    raise ValueError("the hf engine runs batch scenarios only")
        return self


# ---------------------------------------------------------------- concrete runs


class RunHardware(Strict):
    backend: Literal["gpu", "sim", "cpu"]
    gpu_model: str
    gpu_count: PositiveInt

    @property
    def queue(self) -> str:
        return queue_for(self.backend, self.gpu_model, self.gpu_count)


class RunEngine(Strict):
    kind: Literal["vllm", "hf", "sim"]
    args: dict[str, Scalar] = {}


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

    @property
    def load_points(self) -> list[tuple[str, float]]:
        if self.concurrency is not None:
            return [("concurrency", float(c)) for c in self.concurrency]
        return [("request_rate", r) for r in self.request_rate or []]


class BatchLoad(Strict):
    kind: Literal["batch"]
    name: str
    num_prompts: int
    warmup_prompts: int

    @property
    def load_points(self) -> list[tuple[str, float]]:
        return [("batch", float(self.num_prompts))]


class RunWorkload(Strict):
    input_tokens: int | None
    output_tokens: int
    decoding: Decoding
    dataset: str
    seed: int


# Fields of a RunSpec left out of its run id: goodput can be recounted from the
# per-request records under any SLO, so changing the limits measures nothing new
# (and run ids from before the SLO existed stay the same).
NOT_IN_RUN_ID: dict[str, Any] = {"scenario": {"slo_ttft_ms", "slo_tpot_ms"}}


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
        return _compact(self.model_dump(mode="json", exclude=NOT_IN_RUN_ID))

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
        return self.hardware.backend == "sim" or self.engine.kind == "sim"


def sweep_id(name: str) -> str:
    """A sweep is identified by its name: re-enqueueing a file extends the same sweep."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


# ------------------------------------------------------------- parsing + errors


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    line: int | None = None


class SpecError(ValueError):
    """A sweep file that cannot be used; every problem names its field and line."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
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
    return part in ("server", "batch") or "[" in part or part.startswith("function-")


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
    "measurement": MeasurementSpec,
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
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        positions = _key_lines(text)
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


def load_sweep(path: str | Path) -> tuple[SweepSpec, str]:
    """Read and validate a sweep file; returns the spec and the file's text."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [Problem("", f"cannot read the file: {exc}")]) from None
    return parse_sweep(text, str(path)), text


def simulated_copy(spec: SweepSpec) -> SweepSpec:
    """The same sweep on simulated GPUs with the simulated engine.

    The name gets a "-sim" suffix so simulated runs never share a sweep (or a
    report) with measured ones.
    """
    def as_sim(name: str) -> str:
        return name if split_backend(name)[0] == "sim" else f"sim:{name}"

    gpus = [as_sim(n) for n in spec.hardware.gpu]
    # Exclude rules that name GPUs must keep matching the renamed GPUs.
    exclude = [{k: ([as_sim(str(x)) for x in v] if isinstance(v, list) else as_sim(str(v)))
                if k == "gpu" else v for k, v in rule.items()} for rule in spec.exclude]
    name = spec.name if spec.name.endswith("-sim") else f"{spec.name}-sim"
    engine = EngineSpec.model_validate({**spec.engine.model_dump(), "kind": "sim"})
    return spec.model_copy(update={
        "name": name,
        "hardware": spec.hardware.model_copy(update={"gpu": gpus}),
        "engine": engine,
        "exclude": exclude,
    })
