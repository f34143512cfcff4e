"""Expand a SweepSpec into concrete RunSpecs. Pure: no I/O.

The cartesian product runs over models × GPU models × GPUs per run × power
limits × SM clock locks × engine argument values × scenarios (× num_prompts for
batch) × input lengths × output lengths × decoding strategies, then `exclude`
rules drop combinations, then each survivor is repeated `repetitions` times
(repetition is part of the run id); an adaptive
`repetitions = { min, max, ci_half_width_pct }` expands to `min`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from farm.errors import InvalidInput
from farm_contract.routing import resolve_gpu, split_backend
from farm_contract.runspec import (
    BatchLoad,
    RunEngine,
    RunHardware,
    RunSpec,
    RunWorkload,
    ServerLoad,
)

if TYPE_CHECKING:   # farm.spec's validator expands a sweep to check its runs (farm.sweep_checks)
    from farm.spec import BatchScenario, ServerScenario, SweepSpec


def _scenario_variants(scenario: ServerScenario | BatchScenario) -> list[ServerLoad | BatchLoad]:
    if scenario.kind == "batch":
        return [
            BatchLoad(kind="batch", name=scenario.label, num_prompts=n,
                      warmup_prompts=scenario.warmup_prompts)
            for n in scenario.num_prompts
        ]
    # The sweep's scenario is a ServerLoad already: the run's takes its fields, named,
    # and Poisson arrivals where an open loop gave no burstiness.
    open_loop = scenario.request_rate or scenario.rate_sweep
    return [ServerLoad(**{
        **dict(scenario), "name": scenario.label,
        "burstiness": (scenario.burstiness if scenario.burstiness is not None
                       else (1.0 if open_loop else None)),
    })]


def _dimensions(run: RunSpec, gpu_name: str) -> dict[str, Any]:
    """The values an `exclude` rule can match, by the names the sweep file uses."""
    dims: dict[str, Any] = {
        "model": run.model.id,
        "gpu": gpu_name,
        "gpus_per_run": run.hardware.gpu_count,
        "scenario": run.scenario.name,
        "input_tokens": run.workload.input_tokens,
        "output_tokens": run.workload.output_tokens,
        "decoding": run.workload.decoding.label,
        "num_prompts": getattr(run.scenario, "num_prompts", None),
        "power_limit_w": run.hardware.power_limit_w,
        "sm_clock_mhz": run.hardware.sm_clock_mhz,
    }
    dims.update({f"engine.{k}": v for k, v in run.engine.args.items()})
    return dims


def _matches(rule: dict[str, Any], dims: dict[str, Any]) -> bool:
    for key, wanted in rule.items():
        values = wanted if isinstance(wanted, list) else [wanted]
        actual = dims.get(key)
        if key == "gpu":
            # Compare GPU names by canonical model, so "H100" matches "H100-80GB".
            actual_slug = _gpu_key(actual)
            if not any(_gpu_key(str(v)) == actual_slug for v in values):
                return False
        elif key == "scenario":
            if actual not in values:
                return False
        elif actual not in values:
            return False
    return True


def _gpu_key(name: str) -> tuple[str, str]:
    backend, model_name = split_backend(name)
    try:
        return backend, resolve_gpu(model_name).slug
    except ValueError:
        return backend, model_name


def iter_runs(spec: SweepSpec) -> Iterator[RunSpec]:
    """Every run of the sweep, in a stable order."""
    engine_grid = spec.engine.arg_grid()
    engine_keys = list(engine_grid)
    engine_combos = list(itertools.product(*engine_grid.values())) or [()]
    scenarios = [v for s in spec.scenario for v in _scenario_variants(s)]
    workload = spec.workload
    inputs = workload.input_tokens or [None]
    hardware = spec.hardware
    # None: the GPUs are left as they are (and the run id is the one from before).
    tuning = list(itertools.product(hardware.power_limit_w or [None],
                                    hardware.sm_clock_mhz or [None]))
    for (model, gpu_name, gpu_count, (power_limit_w, sm_clock_mhz), combo, scenario, n_in,
         n_out, decoding) in itertools.product(
        spec.model, hardware.gpu, hardware.gpus_per_run, tuning, engine_combos,
        scenarios, inputs, workload.output_tokens, workload.decoding,
    ):
        backend, model_name = split_backend(gpu_name)
        base = dict(
            sweep=spec.name,
            model=model,
            hardware=RunHardware(backend=backend, gpu_model=resolve_gpu(model_name).slug,
                                 gpu_count=gpu_count, power_limit_w=power_limit_w,
                                 sm_clock_mhz=sm_clock_mhz),
            engine=RunEngine(kind=spec.engine.kind, args=dict(zip(engine_keys, combo))),
            scenario=scenario,
            workload=RunWorkload(input_tokens=n_in, output_tokens=n_out, decoding=decoding,
                                 dataset=workload.dataset, seed=workload.seed),
            measurement=spec.measurement,
        )
        first = RunSpec(repetition=0, **base)
        dims = _dimensions(first, gpu_name)
        if any(_matches(rule, dims) for rule in spec.exclude):
            continue
        yield first
        # Adaptive repetitions: min at enqueue, the recorder adds the rest (farm.adaptive).
        for repetition in range(1, spec.initial_repetitions):
            yield first.model_copy(update={"repetition": repetition})


def expand(spec: SweepSpec) -> list[RunSpec]:
    """Every run of the sweep, as a list (`iter_runs`, same order). A sweep whose
    `[[exclude]]` rules leave no run is refused (InvalidInput): it would do nothing."""
    runs = list(iter_runs(spec))
    if not runs:
        raise InvalidInput(
            f"sweep {spec.name!r}: its [[exclude]] rules ({len(spec.exclude)}) exclude every "
            "run, so nothing would be measured: narrow or remove a rule")
    return runs


def plan(runs: list[RunSpec]) -> Counter[str]:
    """Number of runs per queue."""
    return Counter(run.hardware.queue for run in runs)
