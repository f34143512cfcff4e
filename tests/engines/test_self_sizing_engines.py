"""Self-sizing steady windows on real engines (issue 13 item 1): transformers and
vLLM's offline engine on the tiny model, CPU device, through `run_one`."""

from __future__ import annotations

import threading

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from tests.engines.conftest import needs_torch, needs_vllm
from tests.engines.sweeps import BATCH, WORKER, sweep_text
from workers.gpu.cpu import CpuDevice
from workers.runner import run_one

pytestmark = [needs_torch, pytest.mark.timeout(300)]
# Longer than one pass over the 12 prompts, even beside a second test process:
# there one pass took 3.4-3.5 s with hf and with vLLM, and a 1.5 s / 2 s target
# was met by a single pass (CI, 2026-12-07).
MIN_STEADY_S = 5.0


def _self_sized(model, engine: str, engine_args: str, min_steady_s: float):
    # max_passes well above what the target needs: a fast host must reach the
    # window, not the cap (the cap has its own test on the sim engine).
    text = sweep_text(model, BATCH, engine=engine, engine_args=engine_args).replace(
        "min_steady_s = 0.5", f"min_steady_s = {min_steady_s}").replace(
        "self_size = false", "self_size = true\nmax_passes = 1000")
    (run,) = expand(parse_sweep(text))
    result = run_one(run, [CpuDevice()], threading.Event(), worker=WORKER, attempt=1)
    assert result.status == "succeeded", result.error
    (lp,) = result.load_points
    window = result.window("steady", 0)
    assert window.duration_s >= min_steady_s * 1.1 * 0.99
    assert next(c for c in result.validity.checks if c.name == "steady_window").passed
    assert lp.passes > 1
    assert lp.num_requests == lp.num_ok == 12 * lp.passes == len(result.requests)
    assert lp.output_tokens == 16 * 12 * lp.passes
    # Pass after pass, the same prompts in the same order.
    sent = sorted({r.sent_s for r in result.requests})
    assert len(sent) >= lp.passes
    return result, lp


def test_hf_repeats_its_prompts_until_the_window_is_long_enough(tiny_model):
    _, lp = _self_sized(tiny_model, "hf", "batch_size = 12", MIN_STEADY_S)
    assert any("passes over the prompts" in note for note in lp.notes)


@pytest.mark.slow
@needs_vllm
def test_vllm_offline_repeats_its_prompts_with_the_prefix_cache_emptied(tiny_model):
    from tests.engines.sweeps import VLLM_CPU_ARGS

    _self_sized(tiny_model, "vllm", VLLM_CPU_ARGS, MIN_STEADY_S)
