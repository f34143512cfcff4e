"""The load generator (workers.loadgen) against the shipped fake server
(workers.mock_openai), on loopback: loop shapes, arrival statistics, timing,
token counts, failures as data, the steady-state window, the chat API."""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import pytest

from farm_contract.runspec import ServerLoad
from tests.paths import ROOT
from workers.loadgen import (
    ClientOptions,
    Slo,
    arrival_schedule,
    build_body,
    goodput_of,
    point_args,
    run_load_point,
)
from workers.metrics import load_point_result, token_times_s
from workers.mock_openai import MockConfig, MockOpenAIServer
from workers.workload import PromptRequest

MODEL = "mock-model"
PROMPTS = [PromptRequest(prompt=f"prompt number {i} says hello", input_tokens=99, max_tokens=4)
           for i in range(3)]


@pytest.fixture
def mock() -> Iterator[MockOpenAIServer]:
    with MockOpenAIServer(MockConfig(record_payloads=True)) as server:
        yield server


def run(mock: MockOpenAIServer, requests=PROMPTS, **kwargs):
    kwargs.setdefault("duration_s", 0.4)
    return asyncio.run(run_load_point(mock.url, MODEL, requests, **kwargs))


class FakeMeter:
    """A WindowMeter whose clock starts at 1000 s (so offsets are visibly the meter's)."""

    def __init__(self):
        self.origin = time.monotonic() - 1000.0
        self.calls: list[tuple[str, str, int | None, float, str]] = []

    def now_s(self) -> float:
        return time.monotonic() - self.origin

    def begin(self, name, load_point=None):
        self.calls.append(("begin", name, load_point, self.now_s(),
                           threading.current_thread().name))

    def end(self, name, load_point=None):
        self.calls.append(("end", name, load_point, self.now_s(),
                           threading.current_thread().name))

    def edge(self, kind: str) -> float:
        return next(c[3] for c in self.calls if c[0] == kind)


# ------------------------------------------------------------------ closed loop


def test_closed_loop_keeps_exactly_concurrency_requests_in_flight(mock):
    mock.configure(ttft_s=0.02, itl_s=0.005)
    out = run(mock, concurrency=8, duration_s=0.5)
    assert mock.stats.max_in_flight == 8
    assert out.max_in_flight == 8
    assert all(r.ok for r in out.requests), out.notes
    # every client sent one request after another for the whole duration (e2e ≈ 35 ms)
    assert len(out.requests) >= 8 * 8
    assert [r.index for r in out.requests] == list(range(len(out.requests)))
    assert out.sending_s == pytest.approx(0.5, abs=0.05)
    assert all(r.scheduled_s is None for r in out.requests)
    assert out.lateness.mean_ms is None


def test_prompts_are_cycled_in_order(mock):
    out = run(mock, concurrency=1, duration_s=0.15)
    sent = [p["prompt"] for p in mock.stats.payloads]
    assert len(sent) == len(out.requests) >= 4
    assert sent == [PROMPTS[i % 3].prompt for i in range(len(sent))]


# ------------------------------------------------------------------ open loop


def _cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


def test_poisson_arrivals_have_the_asked_rate():
    times = arrival_schedule(100.0, 1.0, 200.0, seed=7)
    gaps = [b - a for a, b in pairwise(times)]
    assert times[0] == 0.0 and times[-1] < 200.0
    assert statistics.fmean(gaps) == pytest.approx(0.01, rel=0.03)
    assert _cv(gaps) == pytest.approx(1.0, abs=0.05)      # exponential: sd = mean


def test_burstiness_changes_the_variance_not_the_rate():
    bursty = arrival_schedule(100.0, 0.25, 200.0, seed=1)
    regular = arrival_schedule(100.0, 4.0, 200.0, seed=1)
    for times, cv in ((bursty, 2.0), (regular, 0.5)):     # cv = 1/√shape
        gaps = [b - a for a, b in pairwise(times)]
        assert statistics.fmean(gaps) == pytest.approx(0.01, rel=0.06)
        assert _cv(gaps) == pytest.approx(cv, rel=0.08)


