"""The transformers engine on the tiny model, on the CPU device, through `run_one`."""

from __future__ import annotations

import threading
import time

import pytest

from tests.engines.conftest import needs_torch
from tests.engines.sweeps import BATCH, WORKER, runs
from workers.engines import make_engine
from workers.engines.hf import HfEngine
from workers.engines.process import group_pids
from workers.gpu.cpu import CpuDevice
from workers.runner import run_one

pytestmark = [needs_torch, pytest.mark.timeout(180)]


def _run(run):
    engines = []

    def factory(run, gpus, abort):
        engines.append(make_engine(run, gpus, abort))
        return engines[-1]

    result = run_one(run, [CpuDevice()], threading.Event(), worker=WORKER, attempt=1,
                     engine_factory=factory)
    return result, engines[0]


@pytest.mark.parametrize("decoding", ["", 'decoding = { temperature = 0.8, top_p = 0.9 }'])
def test_hf_generates_exact_lengths_in_batches(tiny_model, decoding):
    run = runs(tiny_model, BATCH, engine="hf", engine_args="batch_size = 5",
               decoding=decoding)[0]
    result, engine = _run(run)
    assert result.status == "succeeded", result.error
    assert isinstance(engine, HfEngine) and engine.warmup_batches() == [5, 2]
    assert result.engine.kind == "hf" and result.engine.version.startswith("transformers ")
    [lp] = result.load_points
    assert lp.num_requests == 12 and lp.num_ok == 12
    for r in result.requests:
        assert r.input_tokens == 16 and r.output_tokens == 16 and len(r.itl_s) == 15
    by_index = sorted(result.requests, key=lambda r: r.index)
    # three batches (5, 5, 2): a later batch waits for the earlier ones
    assert by_index[0].ttft_s < by_index[5].ttft_s < by_index[10].ttft_s
    assert by_index[0].ttft_s == pytest.approx(by_index[4].ttft_s)
    assert group_pids(engine.process.pid) == set()


def test_hf_refuses_a_server_scenario_at_validation():
    from farm.sweep_file import SpecError
    from tests.engines.sweeps import SERVER_CLOSED

    with pytest.raises(SpecError, match="hf engine runs batch scenarios only"):
        runs("/m", SERVER_CLOSED, engine="hf", engine_args="")


class _SlowEdgeMeter:
    """A meter whose window edges take 0.3 s, like a slow energy-counter read."""

    def __init__(self):
        self.edges: dict[str, float] = {}

    def now_s(self) -> float:
        return time.monotonic()

    def begin(self, name, load_point=None):
        self.edges["start"] = self.now_s()
        time.sleep(0.3)

    def end(self, name, load_point=None):
        self.edges["end"] = self.now_s()


def test_every_token_lies_inside_a_batch_window_that_opens_slowly(tiny_model):
    # CI once saw a 70 ms batch finish before the worker had opened its window
    # (0 tokens inside): the child must hold generation until the window is open.
    run = runs(tiny_model, BATCH, engine="hf", engine_args="batch_size = 12")[0]
    engine = make_engine(run, [CpuDevice()], threading.Event())
    meter = _SlowEdgeMeter()
    try:
        engine.start(120)
        outcome = engine.run_load_point(0, "batch", 12, meter)
    finally:
        engine.stop()
    assert len(outcome.requests) == 12
    first = min(r.sent_s + r.ttft_s for r in outcome.requests)
    last = max(r.sent_s + r.e2e_s for r in outcome.requests)
    assert meter.edges["start"] + 0.3 <= first and last <= meter.edges["end"]
