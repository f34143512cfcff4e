"""What vLLM's start-up cost and chose, read from what it says (its log, its /metrics).

vLLM reports its start in log lines (the same words in 0.26 and 0.32, from its
engine core, one per tensor-parallel worker):

    Model loading took 14.99 GiB and 5.123456 seconds
    torch.compile took 7.81 s in total
    Graph capturing finished in 1 secs, took 0.52 GiB
    init engine (profile, create kv cache, warmup model) took 22.70 s (compilation: 7.81 s)
    Available KV cache memory: 52.30 GiB
    GPU KV cache size: 428,432 tokens

and its server publishes `vllm:cache_config_info` on /metrics (the KV cache's
`num_gpu_blocks` and `block_size` as labels). The offline child reads the same
two numbers from `llm.llm_engine.vllm_config.cache_config`. A figure vLLM did
not report stays None (never 0); a log line seen more than once (one per
worker) counts at its largest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from farm_contract.records import EngineStartup

GIB = 2 ** 30
_NUMBER = r"([\d][\d,]*(?:\.\d+)?)"
# field → (pattern, factor to the field's unit)
LOG_FIGURES: dict[str, tuple[re.Pattern[str], float]] = {
    "model_load_s": (re.compile(rf"Model loading took .*? and {_NUMBER} s"), 1.0),
    "compile_s": (re.compile(rf"torch\.compile took {_NUMBER} s in total"), 1.0),
    "graph_capture_s": (re.compile(rf"Graph capturing finished in {_NUMBER} sec"), 1.0),
    "engine_init_s": (re.compile(rf"init engine \(profile, create kv cache, warmup model\) "
                                 rf"took {_NUMBER} s"), 1.0),
    "kv_cache_bytes": (re.compile(rf"Available KV cache memory: {_NUMBER} GiB"), GIB),
    "kv_cache_tokens": (re.compile(rf"KV cache size: {_NUMBER} tokens"), 1.0),
}
INTEGERS = {"kv_cache_bytes", "kv_cache_tokens", "kv_cache_blocks", "kv_block_size_tokens"}
_CACHE_INFO = re.compile(r"^vllm:cache_config_info\{(?P<labels>[^}]*)\}", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def from_log(lines: Iterable[str]) -> dict[str, float | int]:
    """The start-up figures in vLLM's log lines (EngineStartup field → value)."""
    found: dict[str, float] = {}
    for line in lines:
        for name, (pattern, factor) in LOG_FIGURES.items():
            match = pattern.search(line)
            if match:
                found[name] = max(found.get(name, 0.0), _number(match.group(1)) * factor)
    return {k: round(v) if k in INTEGERS else v for k, v in found.items()}


def from_metrics(text: str) -> dict[str, int]:
    """`kv_cache_blocks` and `kv_block_size_tokens` from the server's /metrics text,
    and `kv_cache_bytes` where the sweep fixed it (`kv_cache_memory_bytes`: vLLM then
    logs no "Available KV cache memory" line)."""
    match = _CACHE_INFO.search(text)
    if not match:
        return {}
    labels = dict(_LABEL.findall(match.group("labels")))
    out: dict[str, int] = {}
    for label, name in (("num_gpu_blocks", "kv_cache_blocks"),
                        ("block_size", "kv_block_size_tokens"),
                        ("kv_cache_memory_bytes", "kv_cache_bytes")):
        value = labels.get(label, "")
        if value.isdigit() and int(value) > 0:
            out[name] = int(value)
    return out


def startup(*parts: dict[str, Any]) -> EngineStartup | None:
    """One EngineStartup of the figures found (later parts fill what earlier ones
    lack); the KV cache's tokens from its blocks where no log line said them.
    None when nothing was found."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if value is not None and key in EngineStartup.model_fields:
                merged.setdefault(key, value)
    blocks, size = merged.get("kv_cache_blocks"), merged.get("kv_block_size_tokens")
    if merged.get("kv_cache_tokens") is None and blocks and size:
        merged["kv_cache_tokens"] = blocks * size
    return EngineStartup(**merged) if merged else None


def log_lines(path: Any, limit_bytes: int = 4 * 2 ** 20) -> list[str]:
    """The first `limit_bytes` of a log file as lines (start-up is at its head)."""
    try:
        with open(path, "rb") as f:
            return f.read(limit_bytes).decode("utf-8", "replace").splitlines()
    except OSError:
        return []