def test_the_schedule_is_deterministic_per_seed():
    assert arrival_schedule(5.0, 1.0, 60.0, seed=3) == arrival_schedule(5.0, 1.0, 60.0, seed=3)
    assert arrival_schedule(5.0, 1.0, 60.0, seed=3) != arrival_schedule(5.0, 1.0, 60.0, seed=4)


def test_open_loop_sends_on_schedule(mock):
    meter = FakeMeter()
    out = run(mock, rate_rps=80.0, seed=11, duration_s=0.6, meter=meter)
    schedule = arrival_schedule(80.0, 1.0, 0.6, seed=11)
    assert len(out.requests) == len(schedule) and out.unsent == 0
    for record, at in zip(out.requests, schedule):
        assert record.scheduled_s == pytest.approx(out.start_s + at, abs=1e-5)
        assert record.sent_s >= record.scheduled_s - 1e-5
    assert out.lateness.mean_ms < 5.0
    assert out.lateness.p99_ms < 25.0


def test_max_concurrency_makes_arrivals_wait_and_records_lateness(mock):
    mock.configure(ttft_s=0.1)
    out = run(mock, rate_rps=50.0, max_concurrency=2, duration_s=0.6, seed=2)
    assert mock.stats.max_in_flight == 2 and out.max_in_flight == 2
    late = [r.sent_s - r.scheduled_s for r in out.requests]
    assert max(late) > 0.1                       # waited whole requests for a slot
    assert out.lateness.mean_ms > 50.0
    assert out.unsent > 0                        # ~30 arrivals, ~12 slots' worth served
    assert any("waiting for one of the 2 slots" in n for n in out.notes)
    assert all(r.ok for r in out.requests)


def test_the_rate_offered_counts_arrivals_not_sends_when_they_wait_for_a_slot(mock):
    # Counted by send, an open loop held to 2 slots "offered" what the server took
    # (audit: 20 req/s offered read 4.4), and a rate sweep's saturation rule
    # (achieved below offered) could never fire.
    from farm_contract.records import EnergyWindow
    from workers.metrics import load_point_result

    mock.configure(ttft_s=0.1)
    meter = FakeMeter()
    out = run(mock, rate_rps=50.0, max_concurrency=2, duration_s=1.2, warmup_s=0.2,
              meter=meter, seed=3)
    start, end = meter.edge("begin"), meter.edge("end")
    steady = EnergyWindow(name="steady", load_point=0, start_s=start,
                          duration_s=end - start, energy_j=100.0)
    lp = load_point_result(0, "request_rate", 50.0, out, steady)
    assert out.arrivals_in_steady is not None
    assert lp.offered_rps == pytest.approx(50.0, rel=0.5)       # Poisson, ~1 s
    assert lp.request_throughput_rps < 0.5 * lp.offered_rps     # 2 slots, 0.1 s each


def test_a_repeated_prompt_is_salted_so_no_prefix_cache_serves_it(mock):
    # vLLM's prefix cache is on by default: a cycled prompt's prefill came from the
    # cache (94% of its tokens on the CPU build, TTFT 1,050 → 66 ms), reading low.
    out = run(mock, concurrency=2, duration_s=0.4,
              options=ClientOptions(salt_repeats=True))
    bodies = mock.stats.payloads
    assert len(bodies) > len(PROMPTS)
    assert all("cache_salt" not in b for b in bodies[:len(PROMPTS)])
    salts = [b["cache_salt"] for b in bodies[len(PROMPTS):]]
    assert len(set(salts)) == len(salts)
    assert any(f"repeated one of the point's {len(PROMPTS)} prompts; each carried a "
               "cache_salt" in n for n in out.notes)
    plain = run(mock, concurrency=2, duration_s=0.3)     # another server: said, not salted
    assert any("may have served their prefill" in n for n in plain.notes)


# ------------------------------------------------------------------ timing and tokens


