"""farm_contract.host_reach: the engine arguments a sweep may not give, because they
reach past the run into the GPU host (its code, files, network)."""

from __future__ import annotations

import pytest

from farm_contract import host_reach, vllm_args, vllm_args_0_26
from farm_contract.host_reach import reach, reach_in


def test_code_paths_and_addresses_are_refused_with_the_reason():
    assert "import code" in reach("worker_extension_cls", "mine.Ext")
    assert "read or write a path" in reach("download_dir", "/home/alice")
    assert "connect to or listen at an address" in reach("otlp_traces_endpoint", "http://x")


def test_a_table_is_refused_for_its_reaching_keys_only():
    assert reach("compilation_config", '{"cudagraph_mode": "FULL_AND_PIECEWISE"}') is None
    assert "its key 'backend'" in reach("compilation_config", '{"backend": "evil.fn"}')
    assert reach("speculative_config", '{"method": "ngram", "num_speculative_tokens": 3}') \
        is None
    assert "its key 'model'" in reach("speculative_config", '{"model": "/home/a/draft"}')
    assert reach("compilation_config", "not json") is None      # its type check says so


def test_an_argument_with_safe_values_takes_those_only():
    assert reach("distributed_executor_backend", "mp") is None
    assert "'ray' or 'uni'" in reach("distributed_executor_backend", "evil.Executor")
    assert reach("generation_config", "vllm") is None
    assert "path" in reach("generation_config", "/home/alice/gen")


def test_an_attention_kernel_from_the_hub_is_refused_for_hf():
    from farm_contract.engine_args import EngineArgsError, HfArgs, parse_args

    assert reach("attn_implementation", "sdpa") is None
    assert "names a hub repository" in reach("attn_implementation", "kernels-community/fa3")
    with pytest.raises(EngineArgsError, match="attn_implementation: 'org/k' names a hub"):
        parse_args(HfArgs, {"attn_implementation": "org/k"}, "hf")


def test_the_everyday_arguments_pass():
    args = {"max_num_seqs": 64, "enforce_eager": False, "gpu_memory_utilization": 0.9,
            "kv_cache_memory_bytes": 2 ** 28, "attention_backend": "TRITON_ATTN"}
    assert reach_in(args) == []
    assert reach_in({**args, "worker_cls": "x.W"}) == [
        "worker_cls: it makes the GPU host import code of the sweep's choosing; "
        "a sweep may not give it"]


def test_every_name_it_refuses_is_an_argument_of_a_known_vllm():
    # A misspelt name here would leave the real argument open.
    known = {*vllm_args.ENGINE_ARGS, *vllm_args.SERVER_ONLY_ARGS,
             *vllm_args_0_26.ENGINE_ARG_NAMES, *vllm_args_0_26.SERVER_ONLY_ARG_NAMES}
    named = {*host_reach.REFUSED, *host_reach.REFUSED_KEYS, *host_reach.ONLY_VALUES}
    assert named - known <= {"tool_parser_plugin"}      # the server's command line only
