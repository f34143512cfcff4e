"""Wire contracts between GPU workers and the recorder. Pure pydantic.

A worker builds a `RunResult`, sends it as JSON through Redis, and the recorder
stores it. Units are in every name. `None` means "not measured", never zero.
Time offsets (`*_s` fields named `start_s`, `t_s`, `sent_s`) are seconds since
the run's own monotonic origin; wall-clock instants are UTC datetimes.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from farm_contract.figures import FlatColumn, figure, flat_columns
from farm_contract.rules import percentile

RESULT_SCHEMA_VERSION = 1


class Record(BaseModel):
    """Base of the contract's records: unknown fields are an error."""
    model_config = ConfigDict(extra="forbid")


class GpuInfo(Record):
    """One GPU as the worker found it."""

    index: int                       # NVML index on its host
    uuid: str
    name: str                        # as the driver reports it
    model: str                       # canonical slug (farm_contract.routing)
    backend: Literal["gpu", "sim", "cpu"]
    memory_mib: int | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    power_limit_w: float | None = None


class WorkerInfo(Record):
    """The worker that ran the run: its Celery node name, host and process id."""
    name: str                        # Celery node name, e.g. farm-gpu@host
    host: str
    pid: int


class EngineStartup(Record):
    """What the engine's start cost and what it chose, all outside every measured window
    (the runner's "load" window holds the start). None: not known, never 0.

    The KV cache is what the engine allocated for the run (vLLM sizes it from the
    free memory after loading): it bounds how many sequences run at once, so two
    runs with the same arguments on different GPUs may differ here.
    """

    engine_start_s: float | None = None     # start() until ready (the "load" window)
    model_load_s: float | None = None       # weights loaded, as the engine reports it
    # After the load: memory profiling, the KV cache, compile and warm-up (graph
    # capture included), as the engine reports it; the rest of engine_start_s is
    # its processes starting and importing.
    engine_init_s: float | None = None
    compile_s: float | None = None          # torch.compile, as the engine reports it
    graph_capture_s: float | None = None    # CUDA graph capture, as the engine reports it
    kv_cache_tokens: int | None = None      # tokens of context the KV cache holds
    kv_cache_blocks: int | None = None      # its blocks (vLLM's num_gpu_blocks)
    kv_block_size_tokens: int | None = None
    kv_cache_bytes: int | None = None       # memory given to it (vLLM logs it in GiB, 2 decimals)


class EngineInfo(Record):
    """The engine that served the run: its kind, version (None: unknown) and if simulated.

    `model_weights` is "random" when the model directory says its weights are
    random (`workers.tinymodel`'s marker): figures of such a run are real GPU
    work on a real shape, its text is noise. None: real weights, or not known.
    """
    kind: str
    version: str | None = None
    simulated: bool
    model_weights: Literal["random"] | None = None
    startup: EngineStartup | None = None


class EnergySourceInfo(Record):
    """An energy source read beside the GPUs' counters (host RAPL, a PDU outlet).

    Its energy over each window is in `EnergyWindow.sources[name]`. It measures
    what it is wired to (`scope`), which may hold more than the run's GPUs: a
    host meter counts the CPUs and every GPU of the host, busy or not.
    """

    name: str                        # key in EnergyWindow.sources, e.g. "host_rapl", "pdu"
    kind: str                        # source kind: "rapl", "http"
    sensor: str                      # e.g. "rapl.package+dram", "http.energy_counter"
    scope: str = "host"              # what it measures: "host", "outlet", "rack"…
    update_s: float | None = None    # how often its reading moves (s)
    detail: str | None = None        # where it is read (URL without credentials, field)


class MeasurementInfo(Record):
    """How the energy figures of this run were obtained."""

    energy_sensor: str               # e.g. "nvml.total_energy_counter", "sim.energy_counter"
    power_sensor: str | None         # e.g. "nvml.field.power_instant", "sim.power"
    sample_period_s: float | None
    simulated: bool
    energy_sources: list[EnergySourceInfo] = []   # read beside the GPUs, per window
    # Where the sampler and load generator ran: "run process" (a process of the run's
    # own, off the worker's interpreter lock) or "worker thread" (a thread of the
    # worker, beside its other runs); None: not said (stored before migration 0012).
    measured_in: Literal["run process", "worker thread"] | None = None


