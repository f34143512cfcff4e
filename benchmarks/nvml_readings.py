"""Every reading of the NVML device seam on this machine's GPU 0, with its cost.

    python benchmarks/nvml_readings.py [--calls 200]

Prints each reading's value and its median/p99 cost per call (ms): the energy
counter must stay at window edges, the sampled readings must be cheap.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.gpu.nvml import NvmlInventory

READINGS = ("energy_mj", "power_w", "power_avg_w", "memory_power_w", "temperature_c",
            "sm_clock_mhz", "memory_clock_mhz", "throttle_reasons", "power_limit_w",
            "default_power_limit_w", "persistence_mode", "compute_pids")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    inventory = NvmlInventory()
    gpu = inventory.devices()[0]
    rows = {}
    for name in READINGS:
        method = getattr(gpu, name)
        costs = []
        value = None
        for _ in range(args.calls):
            start = time.perf_counter()
            value = method()
            costs.append((time.perf_counter() - start) * 1000)
        costs.sort()
        rows[name] = {"value": value, "median_ms": statistics.median(costs),
                      "p99_ms": costs[int(0.99 * (len(costs) - 1))]}
    print(f"{gpu.info.name} ({gpu.info.model}), driver {gpu.info.driver_version}, "
          f"CUDA {gpu.info.cuda_version}; power source {gpu.power_source}")
    print(f"{'reading':<22} {'value':>16} {'median ms':>10} {'p99 ms':>8}")
    for name, row in rows.items():
        print(f"{name:<22} {row['value']!s:>16} {row['median_ms']:>10.4f} "
              f"{row['p99_ms']:>8.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": gpu.info.model_dump(),
                                               "power_source": gpu.power_source,
                                               "readings": rows}, indent=2, default=str))
    inventory.shutdown()


if __name__ == "__main__":
    main()
