"""A deterministic roofline model of LLM serving on one GPU model: latency and power.

It drives the sim engine, so every figure it yields is labelled simulated.
Pure functions, no I/O, no randomness (the engine adds jitter).

The model, in brief:

* An engine iteration (one vLLM scheduler step) reads the weights once plus the
  KV cache of every running sequence, and computes 2 × params FLOPs per token
  it processes (decode tokens plus prefill tokens chunked into the step). It
  lasts max(memory time, compute time) plus a fixed per-step overhead
  (scheduling, sampling, kernel launches) plus, with tensor parallelism, the
  all-reduce latency. Tensor parallelism divides bytes and FLOPs by the GPU
  count.
* Continuous batching at a running batch of b sequences: a request's TTFT is
  one iteration carrying its prompt and the b − 1 other sequences' decode
  tokens; each of its O − 1 later tokens takes one iteration carrying b decode
  tokens plus its share of the other sequences' prompts ((b − 1) × I / (O − 1)
  tokens). Throughput is b / E2E (Little's law).
* Board power per GPU = idle-with-context + (TDP − idle) ×
  (MEMORY_POWER_FLOOR × busy share + COMPUTE_POWER_SHARE × compute share),
  clamped to TDP: streaming weights alone draws a floor, compute adds the rest.
* The batch is capped by max_num_seqs and by how many sequences the KV cache
  holds; a model whose weights (or one sequence's KV cache) do not fit raises
  OutOfMemoryError as vLLM would.

What it reproduces (DESIGN.md): energy per request falls with concurrency and
plateaus once the batch saturates (compute-bound steps then grow linearly with
the batch at TDP); large GPUs win at high load on decode-heavy work (a small
GPU's KV cache caps its batch, and it stays memory-bound; on prefill-heavy work
both are compute-bound and datasheet FLOPS per watt decide, which can favour an
L4 over an H100); small, low-idle GPUs win small models at low
load (idle and the per-step floor dominate); TP > 1 lowers latency but costs
energy per token (two boards powered, fixed communication cost per step).
What it leaves out: attention FLOPs quadratic in context, prefix caching,
preemption, clock throttling, dtype-specific kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from farm_contract import simmodels
from farm_contract.routing import gpu_model
from farm_contract.runspec import ModelSpec
from farm_contract.simmodels import (  # noqa: F401 (the pure data, re-exported: one source)
    GIB,
    GPU_MEMORY_UTILIZATION,
    GPU_PERF,
    KV_BYTES_PER_TOKEN_8B_16BIT,
    KV_PARAMS_EXPONENT,
    MAX_NUM_SEQS,
    RESERVED_GIB_PER_GPU,
    GpuPerf,
    MemoryPlan,
    SimModelError,
    SimOutOfMemory,
    fit_memory,
    kv_bytes_per_token,
    parse_params_b,
)
from workers.errors import EngineError, OutOfMemoryError
from workers.gpu.sim import idle_power_w

# Achievable fractions of the datasheet peaks in LLM inference kernels.
MEMORY_BANDWIDTH_EFFICIENCY = 0.8
COMPUTE_EFFICIENCY = 0.5
# Per iteration: scheduler, sampling, launches (vLLM with CUDA graphs); it is what
# makes sub-1B models launch-bound (FIELD_NOTES: a 0.85B model draws ~140 W on an H100).
STEP_OVERHEAD_S = 0.003
SAMPLING_STEP_OVERHEAD_S = 0.0005   # top-p/top-k sorting when temperature > 0
TP_COMM_S_PER_DOUBLING = 0.0012     # all-reduces per step, per doubling of the TP degree
# Share of (TDP − idle) drawn when the GPU streams memory, and added by compute.
MEMORY_POWER_FLOOR = 0.4
COMPUTE_POWER_SHARE = 0.6
# Model loading: read weights from the page cache or local disk, then profile
# and capture CUDA graphs.
LOAD_BANDWIDTH_GB_S = 2.0
LOAD_FIXED_S = 20.0


def params_b_of(model: ModelSpec) -> float:
    """`params_b` if given, else parsed from the model id or source; EngineError otherwise."""
    try:
        return simmodels.params_b_of(model)
    except SimModelError as exc:
        raise EngineError(str(exc)) from None


def gpu_perf(slug: str) -> GpuPerf:
    """The performance figures of GPU model `slug`; an EngineError for an unknown one."""
    try:
        return simmodels.gpu_perf(slug)
    except SimModelError as exc:
        raise EngineError(str(exc)) from None


def dtype_bytes(dtype: str, slug: str) -> int:
    """Bytes per weight; "auto" is the 16-bit checkpoint dtype (FP16 where BF16 is missing)."""
    try:
        return simmodels.dtype_bytes(dtype, slug)
    except SimModelError as exc:
        raise EngineError(str(exc)) from None


@dataclass(frozen=True)
class Deployment:
    """A model served on `gpu_count` GPUs of one model: the inputs of every formula."""

    model_id: str
    params_b: float
    weight_bytes: int               # bytes per parameter
    gpu: str                        # catalogue slug
    gpu_count: int                  # tensor-parallel degree
    memory_gib: float               # per GPU
    tdp_w: float
    idle_w: float                   # per GPU, CUDA context held
    bandwidth_bytes_s: float        # per GPU, achievable
    flops_s: float                  # per GPU, achievable
    max_num_seqs: int = MAX_NUM_SEQS
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    sampling: bool = False

    @property
    def weights_bytes(self) -> float:
        """The model's weights, in bytes."""
        return self.params_b * 1e9 * self.weight_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        """KV cache per token of context, in bytes."""
        return kv_bytes_per_token(self.params_b, self.weight_bytes)

    @property
    def step_overhead_s(self) -> float:
        """Fixed cost of one engine step in seconds: base, sampling, tensor-parallel."""
        sampling_s = SAMPLING_STEP_OVERHEAD_S if self.sampling else 0.0
        comm_s = TP_COMM_S_PER_DOUBLING * math.log2(self.gpu_count)
        return STEP_OVERHEAD_S + sampling_s + comm_s

    @property
    def load_s(self) -> float:
        """Modelled time to load the model and get the engine ready."""
        return self.weights_bytes / self.gpu_count / (LOAD_BANDWIDTH_GB_S * 1e9) + LOAD_FIXED_S


