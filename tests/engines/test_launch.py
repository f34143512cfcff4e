"""Engine launch settings: device pinning, vLLM arguments and flags."""

from __future__ import annotations

import pytest

from farm_contract.records import GpuInfo
from tests.engines.sweeps import BATCH, runs
from workers.engines import make_engine
from workers.engines.launch import cli_flags, engine_env, vllm_settings
from workers.errors import EngineError


class _Dev:
    def __init__(self, backend: str, index: int = 0):
        self.info = GpuInfo(index=index, uuid=f"U{index}", name="x", model="h100-80gb",
                            backend=backend)


def test_gpus_are_pinned_by_pci_order_and_the_cpu_sees_none():
    env = engine_env([_Dev("gpu", 2), _Dev("gpu", 5)], base={
        "FARM_SIGNING_KEY": "k" * 64, "FARM_BROKER_URL": "redis://:secret@h/0", "HOME": "/h"})
    # The farm's settings hold its credentials: an engine (a model's code) gets none.
    assert not [k for k in env if k.startswith("FARM_")] and env["HOME"] == "/h"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,5" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env
    cpu = engine_env([_Dev("cpu")], in_process_engine=True, base={"VLLM_HOST_IP": "127.0.0.9"})
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert cpu["VLLM_HOST_IP"] == "127.0.0.9"      # an operator's choice is kept


def test_simulated_gpus_are_refused_by_real_engines():
    with pytest.raises(EngineError, match="real GPUs or the CPU device"):
        engine_env([_Dev("sim")], base={})


def test_vllm_settings_take_the_model_tp_and_the_sweeps_arguments():
    run = runs("/models/tiny", BATCH)[0]
    settings = vllm_settings(run, [_Dev("gpu", 0), _Dev("gpu", 1)])
    assert settings == {"model": "/models/tiny", "dtype": "float32", "tensor_parallel_size": 2,
                        "seed": 0, "enforce_eager": True,
                        "kv_cache_memory_bytes": 268435456, "max_num_seqs": 16}
    assert "tensor_parallel_size" not in vllm_settings(run, [_Dev("cpu")])


def test_cli_flags_follow_vllms_spelling():
    assert cli_flags({"max_num_seqs": 8, "enforce_eager": True, "enable_prefix_caching": False,
                      "dtype": "float32", "revision": None}) == [
        "--max-num-seqs", "8", "--enforce-eager", "--no-enable-prefix-caching",
        "--dtype", "float32"]
    # A flag that only turns on has no --no- form: false, its default, is left off.
    assert cli_flags({"disable_log_stats": False, "enforce_eager": False}) == [
        "--no-enforce-eager"]


def test_the_registry_picks_the_engine_by_scenario():
    import threading

    from tests.engines.sweeps import SERVER_CLOSED
    from workers.engines.vllm_offline import VllmOfflineEngine
    from workers.engines.vllm_server import VllmServerEngine

    cpu = [_Dev("cpu")]
    batch = make_engine(runs("/m", BATCH)[0], cpu, threading.Event())
    server = make_engine(runs("/m", SERVER_CLOSED)[0], cpu, threading.Event())
    assert isinstance(batch, VllmOfflineEngine) and isinstance(server, VllmServerEngine)
    argv = server.argv()
    assert argv[argv.index("--served-model-name") + 1] == "tiny"
    assert argv[argv.index("--disable-uvicorn-access-log") + 1:] == [
        "--model", "/m", "--dtype", "float32", "--seed", "0", "--enforce-eager",
        "--kv-cache-memory-bytes", "268435456", "--max-num-seqs", "16"]


def test_hf_engine_arguments_are_checked_by_name():
    import threading

    from farm.sweep_file import SpecError, parse_sweep
    from tests.engines.sweeps import sweep_text

    # `validate` refuses it, with its line; a RunSpec that comes another way is
    # refused by the worker through the same model.
    with pytest.raises(SpecError, match="engine.batch_sise: unknown key .did you mean 'batch_"):
        parse_sweep(sweep_text("/m", BATCH, engine="hf", engine_args="batch_sise = 4"))
    run = runs("/m", BATCH, engine="hf", engine_args="")[0]
    engine = run.engine.model_copy(update={"args": {"batch_sise": 4}})
    run = run.model_copy(update={"engine": engine})
    with pytest.raises(EngineError, match="batch_sise.*known: batch_size"):
        make_engine(run, [_Dev("cpu")], threading.Event())


def test_decoding_reaches_vllms_sampling_params():
    from tests.engines.conftest import vllm_installed

    if not vllm_installed():
        pytest.skip("vLLM is not installed")
    from workers.engines.child import VllmBackend
    from workers.engines.offline import _request_json
    from workers.workload import PromptRequest

    greedy = VllmBackend._params(None, _request_json(PromptRequest(prompt="x", max_tokens=9,
                                                                   min_tokens=9)))
    assert (greedy.temperature, greedy.max_tokens, greedy.min_tokens) == (0.0, 9, 9)
    assert greedy.ignore_eos
    sampled = VllmBackend._params(None, _request_json(PromptRequest(
        prompt="x", max_tokens=9, min_tokens=9, temperature=0.8, top_p=0.9, top_k=40, seed=7)))
    assert (sampled.temperature, sampled.top_p, sampled.top_k, sampled.seed) == (0.8, 0.9, 40, 7)
