"""Idle windows on a real GPU, read at arbitrary edges vs on counter updates.

    python3 benchmarks/gpu_idle_edges.py --out idle-edges.json [--pairs 8] [--window 5]

NVML's energy counter moves every ~100 ms, so a window whose edges are read at
arbitrary times counts up to one update's energy too much or too little — up to
2% of a 5 s idle window (H200, docs/measurement.md). The farm's idle baselines
now read each edge just after the counter moves (workers.power.Meter `align`).
This measures both on GPU 0 with nothing running, through the farm's own Meter
and PowerSampler: first the counter's update period (polled for 1.5 s), then
`pairs` pairs of windows — one read at arbitrary edges (its length jittered by
0–100 ms, so its edges fall at random phases of the counter) and one aligned —
each with the timeline's mean power beside it. Writes the JSON after every
window, so a cut-short run keeps what it measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.power import Meter, PowerSampler


def update_period(gpu, seconds: float = 1.5) -> dict:
    """The counter's update period and one read's latency, by polling it."""
    changes, latencies = [], []
    last = gpu.energy_mj()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        value = gpu.energy_mj()
        latencies.append(time.monotonic() - t0)
        if value != last:
            changes.append(time.monotonic())
            last = value
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    return {"updates_seen": len(changes),
            "update_period_s_median": statistics.median(gaps) if gaps else None,
            "update_period_s_min": min(gaps) if gaps else None,
            "update_period_s_max": max(gaps) if gaps else None,
            "read_latency_ms_median": 1000 * statistics.median(latencies),
            "read_latency_ms_p99": 1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))]}


def _window(meter: Meter, name: str, seconds: float, align: bool) -> dict:
    meter.begin(name, align=align)
    time.sleep(seconds)
    w = meter.end(name, align=align)
    timeline_w = (w.timeline_energy_j / w.duration_s if w.timeline_energy_j is not None
                  and w.duration_s > 0 else None)
    return {"name": name, "edges": w.edges, "duration_s": w.duration_s,
            "energy_j": w.energy_j, "counter_power_w": w.avg_power_w,
            "timeline_power_w": timeline_w,
            "counter_minus_timeline_w": None if timeline_w is None or w.avg_power_w is None
            else w.avg_power_w - timeline_w}


def _spread(rows: list[dict], edges: str) -> dict:
    powers = [r["counter_power_w"] for r in rows if r["edges"] == edges
              and r["counter_power_w"] is not None]
    diffs = [r["counter_minus_timeline_w"] for r in rows if r["edges"] == edges
             and r["counter_minus_timeline_w"] is not None]
    if len(powers) < 2:
        return {"n": len(powers)}
    return {"n": len(powers), "mean_w": statistics.mean(powers),
            "sd_w": statistics.stdev(powers), "range_w": max(powers) - min(powers),
            "counter_minus_timeline_w": [round(d, 3) for d in diffs]}


def measure(gpu, out: Path, pairs: int, window_s: float, period_s: float = 0.1,
            seed: int = 0) -> dict:
    """The whole measurement on one GPU device (workers.gpu.base.GpuDevice)."""
    rng = random.Random(seed)
    doc: dict = {"gpu": gpu.info.name, "uuid": gpu.info.uuid, "window_s": window_s,
                 "sample_period_s": period_s, "counter": update_period(gpu), "windows": []}
    out.write_text(json.dumps(doc, indent=1))
    sampler = PowerSampler([gpu], period_s)
    sampler.start()
    meter = Meter([gpu], sampler)
    try:
        for i in range(pairs):
            doc["windows"].append(_window(meter, f"read-{i}", window_s + rng.uniform(0, 0.1),
                                          align=False))
            doc["windows"].append(_window(meter, f"tick-{i}", window_s, align=True))
            doc["read"], doc["tick"] = (_spread(doc["windows"], e) for e in ("read", "tick"))
            out.write_text(json.dumps(doc, indent=1))
    finally:
        sampler.stop()
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--window", type=float, default=5.0)
    args = ap.parse_args(argv)
    from workers.gpu.nvml import NvmlInventory

    inventory = NvmlInventory()
    try:
        doc = measure(inventory.devices()[0], args.out, args.pairs, args.window)
    finally:
        inventory.shutdown()
    print(json.dumps({k: doc.get(k) for k in ("gpu", "counter", "read", "tick")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