def deployment(model_id: str, params_b: float, dtype: str, gpu: str, gpu_count: int = 1, *,
               max_num_seqs: int = MAX_NUM_SEQS,
               gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
               sampling: bool = False) -> Deployment:
    """Build a Deployment from the catalogue (memory, TDP) and GPU_PERF (bandwidth, FLOPS)."""
    catalogue = gpu_model(gpu)
    if catalogue is None:
        raise EngineError(f"GPU model {gpu!r} is not in the catalogue")
    perf = gpu_perf(gpu)
    return Deployment(
        model_id=model_id, params_b=params_b, weight_bytes=dtype_bytes(dtype, gpu), gpu=gpu,
        gpu_count=gpu_count, memory_gib=float(catalogue.memory_gb),  # as SimGpu's memory_mib / 1024
        tdp_w=float(catalogue.tdp_w), idle_w=idle_power_w(gpu, context_held=True),
        bandwidth_bytes_s=perf.memory_bandwidth_gb_s * 1e9 * MEMORY_BANDWIDTH_EFFICIENCY,
        flops_s=perf.dense_bf16_tflops * 1e12 * COMPUTE_EFFICIENCY,
        max_num_seqs=max_num_seqs, gpu_memory_utilization=gpu_memory_utilization,
        sampling=sampling,
    )


# ------------------------------------------------------------------------ memory


def plan_memory(d: Deployment, input_tokens: int, output_tokens: int) -> MemoryPlan:
    """Check the model fits and size the batch; raise OutOfMemoryError as vLLM would.

    The rule is the contract's (`farm_contract.simmodels.fit_memory`), which the
    coordinator applies at `validate` too.
    """
    try:
        return fit_memory(d.model_id, d.params_b, d.weight_bytes, d.gpu, d.gpu_count,
                          d.memory_gib, d.gpu_memory_utilization, d.max_num_seqs,
                          input_tokens, output_tokens)
    except SimOutOfMemory as exc:
        raise OutOfMemoryError(str(exc)) from None


# ---------------------------------------------------------------- one iteration