class SourceEnergy(Record):
    """One extra energy source's energy over a window; None with the reason, never 0."""

    energy_j: float | None
    null_reason: str | None = None


class EnergyWindow(Record):
    """Energy over a named interval, summed over the run's GPUs."""

    name: str                        # idle | idle_ctx | load | warmup | steady | run
    load_point: int | None = None    # index into load_points for steady windows
    start_s: float
    duration_s: float
    energy_j: float | None           # counter delta at the window's edges
    per_gpu_energy_j: list[float | None] = []
    timeline_energy_j: float | None = None  # integral of the power timeline
    avg_power_w: float | None = None
    peak_power_w: float | None = None
    null_reason: str | None = None   # why energy_j is None
    # timeline_energy_j / energy_j; `disagrees` when the window is long enough to
    # judge and the ratio is outside the sweep's tolerance.
    agreement: float | None = None
    disagrees: bool = False
    # How the counters were read at the edges: "read" (when the window opened and
    # closed: up to one counter update stale at each) or "tick" (just after each
    # counter moved, workers.power.Meter `align`: the idle baselines).
    # None: not said (a window without counters, or stored before migration 0008).
    edges: Literal["read", "tick"] | None = None
    # Energy of each extra source (MeasurementInfo.energy_sources, by name) over
    # the same interval; never part of energy_j.
    sources: dict[str, SourceEnergy] = {}


class PowerTrace(Record):
    """Timeline of each GPU the run held, sampled in the background.

    Every series is [gpu][sample], aligned with `t_s`; a series a GPU cannot
    report is None (the whole series) or has None samples.
    """

    sensor: str                      # power source, e.g. "nvml.field.power_instant"
    sample_period_s: float
    gpu_uuids: list[str]
    t_s: list[float]
    power_w: list[list[float | None]]
    memory_power_w: list[list[float | None]] | None = None
    temperature_c: list[list[float | None]] | None = None
    sm_clock_mhz: list[list[float | None]] | None = None
    throttle_reasons: list[list[int | None]] | None = None   # NVML clocks-event bitmask


class RequestRecord(Record):
    """One request as the load generator (or batch engine) saw it."""

    load_point: int
    index: int
    scheduled_s: float | None = None
    sent_s: float
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = []          # every inter-token gap
    input_tokens: int | None = None
    output_tokens: int | None = None
    ok: bool = True
    error: str | None = None


class LatencyStats(Record):
    """A latency's mean and percentiles, in milliseconds."""

    mean_ms: float | None = figure("mean", "ms", None)
    p50_ms: float | None = figure("median", "ms", None)
    p90_ms: float | None = figure("90th percentile", "ms", None)
    p99_ms: float | None = figure("99th percentile", "ms", None)

    @classmethod
    def of_seconds(cls, values: list[float]) -> LatencyStats:
        """The statistics of latencies given in seconds; all None when there are none."""
        if not values:
            return cls()
        ms = sorted(v * 1000.0 for v in values)
        return cls(mean_ms=sum(ms) / len(ms), p50_ms=percentile(ms, 50),
                   p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99))


