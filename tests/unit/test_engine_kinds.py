"""The contract's engine kinds and the workers' registered engines are the same set."""

from __future__ import annotations

import pytest

from farm.spec import SpecError, parse_sweep
from farm_contract.engines import ENGINE_KINDS, engine_kind
from workers.engines import registered


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
    with pytest.raises(ValueError, match="known: vllm, hf, sim, openai"):
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
