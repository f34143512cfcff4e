"""What the runs of a sweep need, known before a GPU: the engine kind's checks of
the expanded runs (GPUs per run, server-only arguments, each run's GPU layout, the
kind's own check), located at the sweep's fields.

`SweepSpec` runs them in a validator, after `farm.sweep_bound` has bounded the
expansion; this module expands the sweep (`farm.sweep.iter_runs`), and
`farm.sweep` reads `farm.spec`'s models for annotations only, so no import
comes back here at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from farm.sweep import iter_runs
from farm_contract.engine_args import ErrorDetails, problem
from farm_contract.engines import ENGINE_KINDS

if TYPE_CHECKING:
    from farm.spec import SweepSpec

MAX_PROBLEMS_PER_CHECK = 5


def run_errors(spec: SweepSpec) -> list[ErrorDetails]:
    """Checks of the expanded runs that a worker would otherwise fail at engine start,
    the engine kind's (`farm_contract.engines.EngineKind`): GPUs per run the engine
    can use, server-only arguments, each run's GPU layout (vLLM's parallel degrees
    against the GPU count) and the kind's own check (the sim engine's model fit)."""
    engine = ENGINE_KINDS[spec.engine.kind]
    batch = [s.label for s in spec.scenario if s.kind == "batch"]
    server = [s.label for s in spec.scenario if s.kind == "server"]
    errors = [problem(loc, message) for loc, message in engine.sweep_problems(
        spec.hardware.gpus_per_run, spec.engine.arg_grid(), batch[0] if batch else None,
        server[0] if server else None)]
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
                errors.append(problem(where, message))
    return errors