class LoadPointResult(Record):
    """One load point of a run: a concurrency, a request rate, or the batch.

    Every field but `index` and `notes` is a figure: its unit and description
    are declared here once (`figure`), and the store's `load_points` columns,
    the result rows and the dataset's `run_points` table are derived from them
    (`load_point_columns`). A new figure is a field here plus one migration.
    """

    index: int = Field(description="index of the load point in its run")
    kind: Literal["concurrency", "request_rate", "batch"] = figure(
        "`concurrency`, `request_rate` or `batch`")
    value: float = figure("the load: concurrency (requests), request rate (req/s) or batch "
                          "size (prompts), by `load_kind`", "requests, req/s or prompts")
    duration_s: float = figure("length of the load point", "s")
    num_requests: int = figure("requests sent", "requests")
    num_ok: int = figure("requests that succeeded", "requests")
    num_failed: int = figure("requests that failed", "requests")
    input_tokens: int | None = figure(   # None: not known (a load tool's report without them)
        "prompt tokens over the load point", "tokens", None)
    output_tokens: int = figure("output tokens over the load point", "tokens")
    steady_output_tokens: int | None = figure(   # the divisor of J/token
        "output tokens inside the steady window", "tokens", None)
    request_throughput_rps: float | None = figure("requests completed per second", "req/s",
                                                  label="throughput", short="req/s")
    output_throughput_tps: float | None = figure(
        "steady_output_tokens ÷ steady window length", "tokens/s",
        label="output throughput", short="tokens/s")
    ttft: LatencyStats = figure("time to first token", "ms", LatencyStats(), label="TTFT")
    tpot: LatencyStats = figure("time per output token after the first", "ms", LatencyStats(),
                                label="TPOT")
    itl: LatencyStats = figure("inter-token latency", "ms", LatencyStats())
    e2e: LatencyStats = figure("end-to-end request latency", "ms", LatencyStats())
    energy_j: float | None = figure("GPU energy of the steady window (gross)", "J", None)
    energy_per_output_token_j: float | None = figure(
        "energy_j ÷ steady_output_tokens", "J", None,
        label="energy per output token", short="J/out-tok")
    # InferenceX's figure beside J/output token: prefill's share counted per token.
    energy_per_total_token_j: float | None = figure(
        "energy_per_output_token_j × output_tokens ÷ (input_tokens + output_tokens): J per "
        "token processed, prompt and output", "J", None,
        label="energy per total token", short="J/tot-tok")
    energy_per_request_j: float | None = figure(
        "energy_per_output_token_j × mean output tokens per request", "J", None,
        label="energy per request", short="J/request")
    avg_power_w: float | None = figure("energy_j ÷ window length", "W", None,
                                       label="mean GPU power")
    output_tokens_per_j: float | None = figure(
        "steady_output_tokens ÷ energy_j", "tokens/J", None,
        label="output tokens per joule", short="tokens/J")
    peak_power_w: float | None = figure(
        "highest sample of the GPUs' summed timeline", "W", None)
    # Net of idle: minus the run's context-held idle power over the window.
    energy_net_j: float | None = figure(
        "energy_j − idle power (context held) × window length", "J", None)
    energy_per_output_token_net_j: float | None = figure(
        "net J per output token", "J", None,
        label="net energy per output token", short="net J/out-tok")
    energy_per_total_token_net_j: float | None = figure(
        "net J per total token (input + output)", "J", None,
        label="net energy per total token", short="net J/tot-tok")
    energy_per_request_net_j: float | None = figure(
        "net J per request", "J", None, label="net energy per request", short="net J/request")
    output_tokens_per_j_net: float | None = figure(
        "output tokens per net J", "tokens/J", None,
        label="output tokens per net joule", short="net tokens/J")
    avg_power_net_w: float | None = figure("avg_power_w − idle power", "W", None,
                                           label="net mean GPU power")
    gco2e_per_1k_tokens: float | None = figure(
        "emissions per 1,000 output tokens (gross)", "gCO2e/1k tokens", None)
    gco2e_per_1k_tokens_net: float | None = figure(
        "emissions per 1,000 output tokens (net of idle)", "gCO2e/1k tokens", None)
    # Goodput: the requests that met both latency limits (SLO) of the sweep's
    # server scenario; None for batch load points (no SLO applies).
    slo_ttft_ms: float | None = figure("server: TTFT limit of goodput", "ms", None)
    slo_tpot_ms: float | None = figure("server: TPOT limit of goodput", "ms", None)
    good_requests: int | None = figure("requests within both limits", "requests", None)
    # a failed request is not good
    slo_attainment: float | None = figure("good_requests ÷ requests sent", "1", None,
                                          label="SLO attainment", short="SLO %")
    goodput_rps: float | None = figure("good_requests ÷ duration_s", "req/s", None,
                                       label="goodput", short="good req/s")
    slo_p99_met: bool | None = figure(   # of the ok requests
        "p99 TTFT and p99 TPOT within the limits", None, None)
    # What only the load generator knows (None / empty for other engines).
    lateness: LatencyStats = figure("open loop: sent − scheduled", "ms", LatencyStats())
    unsent_requests: int | None = figure(   # waiting for a slot
        "open loop: arrivals still waiting at the end", "requests", None)
    max_in_flight: int | None = figure(    # as the client saw
        "most requests in flight at once", "requests", None)
    # Self-sizing (MeasurementSpec.self_size): what it took for the steady window
    # to reach min_steady_s with its margin (None: runs from before it, or off).
    passes: int | None = figure(
        "batch: passes over the same prompts inside the steady window", "count", None)
    steady_extended_s: float | None = figure(
        "server: sending added beyond duration_s for the steady window to reach "
        "min_steady_s", "s", None)
    offered_rps: float | None = figure(
        "open loop: the schedule's arrivals inside the steady window (sent, or waiting for "
        "a `max_concurrency` slot) ÷ its length", "req/s", None)
    idle_energy_per_request_j: float | None = figure(
        "energy_per_request_j − energy_per_request_net_j: idle power's share per request "
        "at this load", "J", None)
    # Rate sweep (ServerLoad.rate_sweep): the stop rule met, and the knee.
    saturation: str | None = figure(
        "rate sweep: the stop rule this point met (`achieved_below_offered`, "
        "`throughput_flat`, `ttft_growth`)", None, None)
    knee: bool | None = figure("rate sweep: the highest rate before saturation", None, None)
    notes: list[str] = Field([], description="the engine's remarks on this load point")