@dataclass(frozen=True)
class Iteration:
    """One engine step, per GPU."""

    duration_s: float
    memory_s: float
    compute_s: float
    power_w: float


def iteration(d: Deployment, decode_seqs: float, context_tokens: float,
              prefill_tokens: float) -> Iteration:
    """A step decoding `decode_seqs` sequences of `context_tokens` and prefilling
    `prefill_tokens` prompt tokens."""
    kv_tokens = decode_seqs * context_tokens + prefill_tokens   # KV read or written
    bytes_per_gpu = (d.weights_bytes + kv_tokens * d.kv_bytes_per_token) / d.gpu_count
    flops_per_gpu = 2.0 * d.params_b * 1e9 * (decode_seqs + prefill_tokens) / d.gpu_count
    memory_s = bytes_per_gpu / d.bandwidth_bytes_s
    compute_s = flops_per_gpu / d.flops_s
    duration_s = max(memory_s, compute_s) + d.step_overhead_s
    return Iteration(duration_s, memory_s, compute_s,
                     board_power_w(d, max(memory_s, compute_s) / duration_s,
                                   compute_s / duration_s))


def board_power_w(d: Deployment, busy_share: float, compute_share: float) -> float:
    """Power of one GPU that streams memory `busy_share` of the time and computes
    `compute_share` of it; idle-with-context otherwise."""
    load = MEMORY_POWER_FLOOR * busy_share + COMPUTE_POWER_SHARE * compute_share
    return min(d.tdp_w, d.idle_w + (d.tdp_w - d.idle_w) * load)


# ------------------------------------------------------------------- serving


@dataclass(frozen=True)
class Serving:
    """Steady continuous batching at a running batch of `batch` sequences."""

    batch: float
    ttft_s: float                   # service time to first token, no queueing
    tpot_s: float
    e2e_s: float
    power_w: float                  # per GPU, time-weighted over a request's life

    @property
    def throughput_rps(self) -> float:
        """Completed requests per second."""
        return self.batch / self.e2e_s


def serve(d: Deployment, batch: float, input_tokens: int, output_tokens: int) -> Serving:
    """Latencies and power at a running batch (≥ 1; fractional = time-average)."""
    b = max(batch, 1.0)
    context = input_tokens + output_tokens / 2.0
    first = iteration(d, b - 1.0, context, input_tokens)
    later_steps = output_tokens - 1
    others_prefill = (b - 1.0) * input_tokens / max(later_steps, 1)
    step = iteration(d, b, context, others_prefill)
    e2e_s = first.duration_s + later_steps * step.duration_s
    energy_j = first.power_w * first.duration_s + later_steps * step.power_w * step.duration_s
    return Serving(b, first.duration_s, step.duration_s, e2e_s, energy_j / e2e_s)


def prefill_wave(d: Deployment, seqs: int, input_tokens: int) -> Iteration:
    """Prompts of `seqs` sequences arriving together (start of a closed loop or a batch)."""
    return iteration(d, 0.0, 0.0, float(seqs * input_tokens))


@dataclass(frozen=True)
class LoadPrediction:
    """One load point of a server scenario, at steady state."""

    serving: Serving                # at the effective running batch
    gpu_count: int
    output_tokens: int
    throughput_rps: float           # completed requests per second
    power_w: float                  # per GPU, mean over the steady state
    queue_s: float = 0.0            # closed loop: mean wait for a batch slot
    queue_growth: float = 0.0       # open loop above capacity: wait = growth × send offset
    ramp_s: float = 0.0             # until the batch is full
    saturated: bool = False

    @property
    def energy_per_request_j(self) -> float:
        """Energy per request in joules, all GPUs together."""
        return self.power_w * self.gpu_count / self.throughput_rps

    @property
    def energy_per_output_token_j(self) -> float:
        """Energy per output token in joules, all GPUs together."""
        return self.energy_per_request_j / self.output_tokens


