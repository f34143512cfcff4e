"""The simulated engine's pure data: model sizes, GPU figures, the memory fit rule.

Part of the contract (standard library and pydantic only), so the coordinator
refuses at `validate` what the sim engine would refuse on a worker — a model
of unknown size, a 16-bit model on a GPU without BF16, a model that does not
fit — with the same numbers: `workers/engines/perfmodel.py` imports all of
this from here, there is one source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from farm_contract.routing import gpu_model

if TYPE_CHECKING:   # runspec imports the engine catalogue, which imports this module
    from farm_contract.runspec import ModelSpec


class SimModelError(ValueError):
    """A run the sim engine cannot model (unknown size, GPU figures or dtype)."""


class SimOutOfMemory(SimModelError):
    """The model, or one sequence's KV cache, does not fit the GPUs (as vLLM would fail)."""


@dataclass(frozen=True)
class GpuPerf:
    """Datasheet figures of one GPU model (dense, without sparsity)."""

    memory_bandwidth_gb_s: float
    dense_bf16_tflops: float        # FP16 tensor TFLOPS where the GPU has no BF16
    has_bf16: bool = True


# NVIDIA datasheets, dense tensor-core BF16 (FP16 for T4/V100), FP32 accumulate.
GPU_PERF: dict[str, GpuPerf] = {
    "h100-80gb": GpuPerf(3350, 989),       # H100 SXM5
    "h100-pcie": GpuPerf(2000, 756),
    "h100-nvl": GpuPerf(3900, 835),
    "h200-141gb": GpuPerf(4800, 989),
    "gh200": GpuPerf(4000, 989),           # 96 GB HBM3 variant
    "b200": GpuPerf(8000, 2250),
    "a100-40gb": GpuPerf(1555, 312),
    "a100-80gb": GpuPerf(2039, 312),
    "l40s": GpuPerf(864, 362),
    "l40": GpuPerf(864, 181),
    "l4": GpuPerf(300, 121),
    "a10g": GpuPerf(600, 70),              # no public datasheet; commonly cited figure
    "a10": GpuPerf(600, 125),
    "a40": GpuPerf(696, 150),
    "a6000": GpuPerf(768, 155),
    "t4": GpuPerf(320, 65, has_bf16=False),
    "v100-16gb": GpuPerf(900, 125, has_bf16=False),
    "v100-32gb": GpuPerf(900, 125, has_bf16=False),
    "rtx-4090": GpuPerf(1008, 165),
    "rtx-3090": GpuPerf(936, 71),
}

# vLLM defaults, which the sim engine's arguments of the same names take.
MAX_NUM_SEQS = 256
GPU_MEMORY_UTILIZATION = 0.9
# Memory outside weights and KV cache: activations, CUDA graphs, allocator slack.
RESERVED_GIB_PER_GPU = 1.5
# KV cache per token: a fit to the Llama-3 GQA family in 16-bit
# (8B: 32 layers × 8 KV heads × 128 dims × K,V × 2 B = 128 KiB; 70B: 320 KiB).
KV_BYTES_PER_TOKEN_8B_16BIT = 131072.0
KV_PARAMS_EXPONENT = 0.45

GIB = 2.0**30
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}
_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([bBmM])(?![A-Za-z0-9])")


def parse_params_b(text: str) -> float | None:
    """Parameter count in billions from a name: "Llama-3.1-8B" → 8.0, "pythia-160m" → 0.16."""
    sizes = [(float(n), unit.lower()) for n, unit in _SIZE.findall(text)]
    billions = [n for n, unit in sizes if unit == "b"]
    if billions:
        return billions[0]
    millions = [n for n, unit in sizes if unit == "m"]
    return millions[0] / 1000.0 if millions else None


def params_b_of(model: ModelSpec) -> float:
    """`params_b` if given, else parsed from the model id or source; SimModelError otherwise."""
    if model.params_b is not None:
        return model.params_b
    for text in (model.id, model.source):
        found = parse_params_b(text)
        if found:
            return found
    raise SimModelError(
        f"the sim engine cannot tell the size of model {model.id!r} from its id or source "
        f"({model.source!r}); add `params_b = <billions>` to its [[model]] table"
    )


def gpu_perf(slug: str) -> GpuPerf:
    """The performance figures of GPU model `slug`; SimModelError for an unknown one."""
    perf = GPU_PERF.get(slug)
    if perf is None:
        raise SimModelError(f"the sim engine has no performance figures for GPU model "
                            f"{slug!r}; known: {', '.join(sorted(GPU_PERF))}")
    return perf