def load_point_columns() -> tuple[FlatColumn, ...]:
    """The flat figure columns of a load point, as the store's `load_points` table
    names them (every LoadPointResult field but `index` and `notes`; LatencyStats
    expanded to `ttft_mean_ms` … `lateness_p99_ms`), in field order."""
    return LOAD_POINT_COLUMNS


LOAD_POINT_COLUMNS = flat_columns(LoadPointResult, exclude=("index", "notes"))


class GpuState(Record):
    """One GPU just before the run (preflight), as the driver reported it."""

    uuid: str
    temperature_c: float | None = None
    idle_temperature_c: float | None = None     # the band's reference
    power_limit_w: float | None = None
    default_power_limit_w: float | None = None
    sm_clock_mhz: float | None = None
    memory_clock_mhz: float | None = None
    persistence_mode: bool | None = None
    foreign_pids: list[int] = []


class QuietGpu(Record):
    """What the quiet-GPU gate saw on one GPU over its last window (None: not read)."""

    uuid: str
    power_w: float | None = None            # mean over the window
    trend_w: float | None = None            # second half's mean minus the first's
    reference_power_w: float | None = None  # lowest quiet power seen before (idle reference)
    band_w: float | None = None             # the allowed distance, from the settings
    utilization_pct: float | None = None    # the window's highest reading
    quiet: bool
    reason: str | None = None               # why not, in words


class QuietGate(Record):
    """The quiet-GPU gate before the idle baselines: met (None: not applied), after waited_s."""

    met: bool | None
    waited_s: float
    window_s: float
    gpus: list[QuietGpu] = []
    note: str | None = None


class GpuTuning(Record):
    """A power limit / SM clock lock set on one GPU for the run (`workers.gpu.tuning`).

    `requested_*` is the run's setting; `applied_*` what the driver reported back
    right after setting it (None: not set, or not readable); `refused` the
    driver's or the helper's own words where it would not; `restored` whether
    the defaults were back afterwards (None: nothing was changed).
    """

    uuid: str
    requested_power_limit_w: float | None = None   # the default's watts where asked "default"
    requested_sm_clock_mhz: int | None = None
    # The sweep asked for the GPU's default ("default"): its default limit / no lock.
    power_limit_default: bool | None = None
    sm_clock_default: bool | None = None
    power_limit_before_w: float | None = None      # enforced before the run
    default_power_limit_w: float | None = None     # what restoring sets back
    applied_power_limit_w: float | None = figure(
        "power limit read back after setting it", "W", None)
    applied_sm_clock_mhz: float | None = figure(
        "SM clock read back after locking it", "MHz", None)
    via: str | None = None                         # "nvml" | "helper"
    refused: str | None = figure("the driver's or helper's refusal of the tuning", None, None)
    restored: bool | None = None
    restore_error: str | None = None


# A result row's tuning columns (farm.store.mapping.tuning_columns) and the GpuTuning
# field each comes from. What was read back: the lowest over the run's GPUs (the cap
# that binds). The refusal: every GPU's, as "UUID: words".
TUNING_READ_BACK_FIELDS = {"applied_power_limit_w": "applied_power_limit_w",
                           "applied_sm_clock_mhz": "applied_sm_clock_mhz"}
TUNING_REFUSAL_FIELD = ("tuning_refused", "refused")


