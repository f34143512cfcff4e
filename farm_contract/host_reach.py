"""Engine arguments that reach past the run into the GPU host: its code, files, network.

Part of the contract (standard library only). A sweep's author need not be
trusted by the hosts that run it: a host decides which models and whose code it
runs (`workers/model_policy.py`). vLLM takes arguments that import a module or
a plug-in file, read or write a path, or talk to an address, each of the
sweep's choosing; one of them, `reasoning_parser_plugin`, ran a file of the
host's as the engine (2026-12-08). None of them changes what is measured of a
model's inference, so a sweep may not give them: refused at `farmctl validate`
and again by the worker (a run message need not have passed the coordinator).
A table-like argument (a JSON string) is refused only for its keys that reach
out; an argument with a few safe values takes those only.
"""

from __future__ import annotations

import json
from typing import Any

CODE = "it makes the GPU host import code of the sweep's choosing"
FILES = "it makes the GPU host read or write a path of the sweep's choosing"
NETWORK = "it makes the GPU host connect to or listen at an address of the sweep's choosing"

# argument → why a sweep may not give it
REFUSED: dict[str, str] = {
    **dict.fromkeys((
        "reasoning_parser_plugin", "io_processor_plugin", "tool_parser_plugin",
        "worker_cls", "worker_extension_cls", "scheduler_cls", "model_class_overrides",
        "kv_transfer_config", "ec_transfer_config", "ec_manager_config",
        "weight_transfer_config", "additional_config",
        # Python's logging configuration builds any class it names.
        "logging_config", "log_config_file",
    ), CODE),
    **dict.fromkeys((
        "download_dir", "hf_config_path", "allowed_local_media_path",
        "mm_encoder_fp8_scale_path", "mm_encoder_fp8_scale_save_path",
        "model_loader_extra_config", "profiler_config", "spec_model",
    ), FILES),
    **dict.fromkeys((
        "otlp_traces_endpoint", "kv_events_config", "data_parallel_address", "master_addr",
    ), NETWORK),
}
# table-like argument → {key inside it → why}
REFUSED_KEYS: dict[str, dict[str, str]] = {
    "compilation_config": {"backend": CODE, "inductor_passes": CODE,
                           "inductor_compile_config": CODE, "debug_dump_path": FILES,
                           "cache_dir": FILES, "local_cache_dir": FILES},
    # A draft model is loaded from a path the host's model policy never saw.
    "speculative_config": {"model": FILES, "tokenizer": FILES, "draft_model": FILES},
    "structured_outputs_config": {"reasoning_parser_plugin": CODE},
}
# argument → (the values a sweep may give, why not another: it names code or a path)
ONLY_VALUES: dict[str, tuple[frozenset[str], str]] = {
    "distributed_executor_backend": (frozenset({"mp", "uni", "ray", "external_launcher"}),
                                     CODE),
    "generation_config": (frozenset({"auto", "vllm"}), FILES),
}
# argument → why a value naming a hub repository ("org/name") may not be given:
# transformers loads such an attention kernel from the hub, code and all.
HUB_NAMES: dict[str, str] = {"attn_implementation": CODE}


def reach(name: str, value: Any) -> str | None:
    """Why a sweep may not give `name = value` (None: it may)."""
    if name in REFUSED:
        return f"{REFUSED[name]}; a sweep may not give it"
    if name in ONLY_VALUES:
        values, why = ONLY_VALUES[name]
        if value not in values:
            return (f"{value!r}: {why}; a sweep may give "
                    f"{' or '.join(repr(v) for v in sorted(values))}")
    if name in HUB_NAMES and isinstance(value, str) and "/" in value:
        return (f"{value!r} names a hub repository: {HUB_NAMES[name]}; a sweep may give a "
                "built-in implementation (eager, sdpa, flash_attention_2, …)")
    if name in REFUSED_KEYS:
        keys = sorted(set(_table(value)) & set(REFUSED_KEYS[name]))
        if keys:
            return f"its key {keys[0]!r}: {REFUSED_KEYS[name][keys[0]]}; a sweep may not give it"
    return None


def reach_in(args: dict[str, Any]) -> list[str]:
    """Every refusal of a run's engine arguments ("name: why"), in argument order."""
    return [f"{name}: {why}" for name, value in args.items() if (why := reach(name, value))]


def _table(value: Any) -> dict[str, Any]:
    """A table-like argument's keys: its JSON string decoded ({} when it is none)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return {}       # the argument's own type check refuses it
        return decoded if isinstance(decoded, dict) else {}
    return {}