def test_ttft_and_itl_match_the_servers_delays(mock):
    mock.configure(ttft_s=0.05, itl_s=0.01)
    requests = [PromptRequest(prompt="a b c", max_tokens=10)]
    out = run(mock, requests, concurrency=2, duration_s=0.5)
    ok = [r for r in out.requests if r.ok]
    assert len(ok) == len(out.requests) >= 4
    ttft = statistics.fmean(r.ttft_s for r in ok)
    itl = [g for r in ok for g in r.itl_s]
    assert 0.048 <= ttft <= 0.06
    assert all(len(r.itl_s) == 9 for r in ok)
    assert statistics.fmean(itl) == pytest.approx(0.010, abs=0.0015)
    assert statistics.fmean(r.e2e_s for r in ok) == pytest.approx(0.05 + 9 * 0.01, abs=0.012)
    for r in ok:      # e2e is the last token's time: ttft + every gap
        assert r.e2e_s == pytest.approx(r.ttft_s + sum(r.itl_s), abs=1e-5)


def test_token_counts_come_from_the_servers_usage(mock):
    out = run(mock, concurrency=2, duration_s=0.1)
    for r in out.requests:
        assert r.ok
        assert r.output_tokens == 4 and len(token_times_s(r)) == 4
        # the mock's tokenizer counts words: 5, not the 99 the workload claimed
        assert r.input_tokens == 5
    body = mock.stats.payloads[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == body["min_tokens"] == 4 and body["ignore_eos"] is True


def test_without_ignore_eos_the_server_may_stop_early_but_not_before_min_tokens(mock):
    mock.configure(eos_after=2)
    early = [PromptRequest(prompt="x y", max_tokens=8, ignore_eos=False)]
    out = run(mock, early, concurrency=1, duration_s=0.1)
    assert {r.output_tokens for r in out.requests} == {2}
    assert {len(r.itl_s) for r in out.requests} == {1}
    out = run(mock, [PromptRequest(prompt="x y", max_tokens=8)], concurrency=1, duration_s=0.1)
    assert {r.output_tokens for r in out.requests} == {8}


def test_continuous_usage_counts_tokens_per_chunk(mock):
    out = run(mock, concurrency=2, duration_s=0.1, api="chat",
              options=ClientOptions(continuous_usage=True))
    assert mock.stats.payloads[0]["stream_options"]["continuous_usage_stats"] is True
    assert all(r.ok and r.output_tokens == 4 and len(r.itl_s) == 3 for r in out.requests)
    # No note on token counts (the repeats of its 3 prompts have theirs).
    assert [n for n in out.notes if "repeated one of" not in n] == []


# ------------------------------------------------------------------ failures are data


def test_http_errors_are_recorded_with_status_and_body(mock):
    mock.configure(failure_rate=1.0, error_status=503)
    out = run(mock, concurrency=2, duration_s=0.1)
    assert out.requests and not any(r.ok for r in out.requests)
    assert all(r.error.startswith("HTTP 503: ") and "mock failure" in r.error
               for r in out.requests)
    assert out.goodput.good_requests == 0 and out.goodput.attainment == 0.0
    assert any("failed (HTTP 503" in n for n in out.notes)
    assert any("steady window never opened" in n for n in out.notes)


def test_a_seeded_failure_rate_fails_the_drawn_requests(mock):
    mock.configure(failure_rate=0.25, seed=5)
    out = run(mock, concurrency=1, duration_s=0.3)   # one at a time: arrival order = index
    draws = random.Random(5)
    expected = [draws.random() < 0.25 for _ in out.requests]
    assert len(out.requests) > 20
    assert [not r.ok for r in out.requests] == expected
    lp = load_point_result(0, "concurrency", 1, out, None)
    assert lp.num_failed == sum(expected) > 0 and lp.num_ok == len(expected) - sum(expected)


def test_a_server_that_never_answers_times_out(mock):
    mock.configure(failure_rate=1.0, failure="hang")
    t0 = time.monotonic()
    out = run(mock, concurrency=2, duration_s=0.1,
              options=ClientOptions(request_timeout_s=0.3))
    assert time.monotonic() - t0 < 1.5
    assert len(out.requests) == 2
    assert all(not r.ok and r.error.startswith("timeout") for r in out.requests)
    assert all(r.e2e_s == pytest.approx(0.3, abs=0.1) for r in out.requests)


def test_a_connection_dropped_mid_stream_is_a_failed_request(mock):
    mock.configure(failure_rate=1.0, failure="disconnect", disconnect_after_tokens=2,
                   itl_s=0.005)
    out = run(mock, concurrency=2, duration_s=0.1)
    assert out.requests and not any(r.ok for r in out.requests)
    for r in out.requests:
        assert r.error.startswith(("disconnected mid-stream", "server disconnected",
                                   "connection error")), r.error
        assert r.ttft_s is not None and len(r.itl_s) == 1     # two tokens arrived first
    assert token_times_s(out.requests[0]) == []               # not counted as output


def test_no_server_at_all_is_recorded_not_raised():
    with MockOpenAIServer() as server:
        url = server.url
    out = asyncio.run(run_load_point(url, MODEL, PROMPTS, concurrency=1, duration_s=0.05))
    assert out.requests and all(r.error.startswith("connection error") for r in out.requests)


# ------------------------------------------------------------------ steady window


def test_closed_loop_steady_window_opens_when_the_batch_is_full_and_closes_at_drain(mock):
    # Requests of 200 ms (16 tokens) in lock-step: sending stops at 0.5 s, half-way
    # through the third request, so a drain follows however much a loaded host
    # stretches each request (it would take 50 ms per request to line them up).
    mock.configure(ttft_s=0.05, itl_s=0.01)
    long = [PromptRequest(prompt=p.prompt, input_tokens=99, max_tokens=16) for p in PROMPTS]
    meter = FakeMeter()
    out = run(mock, long, concurrency=4, duration_s=0.5, meter=meter, load_point_index=3)
    assert [c[:3] for c in meter.calls] == [("begin", "steady", 3), ("end", "steady", 3)]
    assert all(c[4].startswith("loadgen-meter") for c in meter.calls)   # off the event loop
    begin, end = meter.edge("begin"), meter.edge("end")
    first = out.requests[:4]
    assert begin >= max(r.sent_s for r in first)                    # all 4 in flight
    assert begin >= min(r.sent_s + r.ttft_s for r in first) - 1e-3  # a first token arrived
    assert begin - min(r.sent_s + r.ttft_s for r in first) < 0.03  # and soon after
    assert end - out.start_s == pytest.approx(0.5, abs=0.03)        # sending stopped
    last_done = max(r.sent_s + r.e2e_s for r in out.requests)
    assert end < last_done                                          # before the drain
    assert out.steady_start_s == pytest.approx(begin, abs=0.01)
    assert out.steady_end_s == pytest.approx(end, abs=0.01)
    assert out.start_s > 999.0                      # offsets are on the meter's clock
    # tokens inside the window, counted from the records, on the same clock
    steady = type("W", (), {"start_s": begin, "duration_s": end - begin, "energy_j": None,
                            "avg_power_w": None, "peak_power_w": None})()
    lp = load_point_result(3, "concurrency", 4, out, steady)
    # 4 clients, each 16 tokens per request of 50 + 15·10 ms
    assert lp.steady_output_tokens == pytest.approx(4 * (end - begin) * 16 / 0.2, rel=0.15)


def test_warmup_delays_the_steady_window(mock):
    meter = FakeMeter()
    out = run(mock, concurrency=2, duration_s=0.6, warmup_s=0.2, meter=meter)
    # The window opens at the later of the warm-up's end and the batch being full
    # (a first token). On a loaded host the first token alone once took 0.58 s.
    full_s = min(r.sent_s + r.ttft_s for r in out.requests if r.ttft_s is not None)
    opens_s = max(out.start_s + 0.2, full_s)
    assert meter.edge("begin") - out.start_s >= 0.2
    assert meter.edge("begin") == pytest.approx(opens_s, abs=0.03), (
        f"window began {meter.edge('begin') - out.start_s:.3f} s after the start; "
        f"the batch was full at {full_s - out.start_s:.3f} s")


def test_open_loop_steady_window_opens_after_the_first_completion(mock):
    mock.configure(ttft_s=0.03, itl_s=0.01)
    meter = FakeMeter()
    out = run(mock, rate_rps=40.0, duration_s=0.6, meter=meter, seed=1)
    first_done = min(r.sent_s + r.e2e_s for r in out.requests)
    assert meter.edge("begin") >= first_done - 1e-3
    assert meter.edge("begin") - first_done < 0.02
    assert meter.edge("end") - out.start_s == pytest.approx(0.6, abs=0.03)


def test_no_steady_window_when_the_batch_never_fills_in_time(mock):
    mock.configure(ttft_s=0.3)
    meter = FakeMeter()
    out = run(mock, concurrency=2, duration_s=0.1, meter=meter)
    assert meter.calls == []
    assert out.steady_start_s is None and out.steady_end_s is None
    assert all(r.ok for r in out.requests)          # still drained and recorded


def test_a_meter_failure_fails_the_load_point_and_leaves_nothing_running(mock):
    mock.configure(ttft_s=0.01, itl_s=0.01)

    class BrokenMeter(FakeMeter):
        def begin(self, name, load_point=None):
            raise RuntimeError("GPU lost at the window edge")

    with pytest.raises(RuntimeError, match="GPU lost"):
        run(mock, concurrency=3, duration_s=0.2, meter=BrokenMeter())
    time.sleep(0.05)
    assert mock.stats.in_flight == 0


# ------------------------------------------------------------------ chat, abort, API


def test_chat_api_streams_and_skips_the_role_chunk(mock):
    mock.configure(ttft_s=0.02, itl_s=0.005)
    chat = [PromptRequest(messages=[{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "hello there"}], max_tokens=5),
            PromptRequest(prompt="plain prompt", max_tokens=5)]
    out = run(mock, chat, concurrency=2, duration_s=0.2, api="chat")
    assert all(r.ok and r.output_tokens == 5 and len(r.itl_s) == 4 for r in out.requests)
    assert {r.input_tokens for r in out.requests} == {4, 2}
    bodies = mock.stats.payloads
    assert bodies[0]["max_completion_tokens"] == 5 and "max_tokens" not in bodies[0]
    assert {json.dumps(b["messages"]) for b in bodies} == {
        json.dumps(chat[0].messages), json.dumps([{"role": "user", "content": "plain prompt"}])}


def test_abort_cancels_what_is_in_flight(mock):
    mock.configure(ttft_s=5.0)
    abort = threading.Event()
    threading.Timer(0.2, abort.set).start()
    t0 = time.monotonic()
    out = run(mock, concurrency=3, duration_s=10.0, abort=abort)
    assert time.monotonic() - t0 < 1.0
    assert out.aborted and len(out.requests) == 3
    assert all(r.error.startswith("cancelled") for r in out.requests)


def test_arguments_are_checked_up_front():
    url = "http://127.0.0.1:9"
    for kwargs in ({}, {"concurrency": 2, "rate_rps": 1.0},
                   {"concurrency": 2, "max_concurrency": 2}, {"concurrency": 0}):
        with pytest.raises(ValueError):
            asyncio.run(run_load_point(url, MODEL, PROMPTS, duration_s=1.0, **kwargs))
    with pytest.raises(ValueError, match="chat API"):
        build_body(PromptRequest(prompt=[1, 2, 3]), MODEL, "chat")


def test_request_bodies():
    body = json.loads(build_body(PromptRequest(prompt=[1, 2], max_tokens=7, temperature=0.8,
                                               top_p=0.9, top_k=5, seed=3), MODEL,
                                 "completions", ClientOptions(extra_body={"logprobs": None})))
    assert body == {"model": MODEL, "prompt": [1, 2], "max_tokens": 7, "min_tokens": 7,
                    "ignore_eos": True, "temperature": 0.8, "top_p": 0.9, "top_k": 5,
                    "seed": 3, "stream": True, "stream_options": {"include_usage": True},
                    "logprobs": None}
    sampled = json.loads(build_body(PromptRequest(prompt="p", ignore_eos=False), MODEL,
                                    "completions"))
    assert "min_tokens" not in sampled and "ignore_eos" not in sampled


def test_any_request_with_the_same_attributes_will_do(mock):
    """workers.workload builds its own request objects: duck typing, no conversion."""

    @dataclass(frozen=True)
    class WorkloadRequest:
        prompt: str | None
        messages: list[dict] | None
        input_tokens: int
        max_tokens: int
        min_tokens: int
        temperature: float
        top_p: float
        top_k: int | None
        seed: int | None
        ignore_eos: bool

    request = WorkloadRequest("one two three", None, 3, 6, 6, 0.7, 0.9, None, 42, True)
    out = run(mock, [request], concurrency=1, duration_s=0.05)
    assert all(r.ok and r.output_tokens == 6 for r in out.requests)
    body = mock.stats.payloads[0]
    assert (body["min_tokens"], body["seed"], body["temperature"]) == (6, 42, 0.7)


def test_point_args_map_a_server_scenario():
    open_loop = ServerLoad(kind="server", name="s", request_rate=[2.0], burstiness=0.5,
                           max_concurrency=8, duration_s=60, warmup_s=5, api="chat")
    assert point_args(open_loop, "request_rate", 2.0) == {
        "duration_s": 60, "api": "chat", "rate_rps": 2.0, "burstiness": 0.5,
        "max_concurrency": 8}
    closed = ServerLoad(kind="server", name="s", concurrency=[4], duration_s=60, warmup_s=5)
    assert point_args(closed, "concurrency", 4.0)["concurrency"] == 4


def test_goodput_counts_requests_within_the_limits(mock):
    mock.configure(ttft_s=0.03, itl_s=0.01)
    out = run(mock, concurrency=2, duration_s=0.2)
    n = len(out.requests)
    assert out.goodput.good_requests == n and out.goodput.p99_met
    strict = goodput_of(out.requests, out.duration_s, Slo(ttft_s=0.01, tpot_s=0.2))
    assert strict.good_requests == 0 and strict.p99_met is False
    assert out.goodput.goodput_rps == pytest.approx(n / out.duration_s)


# ------------------------------------------------------------------ the mock itself


def test_the_mock_answers_health_models_and_plain_json(mock):
    with urllib.request.urlopen(mock.url + "/health", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(mock.url + "/v1/models", timeout=5) as resp:
        assert json.load(resp)["data"][0]["id"] == MODEL
    req = urllib.request.Request(
        mock.url + "/v1/chat/completions", method="POST",
        data=json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "a b"}],
                         "max_tokens": 3}).encode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        answer = json.load(resp)
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert answer["choices"][0]["message"]["content"] == " tok tok tok"