def closed_loop(d: Deployment, concurrency: int, input_tokens: int,
                output_tokens: int) -> LoadPrediction:
    """`concurrency` clients each keep one request in flight."""
    cap = plan_memory(d, input_tokens, output_tokens).max_batch
    batch = min(concurrency, cap)
    serving = serve(d, batch, input_tokens, output_tokens)
    response_s = concurrency / serving.throughput_rps          # Little's law
    return LoadPrediction(
        serving=serving, gpu_count=d.gpu_count, output_tokens=output_tokens,
        throughput_rps=serving.throughput_rps, power_w=serving.power_w,
        queue_s=max(0.0, response_s - serving.e2e_s),
        ramp_s=prefill_wave(d, batch, input_tokens).duration_s, saturated=concurrency >= cap,
    )


def open_loop(d: Deployment, rate_rps: float, input_tokens: int, output_tokens: int,
              max_concurrency: int | None = None) -> LoadPrediction:
    """Requests arrive at `rate_rps`; the running batch is the fixed point b = λ·E2E(b).

    Above capacity the batch stays full and the queue grows for as long as
    requests keep coming: a request sent t seconds in waits (λ/μ − 1)·t.
    Below one sequence in flight the GPU idles (with its context) between requests.
    """
    cap = plan_memory(d, input_tokens, output_tokens).max_batch
    if max_concurrency is not None:
        cap = min(cap, max_concurrency)
    full = serve(d, cap, input_tokens, output_tokens)
    common = {"gpu_count": d.gpu_count, "output_tokens": output_tokens}
    if rate_rps >= full.throughput_rps:
        return LoadPrediction(
            serving=full, throughput_rps=full.throughput_rps, power_w=full.power_w,
            queue_growth=rate_rps / full.throughput_rps - 1.0,
            ramp_s=cap / rate_rps + full.ttft_s, saturated=True, **common)
    single = serve(d, 1.0, input_tokens, output_tokens)
    occupancy = rate_rps * single.e2e_s
    if occupancy <= 1.0:
        power_w = occupancy * single.power_w + (1.0 - occupancy) * d.idle_w
        return LoadPrediction(serving=single, throughput_rps=rate_rps, power_w=power_w,
                              ramp_s=single.e2e_s, **common)
    serving = _little_fixed_point(d, rate_rps, input_tokens, output_tokens, cap)
    return LoadPrediction(serving=serving, throughput_rps=rate_rps, power_w=serving.power_w,
                          ramp_s=serving.e2e_s, **common)


def _little_fixed_point(d: Deployment, rate_rps: float, input_tokens: int, output_tokens: int,
                        cap: int) -> Serving:
    """Bisect b in [1, cap] for b = λ·E2E(b); E2E grows with b, so the root is unique."""
    low, high = 1.0, float(cap)
    for _ in range(60):
        mid = (low + high) / 2.0
        if rate_rps * serve(d, mid, input_tokens, output_tokens).e2e_s > mid:
            low = mid
        else:
            high = mid
    return serve(d, (low + high) / 2.0, input_tokens, output_tokens)


# --------------------------------------------------------------------- offline


@dataclass(frozen=True)
class Wave:
    """Up to max batch prompts run together: a prefill, then decode steps."""

    size: int
    prefill: Iteration
    step: Iteration                 # one decode step of the whole wave

    def duration_s(self, output_tokens: int) -> float:
        """Seconds to generate `output_tokens`: prefill, then one decode step per further token."""
        return self.prefill.duration_s + (output_tokens - 1) * self.step.duration_s

    def energy_j(self, output_tokens: int, gpu_count: int) -> float:
        """Energy of the wave in joules on `gpu_count` GPUs: prefill + decode."""
        per_gpu_j = (self.prefill.power_w * self.prefill.duration_s
                     + (output_tokens - 1) * self.step.power_w * self.step.duration_s)
        return per_gpu_j * gpu_count


def batch_waves(d: Deployment, num_prompts: int, input_tokens: int,
                output_tokens: int) -> list[Wave]:
    """Offline batch of `num_prompts`: waves of the largest batch that fits."""
    cap = plan_memory(d, input_tokens, output_tokens).max_batch
    sizes = [cap] * (num_prompts // cap) + ([num_prompts % cap] if num_prompts % cap else [])
    context = input_tokens + output_tokens / 2.0
    return [Wave(size, prefill_wave(d, size, input_tokens),
                 iteration(d, float(size), context, 0.0)) for size in sizes]