class Preflight(Record):
    """The GPUs' state before the run; whether they cooled into the band, after waited_s s."""
    gpus: list[GpuState]
    cooled: bool                     # within the band before the run started
    waited_s: float
    note: str | None = None
    quiet: QuietGate | None = None   # the quiet-GPU gate (None: runs from before it)
    # Power limit / clock lock set for the run, per GPU (empty: none asked for).
    tuning: list[GpuTuning] = []


class ValidityCheck(Record):
    """One validity check: its value (None: not measured), bound and whether it passed."""
    name: str                        # steady_window | power_range | temperature | agreement
    passed: bool
    value: float | None
    threshold: str                   # human-readable bound, e.g. ">= 30 s", "77–700 W"
    detail: str | None = None


class Validity(Record):
    """The run's checks, with their thresholds: a run failing one is kept and
    marked invalid: `farmctl results` shows the verdict (`--valid-only` drops it)."""

    valid: bool
    checks: list[ValidityCheck]


class IdleBaseline(Record):
    """Idle power of the run's GPUs (summed), measured for this run."""

    idle_power_w: float | None = figure(   # no CUDA context
        "idle power of the run's GPUs, no CUDA context", "W", None)
    idle_ctx_power_w: float | None = figure(   # a CUDA context held, nothing running
        "idle power with a CUDA context held", "W", None)


class HostEnergy(Record):
    """CPU and RAM energy and emissions over the run (CodeCarbon's offline tracker)."""

    tracker: str = figure("host energy tracker (null: no host energy)")  # "codecarbon 3.3.2"
    duration_s: float = figure("host energy: tracked duration", "s")
    cpu_energy_j: float | None = figure("host CPU energy over the run", "J", None)
    # "measured" (RAPL) | "estimated" (TDP × load) | …
    cpu_method: str | None = figure("`measured` (RAPL) or `estimated`", None, None)
    ram_energy_j: float | None = figure("host RAM energy over the run", "J", None)
    ram_method: str | None = figure("how RAM energy was obtained", None, None)
    gpu_energy_j: float | None = figure("GPU energy as CodeCarbon saw it", "J", None)
    emissions_g: float | None = figure("gCO2e of CPU + RAM + GPU over the run", "g", None)
    carbon_intensity_g_per_kwh: float | None = figure(
        "grid carbon intensity used", "g/kWh", None)
    region: str | None = figure("region CodeCarbon used", None, None)
    note: str | None = figure("host energy remark", None, None)


class ErrorInfo(Record):
    """Why a run failed: the kind of error, its message and the end of the log."""
    kind: str                        # e.g. "engine", "oom", "timeout", "internal"
    message: str
    log_tail: list[str] = []


class RunResult(Record):
    """Everything a worker measured for one run."""

    schema_version: int = RESULT_SCHEMA_VERSION
    run_id: str
    status: Literal["succeeded", "failed"]
    attempt: int
    worker: WorkerInfo
    gpus: list[GpuInfo]
    engine: EngineInfo
    measurement: MeasurementInfo
    simulated: bool
    started_at: datetime
    finished_at: datetime
    duration_s: float
    load_points: list[LoadPointResult] = []
    windows: list[EnergyWindow] = []
    trace: PowerTrace | None = None
    requests: list[RequestRecord] = []
    error: ErrorInfo | None = None
    preflight: Preflight | None = None
    idle: IdleBaseline | None = None
    validity: Validity | None = None
    host_energy: HostEnergy | None = None

    def window(self, name: str, load_point: int | None = None) -> EnergyWindow | None:
        """The energy window called `name` (of load point `load_point`), or None."""
        for w in self.windows:
            if w.name == name and w.load_point == load_point:
                return w
        return None


class RunEvent(Record):
    """A run's progress, sent from the worker to the recorder."""

    run_id: str
    kind: Literal["started", "requeued"]
    attempt: int
    worker: WorkerInfo
    gpu_uuids: list[str] = []
    at: datetime
    detail: str | None = None


@functools.cache
def result_figures() -> dict[str, FlatColumn]:
    """Every figure a result row carries, by column name, with its unit, label and
    header: a load point's, the idle baseline's and the host energy's (later ones win
    a shared name, as the rows do). What every table reads units and labels from."""
    columns = {c.name: c for c in load_point_columns()}
    for model in (IdleBaseline, HostEnergy):
        columns.update({c.name: c for c in flat_columns(model)})
    return columns
