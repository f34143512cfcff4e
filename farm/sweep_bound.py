"""How many runs a sweep may expand to, from its axis lengths, without expanding it.

`farm.sweep.iter_runs` walks the cartesian product, and `validate` itself walks it
once for the run checks: a sweep of a billion combinations would hold the
coordinator for hours before any error. Multiplying the axis lengths costs
nothing, so the bound is checked first (`SweepSpec._within_the_farm`). The count
is taken before `[[exclude]]` — the walk that applies the rules costs that much —
and with an adaptive table's `max` repetitions, the most the recorder may add.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from farm_contract import limits as lim
from farm_contract.engine_args import ErrorDetails, problem

if TYPE_CHECKING:
    from farm.spec import SweepSpec


def axes(spec: SweepSpec) -> list[tuple[tuple, str, int]]:
    """(location, name, length) of each axis of the product, as `iter_runs` crosses them."""
    hardware, workload = spec.hardware, spec.workload
    out: list[tuple[tuple, str, int]] = [
        (("model",), "models", len(spec.model)),
        (("hardware", "gpu"), "GPU models", len(hardware.gpu)),
        (("hardware", "gpus_per_run"), "GPU counts", len(hardware.gpus_per_run)),
        (("hardware", "power_limit_w"), "power limits", len(hardware.power_limit_w or [0])),
        (("hardware", "sm_clock_mhz"), "SM clocks", len(hardware.sm_clock_mhz or [0])),
    ]
    out += [(("engine", key), f"engine {key} values", len(values))
            for key, values in spec.engine.arg_grid().items()]
    # A batch scenario is one run per num_prompts value; a server scenario one run.
    out.append((("scenario",), "scenario runs",
                sum(len(s.num_prompts) if s.kind == "batch" else 1 for s in spec.scenario)))
    out += [(("workload", "input_tokens"), "input bins", len(workload.input_tokens or [0])),
            (("workload", "output_tokens"), "output bins", len(workload.output_tokens)),
            (("workload", "decoding"), "decodings", len(workload.decoding))]
    policy = spec.adaptive
    repetitions = policy.max if policy is not None else spec.initial_repetitions
    out.append((("repetitions",), "repetitions", repetitions))
    return out


def most_runs(spec: SweepSpec) -> int:
    """The runs `spec` may expand to: the product of its axis lengths."""
    return math.prod(length for _, _, length in axes(spec))


def bound_errors(spec: SweepSpec) -> list[ErrorDetails]:
    """The sweep's problems with the farm's maxima that need more than one field:
    its run count, and the request log of each batch load point."""
    errors: list[ErrorDetails] = []
    found = axes(spec)
    runs = math.prod(length for _, _, length in found)
    if runs > lim.MAX_RUNS:
        # Located at the longest axis: the one to cut or split on.
        where = max(found, key=lambda axis: axis[2])[0]
        factors = " × ".join(f"{length:,} {name}" for _, name, length in found if length > 1)
        errors.append(problem(where, f"the sweep expands to {runs:,} runs ({factors}), "
                                     f"above the farm's maximum of {lim.MAX_RUNS:,} per sweep "
                                     f"({lim.WHY_RUNS})"))
    most_out = max(spec.workload.output_tokens)
    for index, scenario in enumerate(spec.scenario):
        if scenario.kind != "batch":
            continue
        logged = max(scenario.num_prompts) * most_out
        if logged > lim.MAX_LOGGED_TOKENS:
            errors.append(problem(("scenario", index, "num_prompts"),
                                  f"{max(scenario.num_prompts):,} prompts × {most_out:,} output "
                                  f"tokens is {logged:,} tokens in one load point's request "
                                  f"log, above the farm's maximum of "
                                  f"{lim.MAX_LOGGED_TOKENS:,} ({lim.WHY_LOGGED_TOKENS})"))
    return errors
