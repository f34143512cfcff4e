"""The contract's engine kinds: the same set as the workers' registered engines, and
each kind's rules (scenarios, devices, GPU layout, packages) read from its one entry."""

from __future__ import annotations

from dataclasses import replace

import pytest

from farm.sweep_file import SpecError, parse_sweep
from farm_contract.engine_args import OpenAIArgs
from farm_contract.engines import ENGINE_KINDS, EngineKind, Package, engine_kind
from farm_contract.layouts import GpuLayout, LayoutError
from workers.engines import registered
from workers.engines.launch import with_layout
from workers.engines.ready import require_installed
from workers.errors import EngineError


def test_every_kind_has_an_engine_for_each_of_its_scenarios():
    engines = registered()
    for info in ENGINE_KINDS.values():
        for scenario in info.scenarios:
            assert (info.kind, scenario) in engines or (info.kind, None) in engines, \
                f"no engine registered for {info.kind} {scenario} runs"


def test_no_engine_is_registered_for_a_kind_the_contract_does_not_know():
    for kind, scenario in registered():
        assert kind in ENGINE_KINDS, f"engine {kind!r} is not in farm_contract.engines"
        if scenario is not None:
            assert scenario in ENGINE_KINDS[kind].scenarios, (kind, scenario)


def test_an_unknown_kind_names_the_known_ones():
    with pytest.raises(ValueError, match="known: vllm, hf, sim, openai, measure"):
        engine_kind("sglang")


SWEEP = """
name = "s"
[[model]]
id = "m"
source = "org/m-1B"
[hardware]
gpu = ["{gpu}"]
[engine]
kind = "{kind}"
{args}
[[scenario]]
kind = "{scenario}"
{load}
[workload]
input_tokens = [32]
output_tokens = [8]
"""


@pytest.mark.parametrize("kind,gpu,scenario,load,message", [
    ("hf", "H100", "server", "concurrency = [1]\nduration_s = 1",
     "the hf engine runs batch scenarios only"),
    ("openai", "H100", "batch", "num_prompts = [4]",
     "the openai engine runs server scenarios only"),
    ("sim", "H100", "batch", "num_prompts = [4]", "the sim engine runs on simulated GPUs only"),
    ("vllm", "sim:H100", "batch", "num_prompts = [4]",
     'the vllm engine needs real GPUs; simulated ones ("sim:…") take engine kind "sim"'),
])
def test_the_kind_entry_decides_scenarios_and_devices(kind, gpu, scenario, load, message):
    with pytest.raises(SpecError) as info:
        # base_url is the openai engine's argument only: any other engine refuses it.
        args = 'base_url = "http://127.0.0.1:8000"' if kind == "openai" else ""
        parse_sweep(SWEEP.format(kind=kind, gpu=gpu, scenario=scenario, load=load, args=args))
    assert message in str(info.value)


# ------------------------------------------------------------- the GPU layout


def test_every_kind_must_say_how_it_lays_out_the_runs_gpus():
    with pytest.raises(TypeError, match="layout"):
        EngineKind("x", ("server",), False, "no layout", lambda: OpenAIArgs)  # type: ignore[call-arg]
    assert all(isinstance(k.layout, GpuLayout) for k in ENGINE_KINDS.values())


def test_vllm_runs_tensor_parallel_over_what_the_other_degrees_leave():
    layout = ENGINE_KINDS["vllm"].layout
    assert layout.degrees({}, 4, "gpu") == {"tensor_parallel_size": 4}
    assert layout.degrees({"pipeline_parallel_size": 2}, 4, "gpu") == {"tensor_parallel_size": 2}
    assert layout.degrees({}, 1, "cpu") == {}         # the CPU device is one device
    with pytest.raises(LayoutError, match="does not divide the run's 3 GPU") as info:
        layout.degrees({"pipeline_parallel_size": 2}, 3, "gpu")
    assert info.value.argument == "pipeline_parallel_size"


def test_hf_is_one_gpu_and_an_endpoint_keeps_its_own_layout():
    assert ENGINE_KINDS["hf"].max_gpus_per_run == 1
    with pytest.raises(LayoutError):
        ENGINE_KINDS["hf"].layout.degrees({}, 2, "gpu")
    assert ENGINE_KINDS["openai"].layout.degrees({}, 8, "gpu") == {}
    assert ENGINE_KINDS["sim"].layout.degrees({}, 2, "sim") == {"tensor_parallel_size": 2}


def test_a_server_command_gets_the_layout_it_forgot_and_may_not_contradict_it():
    argv = ["sglang", "--port", "1"]
    assert with_layout(argv, {"tp_size": 2}) == ["sglang", "--port", "1", "--tp-size", "2"]
    assert with_layout(argv + ["--tp-size", "2"], {"tp_size": 2}) == argv + ["--tp-size", "2"]
    assert with_layout(argv + ["--tp-size=2"], {"tp_size": 2}) == argv + ["--tp-size=2"]
    with pytest.raises(EngineError, match="sets --tp-size 1, but the run has 2"):
        with_layout(argv + ["--tp-size", "1"], {"tp_size": 2})


def test_the_packages_a_worker_needs_come_from_the_kinds_entry(monkeypatch):
    entry = replace(ENGINE_KINDS["openai"],
                    packages=(Package("no_such_module_for_farm", "`pip install it`"),))
    monkeypatch.setitem(ENGINE_KINDS, "openai", entry)
    with pytest.raises(EngineError, match="no_such_module_for_farm is not installed.*"
                                          "install it with `pip install it`"):
        require_installed("openai")
    require_installed("sim")                          # nothing to install
