"""The idle-amortisation model of `farmctl recommend`: the energy per request of
serving an arrival rate with whole replicas of a configuration that idle between
requests (docs/analysis.md states it and its assumptions).
"""

from __future__ import annotations

import math


def amortised_energy_per_request(rate_rps: float, capacity_rps: float, load_power_w: float,
                                 idle_power_w: float) -> tuple[float, int, float]:
    """(J per request, replicas n, utilisation u) of serving `rate_rps` with
    replicas of a configuration that serves `capacity_rps` at `load_power_w`
    and idles at `idle_power_w` (both for all of a replica's GPUs).

    n = ⌈R / C⌉ replicas, each busy u = R / (n·C) of the time, drawing
    u·P_load + (1 − u)·P_idle on average: n·(u·P_load + (1 − u)·P_idle) / R
    joules per request. At u = 1 this is P_load / C, the load point's own
    J/request.
    """
    if rate_rps <= 0 or capacity_rps <= 0:
        raise ValueError("rate and capacity must be > 0")
    # A ratio a rounding error above a whole number does not need one more replica.
    replicas = max(1, math.ceil(rate_rps / capacity_rps - 1e-9))
    utilisation = min(1.0, rate_rps / (replicas * capacity_rps))
    power = utilisation * load_power_w + (1.0 - utilisation) * idle_power_w
    return replicas * power / rate_rps, replicas, utilisation
