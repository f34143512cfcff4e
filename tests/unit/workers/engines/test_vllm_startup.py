"""What vLLM's start-up cost and chose, read from its log lines and /metrics text
(lines as vLLM 0.26.0 on an H100 and 0.32.0 on the CPU write them)."""

from __future__ import annotations

from workers.engines import vllm_startup

LOG_026 = """\
(EngineCore pid=4242) INFO 12-07 05:00:01 [gpu_model_runner.py:5348] Model loading took 14.99 GiB memory and 5.123456 seconds
(EngineCore pid=4242) INFO 12-07 05:00:09 [monitor.py:20] torch.compile took 7.81 s in total
(EngineCore pid=4242) INFO 12-07 05:00:10 [gpu_worker.py:561] Available KV cache memory: 52.30 GiB
(EngineCore pid=4242) INFO 12-07 05:00:10 [kv_cache_utils.py:2177] GPU KV cache size: 428,432 tokens
(EngineCore pid=4242) INFO 12-07 05:00:10 [kv_cache_utils.py:2179] Maximum concurrency for 16,384 tokens per request: 26.15x
(EngineCore pid=4242) INFO 12-07 05:00:11 [gpu_model_runner.py:6845] Graph capturing finished in 1 secs, took 0.52 GiB
(EngineCore pid=4242) INFO 12-07 05:00:12 [core.py:342] init engine (profile, create kv cache, warmup model) took 22.70 s (compilation: 7.81 s)
"""  # noqa: E501
METRICS = """\
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",num_gpu_blocks="26777",num_cpu_blocks="None"} 1.0
"""  # noqa: E501


def test_log_lines_give_times_and_the_kv_cache():
    found = vllm_startup.from_log(LOG_026.splitlines())
    assert found == {"model_load_s": 5.123456, "compile_s": 7.81, "graph_capture_s": 1.0,
                     "engine_init_s": 22.70,
                     "kv_cache_bytes": round(52.30 * 2**30), "kv_cache_tokens": 428_432}
    # Without compilation (enforce_eager), the line ends at its time.
    plain = "init engine (profile, create kv cache, warmup model) took 3.05 s"
    assert vllm_startup.from_log([plain]) == {"engine_init_s": 3.05}


def test_metrics_give_blocks_and_the_tokens_follow():
    assert vllm_startup.from_metrics(METRICS) == {"kv_cache_blocks": 26777,
                                                  "kv_block_size_tokens": 16}
    startup = vllm_startup.startup(vllm_startup.from_metrics(METRICS))
    assert startup is not None and startup.kv_cache_tokens == 26777 * 16
    assert startup.model_load_s is None and startup.graph_capture_s is None   # null, not 0


def test_a_kv_cache_size_the_sweep_fixed_comes_from_the_metrics():
    # With kv_cache_memory_bytes set, vLLM logs no "Available KV cache memory" line.
    fixed = METRICS.replace('num_cpu_blocks="None"', 'kv_cache_memory_bytes="268435456"')
    assert vllm_startup.from_metrics(fixed)["kv_cache_bytes"] == 268435456
    assert "kv_cache_bytes" not in vllm_startup.from_metrics(
        METRICS.replace('num_cpu_blocks="None"', 'kv_cache_memory_bytes="None"'))


def test_nothing_reported_is_none_and_a_logged_size_wins():
    assert vllm_startup.startup({}, vllm_startup.from_log(["nothing here"])) is None
    both = vllm_startup.startup(vllm_startup.from_log(LOG_026.splitlines()),
                                vllm_startup.from_metrics(METRICS))
    assert both is not None and both.kv_cache_tokens == 428_432 and both.kv_cache_blocks == 26777
    assert vllm_startup.from_metrics("vllm:other 1\n") == {}


def test_the_runner_adds_the_start_time_and_random_weights(tmp_path):
    from farm_contract.records import EnergyWindow, EngineInfo
    from tests.factories import sweep
    from workers import tinymodel
    from workers.runner import with_start

    (tmp_path / tinymodel.MARKER).write_text('{"weights": "random"}')
    _, _, runs = sweep()
    run = runs[0].model_copy(update={"model": runs[0].model.model_copy(
        update={"source": str(tmp_path)})})
    load = EnergyWindow(name="load", start_s=1.0, duration_s=61.23456, energy_j=None)
    info = with_start(EngineInfo(kind="vllm", simulated=False), load, run)
    assert info.model_weights == "random" and info.startup is not None
    assert info.startup.engine_start_s == 61.235 and info.startup.kv_cache_tokens is None
    assert with_start(EngineInfo(kind="sim", simulated=True), load, run).model_weights is None
