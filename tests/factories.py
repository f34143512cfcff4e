"""Test data: sweeps from small TOML strings, and RunResults built directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from farm.spec import SweepSpec
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import (
    EnergyWindow,
    EngineInfo,
    ErrorInfo,
    GpuInfo,
    GpuState,
    GpuTuning,
    HostEnergy,
    IdleBaseline,
    LatencyStats,
    LoadPointResult,
    MeasurementInfo,
    PowerTrace,
    Preflight,
    RequestRecord,
    RunEvent,
    RunResult,
    Validity,
    ValidityCheck,
    WorkerInfo,
)
from farm_contract.runspec import RunSpec

SMALL_SWEEP = """
name = "small-sim"
repetitions = 2

[[model]]
id = "tiny-llama-1B"
source = "local/tiny"

[hardware]
gpu = ["sim:H100", "sim:L4"]

[engine]
kind = "sim"

[[scenario]]
kind = "server"
concurrency = [1, 8]
duration_s = 1.0
warmup_s = 0.1

[[scenario]]
kind = "batch"
num_prompts = 16

[workload]
input_tokens = [128]
output_tokens = [64]
"""

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def sweep(toml: str = SMALL_SWEEP) -> tuple[SweepSpec, str, list[RunSpec]]:
    spec = parse_sweep(toml)
    return spec, toml, expand(spec)


def big_sweep_toml(n_inputs: int = 25, n_outputs: int = 20, repetitions: int = 20) -> str:
    """A one-scenario sweep of n_inputs × n_outputs × repetitions runs (10,000 by default)."""
    inputs = ", ".join(str(8 + i) for i in range(n_inputs))
    outputs = ", ".join(str(4 + i) for i in range(n_outputs))
    return f"""
