"""docs/engines.md "How to add an engine", executed: a new OpenAI-compatible server
kind is two files — its entry (what one adds to `ENGINE_KINDS` in
farm_contract/engines.py) and its module in workers/engines/ — and then goes
through the door like any kind: `validate` (its arguments, its GPU layout),
expansion, and a run on two simulated GPUs against the shipped mock server.

The two files are written here as the docs say and found the documented way:
the entry put in `ENGINE_KINDS`, the module on `workers.engines`' package path,
where the registry's discovery imports it. The kind is declared simulated (its
figures are a mock's), so it runs on "sim:" GPUs, which no vendor pins: its
module says so in `environment()`.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import threading

import pytest

import workers.engines as registry
from farm.sweep import expand
from farm.sweep_file import SpecError, parse_sweep
from farm_contract.engines import ENGINE_KINDS
from tests.engines.sweeps import WORKER
from workers.gpu.discovery import open_inventory
from workers.runner import run_one

pytestmark = pytest.mark.timeout(120)

ENTRY = '''
"""The contract entry of the `mockserve` kind (an entry of ENGINE_KINDS)."""
from farm_contract.engine_args import EngineArgs
from farm_contract.engines import EngineKind
from farm_contract.layouts import TensorParallel


class MockServeArgs(EngineArgs):
    """The server's own arguments (a sweep's [engine] table)."""

    ttft_s: float = 0.01
    dp_size: int = 1


KIND = EngineKind(
    "mockserve", ("server",), True, "the mock OpenAI server, launched per run",
    lambda: MockServeArgs,
    # SGLang's spelling: --tp-size = GPUs / --dp-size.
    layout=TensorParallel("tp_size", ("dp_size",), engine="mockserve"))
'''

MODULE = '''
"""The `mockserve` engine: the shipped mock server, launched like SGLang would be."""
import os
import sys

from workers.engines import register
from workers.engines.base import engine_args
from workers.engines.openai_server import OpenAIServerEngine


@register("mockserve", "server")
class MockServeEngine(OpenAIServerEngine):
    display_name = "mock server"

    def command(self, port):
        # No --tp-size here: the run's layout adds it (launch.with_layout).
        return [sys.executable, __file__, "--port", str(port), "--model", self.served_model,
                "--ttft-s", str(engine_args(self.run).ttft_s), "--itl-s", "0.002"]

    def environment(self):
        return dict(os.environ)          # simulated GPUs: nothing to pin


if __name__ == "__main__":               # the "server": note its layout, then serve
    argv = sys.argv[1:]
    at = argv.index("--tp-size")
    with open(os.environ["MOCKSERVE_LAYOUT"], "w") as f:
        f.write(argv[at + 1])
    del argv[at:at + 2]
    from workers.mock_openai import main
    sys.exit(main(argv))
'''

SWEEP = """
name = "mockserve-door"
[[model]]
id = "tiny"
source = "{model}"
[hardware]
gpu = ["sim:H100"]
gpus_per_run = [{gpus}]
[engine]
kind = "mockserve"
{args}
[[scenario]]
kind = "server"
concurrency = [1, 4]
duration_s = 1
warmup_s = 0.2
[workload]
input_tokens = [16]
output_tokens = [16]
[measurement]
idle_baseline_s = 0.3
min_steady_s = 0.2
codecarbon = false
cooldown_timeout_s = 0
self_size = false
"""


@pytest.fixture
def mockserve(tmp_path, monkeypatch):
    """The two files, written and found as the docs say; everything undone after."""
    entry_file = tmp_path / "mockserve_entry.py"
    entry_file.write_text(textwrap.dedent(ENTRY))
    spec = importlib.util.spec_from_file_location("mockserve_entry", entry_file)
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    monkeypatch.setitem(ENGINE_KINDS, "mockserve", entry.KIND)

    engines_dir = tmp_path / "engines"
    engines_dir.mkdir()
    (engines_dir / "mockserve.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(engines_dir)])
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setenv("MOCKSERVE_LAYOUT", str(tmp_path / "layout"))
    yield tmp_path / "layout"
    sys.modules.pop("workers.engines.mockserve", None)


def test_a_new_server_kind_is_its_entry_and_its_module(mockserve, tiny_model):
    # validate: the entry's argument model and layout are the sweep's rules
    with pytest.raises(SpecError, match="unknown key"):
        parse_sweep(SWEEP.format(model=tiny_model, gpus=2, args="tp_size = 2"))
    with pytest.raises(SpecError, match="dp_size = 2 does not divide the run's 3 GPU"):
        parse_sweep(SWEEP.format(model=tiny_model, gpus=3, args="dp_size = 2"))
    [run] = expand(parse_sweep(SWEEP.format(model=tiny_model, gpus=2, args="ttft_s = 0.005")))
    assert run.engine.kind == "mockserve" and run.hardware.queue == "sim.h100-80gb.x2"
    assert registry.engine_class(run).__name__ == "MockServeEngine"

    inventory = open_inventory(["H100x2"])
    try:
        result = run_one(run, inventory.devices(), threading.Event(), worker=WORKER,
                         attempt=1)
    finally:
        inventory.shutdown()
    assert result.status == "succeeded", result.error
    assert result.engine.kind == "mockserve" and result.simulated
    # The command never named a tensor-parallel degree; the run's layout did: both
    # GPUs the meter sums are the server's.
    assert mockserve.read_text() == "2"
    assert len(result.gpus) == 2
    assert [lp.value for lp in result.load_points] == [1, 4]
    assert all(lp.num_requests > 0 and lp.num_failed == 0 for lp in result.load_points)