def dtype_bytes(dtype: str, slug: str) -> int:
    """Bytes per weight; "auto" is the 16-bit checkpoint dtype (FP16 where BF16 is missing)."""
    if dtype not in DTYPE_BYTES:
        raise SimModelError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    if dtype == "bfloat16" and not gpu_perf(slug).has_bf16:
        raise SimModelError(f"Bfloat16 is only supported on GPUs with compute capability of "
                            f"at least 8.0; {slug} has none. Use dtype = \"float16\" "
                            "(simulated)")
    return DTYPE_BYTES[dtype]


def kv_bytes_per_token(params_b: float, weight_bytes: int) -> float:
    """KV cache bytes per token, all layers, all GPUs together."""
    return KV_BYTES_PER_TOKEN_8B_16BIT * (params_b / 8.0) ** KV_PARAMS_EXPONENT * weight_bytes / 2


def gpu_memory_gib(slug: str) -> float:
    """Memory of one GPU of model `slug` (the catalogue's, as SimGpu reports it)."""
    model = gpu_model(slug)
    if model is None:
        raise SimModelError(f"GPU model {slug!r} is not in the catalogue")
    return float(model.memory_gb)


@dataclass(frozen=True)
class MemoryPlan:
    """How a deployment's GPU memory divides between weights and KV cache."""

    weights_gib_per_gpu: float
    kv_cache_gib_per_gpu: float
    kv_cache_tokens: int            # tokens the whole KV cache holds
    max_batch: int                  # sequences of this length that run at once


def fit_memory(model_id: str, params_b: float, weight_bytes: int, gpu: str, gpu_count: int,
               memory_gib: float, gpu_memory_utilization: float, max_num_seqs: int,
               input_tokens: int, output_tokens: int) -> MemoryPlan:
    """The fit rule: weights plus reserve must fit a GPU, one sequence must fit the KV cache.

    Raises SimOutOfMemory with vLLM's wording otherwise.
    """
    budget_gib = memory_gib * gpu_memory_utilization
    weights_gib = params_b * 1e9 * weight_bytes / gpu_count / GIB
    kv_gib = budget_gib - weights_gib - RESERVED_GIB_PER_GPU
    where = f"{model_id} ({params_b:g}B params, {weight_bytes} B/param) on {gpu_count}× {gpu}"
    if weights_gib + RESERVED_GIB_PER_GPU > memory_gib:
        raise SimOutOfMemory(
            f"CUDA out of memory (simulated): {where} needs {weights_gib:.1f} GiB of weights "
            f"per GPU plus {RESERVED_GIB_PER_GPU} GiB of activations, but a GPU has "
            f"{memory_gib:.1f} GiB. Use more GPUs (tensor parallel), a smaller dtype "
            f"or a larger GPU."
        )
    kv_tokens = int(max(kv_gib, 0.0) * GIB * gpu_count / kv_bytes_per_token(params_b,
                                                                            weight_bytes))
    seq_tokens = input_tokens + output_tokens
    if kv_tokens < seq_tokens:
        raise SimOutOfMemory(
            f"(simulated) {where}: the sequence length ({seq_tokens} tokens) is larger than the "
            f"maximum number of tokens that can be stored in KV cache ({kv_tokens}). Try "
            f"increasing `gpu_memory_utilization` (now {gpu_memory_utilization}) or using "
            f"more GPUs."
        )
    return MemoryPlan(weights_gib, kv_gib, kv_tokens, min(max_num_seqs, kv_tokens // seq_tokens))


def check_run(model: ModelSpec, gpu: str, gpu_count: int, input_tokens: int | None,
              output_tokens: int, *, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
              max_num_seqs: int = MAX_NUM_SEQS) -> MemoryPlan:
    """Everything the sim engine checks before it simulates a run; SimModelError otherwise."""
    if input_tokens is None:
        raise SimModelError("the sim engine needs `input_tokens`: it cannot read a dataset")
    params_b = params_b_of(model)
    weight_bytes = dtype_bytes(model.dtype, gpu)
    return fit_memory(model.id, params_b, weight_bytes, gpu, gpu_count, gpu_memory_gib(gpu),
                      gpu_memory_utilization, max_num_seqs, input_tokens, output_tokens)