name = "big-sim"
repetitions = {repetitions}
[[model]]
id = "tiny-llama-1B"
source = "local/tiny"
[hardware]
gpu = "sim:H100"
[engine]
kind = "sim"
[[scenario]]
kind = "batch"
num_prompts = 4
[workload]
input_tokens = [{inputs}]
output_tokens = [{outputs}]
"""


def worker(name: str = "farm-gpu@node1") -> WorkerInfo:
    return WorkerInfo(name=name, host=name.split("@")[-1], pid=4242)


def gpu(index: int = 0) -> GpuInfo:
    return GpuInfo(index=index, uuid=f"GPU-sim-{index:04d}", name="Simulated NVIDIA H100 80GB",
                   model="h100-80gb", backend="sim", memory_mib=81559, power_limit_w=700.0)


def event(run_id: str, attempt: int = 1, at: datetime = T0,
          worker_name: str = "farm-gpu@node1") -> RunEvent:
    return RunEvent(run_id=run_id, kind="started", attempt=attempt, worker=worker(worker_name),
                    gpu_uuids=[gpu(0).uuid], at=at)


def requests_for(n_points: int, per_point: int) -> list[RequestRecord]:
    out = []
    for point in range(n_points):
        for index in range(per_point):
            itl = [0.01 + 0.001 * k for k in range(index)]  # the first request has no gaps
            out.append(RequestRecord(
                load_point=point, index=index, scheduled_s=None if index else 0.0,
                sent_s=1.0 + index * 0.1, ttft_s=0.05 if index % 3 else None,
                e2e_s=0.05 + sum(itl), itl_s=itl, input_tokens=128,
                output_tokens=len(itl) + 1, ok=index % 3 != 2,
                error=None if index % 3 != 2 else "timeout",
            ))
    return out


def load_point(index: int, kind: str = "concurrency", value: float = 1.0,
               energy_j: float | None = 100.0) -> LoadPointResult:
    return LoadPointResult(
        index=index, kind=kind, value=value, duration_s=1.0, num_requests=3, num_ok=2,
        num_failed=1, input_tokens=384, output_tokens=60, steady_output_tokens=50,
        request_throughput_rps=3.0,
        output_throughput_tps=50.0,
        ttft=LatencyStats(mean_ms=50.0, p50_ms=50.0, p90_ms=55.0, p99_ms=60.0),
        tpot=LatencyStats(mean_ms=10.0, p50_ms=10.0, p90_ms=11.0, p99_ms=12.0),
        e2e=LatencyStats(mean_ms=500.0, p50_ms=480.0, p90_ms=600.0, p99_ms=700.0),
        energy_j=energy_j, energy_per_output_token_j=None if energy_j is None else energy_j / 50,
        energy_per_request_j=None if energy_j is None else energy_j / 3, avg_power_w=350.0,
        output_tokens_per_j=None if energy_j is None else 50 / energy_j, peak_power_w=410.0,
        energy_net_j=None if energy_j is None else energy_j - 60.0,
        energy_per_output_token_net_j=None if energy_j is None else (energy_j - 60.0) / 50,
        energy_per_request_net_j=None if energy_j is None else (energy_j - 60.0) / 3,
        output_tokens_per_j_net=None if energy_j is None else 50 / (energy_j - 60.0),
        avg_power_net_w=350.0 - 60.0,
        gco2e_per_1k_tokens=None if energy_j is None else energy_j / 50 * 1000 / 3.6e6 * 400,
        gco2e_per_1k_tokens_net=(None if energy_j is None
                                 else (energy_j - 60.0) / 50 * 1000 / 3.6e6 * 400),
        **(goodput_figures(index, kind, value) if kind != "batch" else {}),
    )


def goodput_figures(index: int, kind: str, value: float) -> dict[str, Any]:
    """A server load point's goodput and load-generator figures (2 of 3 requests good;
    the p99s met on the first point only; lateness and unsent arrivals in the open loop)."""
    figures: dict[str, Any] = dict(
        slo_ttft_ms=2000.0, slo_tpot_ms=200.0, good_requests=2, slo_attainment=2 / 3,
        goodput_rps=2.0, slo_p99_met=index == 0, max_in_flight=int(value) + 1,
        unsent_requests=0, notes=[f"note {index}", "1 of 3 request(s) failed (timeout ×1)"])
    if kind == "request_rate":
        figures.update(lateness=LatencyStats(mean_ms=1.25, p50_ms=1.0, p90_ms=2.5, p99_ms=4.75),
                       unsent_requests=5)
    return figures


def validity(failing: str | None = None) -> Validity:
    """The four checks, all passing unless `failing` names one."""
    checks = [
        ValidityCheck(name="steady_window", passed=True, value=42.0, threshold=">= 30 s"),
        ValidityCheck(name="power_range", passed=True, value=350.0, threshold="77–700 W"),
        ValidityCheck(name="temperature", passed=True, value=None, threshold="<= 85 °C",
                      detail="no temperature reported"),
        ValidityCheck(name="agreement", passed=True, value=0.98, threshold="0.9–1.1"),
    ]
    checks = [c.model_copy(update={"passed": False, "detail": "out of range"})
              if c.name == failing else c for c in checks]
    return Validity(valid=failing is None, checks=checks)


def preflight(gpus: list[GpuInfo]) -> Preflight:
    return Preflight(
        gpus=[GpuState(uuid=g.uuid, temperature_c=38.0 + g.index, idle_temperature_c=36.0,
                       power_limit_w=700.0, default_power_limit_w=700.0, sm_clock_mhz=345.0,
                       memory_clock_mhz=None, persistence_mode=True,
                       foreign_pids=[999] if g.index else [])
              for g in gpus],
        cooled=True, waited_s=12.5, note=None,
    )


def host_energy() -> HostEnergy:
    return HostEnergy(tracker="codecarbon 3.3.2", duration_s=30.0, cpu_energy_j=900.0,
                      cpu_method="measured", ram_energy_j=150.0, ram_method="estimated",
                      gpu_energy_j=None, emissions_g=0.12, region="FR",
                      carbon_intensity_g_per_kwh=56.0, note=None)


def result(run: RunSpec | str, status: str = "succeeded", attempt: int = 1, *,
           started_at: datetime = T0, per_point: int = 3, n_gpus: int = 1,
           steady_energy_j: list[float | None] | None = None,
           worker_name: str = "farm-gpu@node1", failing_check: str | None = None,
           with_host_energy: bool = True, extra_series: bool = True) -> RunResult:
    """A plausible RunResult; load points follow the RunSpec's scenario when given one.

    A succeeded run carries preflight, idle baseline, validity (invalid when
    `failing_check` names one of its checks) and host energy (unless not
    `with_host_energy`); a failed one has no validity. The power trace has the
    optional series, with missing samples, unless not `extra_series`.
    """
    points = (run.scenario.load_points if isinstance(run, RunSpec)
              else [("concurrency", 1.0), ("concurrency", 8.0)])
    energies = steady_energy_j if steady_energy_j is not None else [100.0 * (i + 1)
                                                                   for i in range(len(points))]
    gpus = [gpu(i) for i in range(n_gpus)]
    t_s = [0.1 * k for k in range(20)]
    failed = status == "failed"
    disagreement = 1.3 if failing_check == "agreement" else None
    return RunResult(
        run_id=run.run_id if isinstance(run, RunSpec) else run, status=status, attempt=attempt,
        worker=worker(worker_name), gpus=gpus,
        engine=EngineInfo(kind="sim", version="0.1", simulated=True),
        measurement=MeasurementInfo(energy_sensor="sim.energy_counter", power_sensor="sim.power",
                                    sample_period_s=0.1, simulated=True),
        simulated=True, started_at=started_at, finished_at=started_at + timedelta(seconds=30),
        duration_s=30.0,
        load_points=[] if failed else [load_point(i, kind, value, energies[i])
                                       for i, (kind, value) in enumerate(points)],
        windows=[
            EnergyWindow(name="idle", start_s=0.0, duration_s=1.0, energy_j=77.0,
                         per_gpu_energy_j=[77.0 / n_gpus] * n_gpus),
            *[EnergyWindow(name="steady", load_point=i, start_s=2.0 + i, duration_s=1.0,
                           energy_j=e, per_gpu_energy_j=[e] if e is not None else [None],
                           null_reason=None if e is not None else "counter unavailable",
                           agreement=None if e is None else disagreement or 0.98,
                           disagrees=e is not None and disagreement is not None)
              for i, e in enumerate(energies) if not failed],
        ],
        trace=PowerTrace(sensor="sim.power", sample_period_s=0.1,
                         gpu_uuids=[g.uuid for g in gpus], t_s=t_s,
                         power_w=[[None if k == 3 else 100.0 + k + 50 * g for k in range(20)]
                                  for g in range(n_gpus)],
                         **(_extra_series(n_gpus, len(t_s)) if extra_series else {})),
        requests=[] if failed else requests_for(len(points), per_point),
        error=ErrorInfo(kind="engine", message="engine died", log_tail=["boom"]) if failed
        else None,
        preflight=preflight(gpus),
        idle=IdleBaseline(idle_power_w=60.0 * n_gpus, idle_ctx_power_w=75.0 * n_gpus),
        validity=None if failed else validity(failing_check),
        host_energy=host_energy() if with_host_energy else None,
    )


def _extra_series(n_gpus: int, n: int) -> dict[str, object]:
    """memory power, temperature, SM clock (some samples None) and NVML throttle bitmasks."""
    return {
        "memory_power_w": [[None if k == 5 else 20.0 + 0.5 * k for k in range(n)]
                           for _ in range(n_gpus)],
        "temperature_c": [[40.0 + g + 0.25 * k for k in range(n)] for g in range(n_gpus)],
        "sm_clock_mhz": [[1980.0 if k % 4 else None for k in range(n)] for _ in range(n_gpus)],
        # 0x4 = SW power cap; a big bit too, to cover the whole uint64 range.
        "throttle_reasons": [[None if k == 7 else (0x4 if k % 2 else 0) | (1 << 63) * (k == 9)
                              for k in range(n)] for _ in range(n_gpus)],
    }


def tuned(run: RunSpec, power_limit_w: float | None = None,
          sm_clock_mhz: int | None = None) -> RunSpec:
    """The run with a GPU tuning asked for, as `[hardware] power_limit_w` / `sm_clock_mhz`
    give it (a new run id)."""
    hardware = run.hardware.model_copy(update={"power_limit_w": power_limit_w,
                                               "sm_clock_mhz": sm_clock_mhz})
    return run.model_copy(update={"hardware": hardware})


def with_tuning(result: RunResult, run: RunSpec, applied_w: list[float | None],
                applied_mhz: list[float | None] | None = None,
                refused: str | None = None) -> RunResult:
    """`result` with its preflight's tuning records: one per GPU, what `run` asked for
    and what each GPU read back (`applied_w`, `applied_mhz`), `refused` on the first."""
    mhz = applied_mhz or [None] * len(applied_w)
    records = [GpuTuning(uuid=result.gpus[i].uuid,
                         requested_power_limit_w=run.hardware.power_limit_w,
                         requested_sm_clock_mhz=run.hardware.sm_clock_mhz,
                         applied_power_limit_w=watts, applied_sm_clock_mhz=clock,
                         refused=refused if i == 0 else None, via="nvml", restored=True)
               for i, (watts, clock) in enumerate(zip(applied_w, mhz, strict=True))]
    preflight = result.preflight.model_copy(update={"tuning": records})
    return result.model_copy(update={"preflight": preflight})