def test_the_mock_runs_as_a_process_on_loopback():
    proc = subprocess.Popen([sys.executable, "-m", "workers.mock_openai", "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("mock_openai listening on http://127.0.0.1:")
        url = line.split()[-1]
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_mock_process_takes_its_api_key_from_the_environment():
    env = {**os.environ, "FARM_MOCK_TEST_KEY": "k-123"}
    proc = subprocess.Popen([sys.executable, "-m", "workers.mock_openai", "--port", "0",
                             "--api-key-env", "FARM_MOCK_TEST_KEY"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().split()[-1]
        assert _status(url + "/health") == 200
        with urllib.request.urlopen(url + "/version", timeout=5) as resp:
            assert json.load(resp) == {"version": "farm-mock"}
        assert _status(url + "/v1/models") == 401
        assert _status(url + "/v1/models", {"Authorization": "Bearer nope"}) == 401
        assert _status(url + "/v1/models", {"Authorization": "Bearer k-123"}) == 200
        assert _status(url + "/v1/nothing-here", {"Authorization": "Bearer k-123"}) == 404
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
    unset = subprocess.run([sys.executable, "-m", "workers.mock_openai", "--api-key-env",
                            "FARM_MOCK_UNSET_KEY"], cwd=ROOT, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items()
                                if k != "FARM_MOCK_UNSET_KEY"}, timeout=30)
    assert unset.returncode == 2 and "FARM_MOCK_UNSET_KEY is not set" in unset.stderr
