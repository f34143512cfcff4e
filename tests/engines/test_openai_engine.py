"""The OpenAI engines against the shipped mock server, on loopback, through `run_one`.

- engine kind `openai`: an endpoint the farm does not start (the mock in a
  thread, or as its own process where its pid matters), with its arguments,
  API key from the worker's environment, readiness and model checks, and the
  endpoint's processes declared for the isolation watch;
- `OpenAIServerEngine`: a server engine the farm launches, shown with a
  one-class engine that launches `python -m workers.mock_openai`;
- the registry's decorator and the sweep rules for the new kind.

The tokenizer is the tiny Llama's (workers.tinymodel); the mock counts prompt
tokens as words, so input token counts are the mock's, output counts exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from farm.simulate import simulated_copy
from farm.sweep import expand
from farm.sweep_file import SpecError, parse_sweep
from farm_contract.settings import SettingsError, load_settings
from tests.engines.spy import EngineSpy
from tests.engines.sweeps import BATCH, SERVER_CLOSED, SERVER_OPEN, WORKER, runs, sweep_text
from workers.engines import engine_class, make_engine, register, registered, resident_pids
from workers.engines.openai_endpoint import (
    OpenAIEndpointEngine,
    endpoint_processes,
    normalize_base_url,
)
from workers.engines.openai_server import OpenAIServerEngine, installed_version
from workers.engines.process import free_loopback_port, group_pids
from workers.errors import EngineError
from workers.gpu.cpu import CpuDevice
from workers.mock_openai import VERSION, MockConfig, MockOpenAIServer
from workers.runner import run_one

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def _run(run, factory=make_engine, **kwargs):
    spy = EngineSpy(factory)
    result = run_one(run, [CpuDevice()], threading.Event(), worker=WORKER, attempt=1,
                     engine_factory=spy, **kwargs)
    return result, spy.engines[0] if spy.engines else None


def _openai(model, url: str, scenario: str = SERVER_CLOSED, extra: str = ""):
    return runs(model, scenario, engine="openai",
                engine_args=f'base_url = "{url}"\n{extra}')[0]


@pytest.fixture
def endpoint(tiny_model):
    """The mock serving the tiny model under its source path (the default served_model)."""
    config = MockConfig(ttft_s=0.01, itl_s=0.002, model=str(tiny_model), record_payloads=True)
    with MockOpenAIServer(config) as server:
        yield server


@pytest.fixture
def mock_process():
    """The mock as its own process: an endpoint with a pid of its own."""
    proc = subprocess.Popen([sys.executable, "-m", "workers.mock_openai", "--port", "0",
                             "--ttft-s", "0.01", "--itl-s", "0.002"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("mock_openai listening on "), line
        yield proc, line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        return resp.status == 200


# ------------------------------------------------------------------ kind openai


def test_the_openai_engine_loads_a_running_endpoint_it_never_starts(tiny_model, endpoint):
    result, engine = _run(_openai(tiny_model, endpoint.url + "/v1"))
    assert result.status == "succeeded", result.error
    assert isinstance(engine, OpenAIEndpointEngine)
    assert result.engine.kind == "openai" and result.engine.version == VERSION
    assert not result.engine.simulated and not result.simulated
    assert [lp.value for lp in result.load_points] == [1, 4]
    assert [w.name for w in result.windows].count("load") == 1
    for lp in result.load_points:
        mine = [r for r in result.requests if r.load_point == lp.index]
        assert lp.num_requests == len(mine) > 0 and lp.num_failed == 0
        assert all(r.ok and r.output_tokens == 16 and len(r.itl_s) == 15 for r in mine)
        assert lp.max_in_flight == lp.value
        assert any("not started by the farm" in n for n in lp.notes)
        assert any("no endpoint processes declared" in n for n in lp.notes)
    # default served_model: the model's source; every request reached the endpoint
    assert {p["model"] for p in endpoint.stats.payloads} == {str(tiny_model)}
    assert endpoint.stats.completed >= len(result.requests)
    assert engine.pids() == set()
    assert _healthy(endpoint.url)                  # stop() left the endpoint running


def test_open_loop_against_an_endpoint(tiny_model, endpoint):
    result, _ = _run(_openai(tiny_model, endpoint.url, SERVER_OPEN))
    assert result.status == "succeeded", result.error
    [lp] = result.load_points
    assert lp.kind == "request_rate" and 20 <= lp.num_requests <= 60
    assert lp.max_in_flight <= 8 and lp.num_failed == 0


def test_served_model_names_the_model_and_must_be_served(tiny_model, endpoint):
    endpoint.configure(model="served-name")
    ok, _ = _run(_openai(tiny_model, endpoint.url, extra='served_model = "served-name"'))
    assert ok.status == "succeeded", ok.error
    assert {p["model"] for p in endpoint.stats.payloads} == {"served-name"}
    wrong, _ = _run(_openai(tiny_model, endpoint.url, extra='served_model = "other"'))
    assert wrong.status == "failed" and wrong.error.kind == "engine"
    assert "does not serve 'other'; it serves served-name" in wrong.error.message


def test_the_api_key_comes_from_the_workers_environment_only(tiny_model, endpoint,
                                                              monkeypatch):
    endpoint.configure(api_key="s3cret-key")
    monkeypatch.setenv("FARM_API_KEY_ENVS", "OTHER_KEY, ENDPOINT_TEST_API_KEY")
    run = _openai(tiny_model, endpoint.url, extra='api_key_env = "ENDPOINT_TEST_API_KEY"')
    monkeypatch.delenv("ENDPOINT_TEST_API_KEY", raising=False)
    unset, _ = _run(run)
    assert unset.status == "failed"
    assert "'ENDPOINT_TEST_API_KEY' (api_key_env) is not set" in unset.error.message
    monkeypatch.setenv("ENDPOINT_TEST_API_KEY", "wrong")
    refused, _ = _run(run)
    assert refused.status == "failed" and "answered HTTP 401 (the API key" in refused.error.message
    monkeypatch.setenv("ENDPOINT_TEST_API_KEY", "s3cret-key")
    result, _ = _run(run)
    assert result.status == "succeeded", result.error
    assert all(r.ok for r in result.requests)
    assert "s3cret-key" not in result.model_dump_json()
    # and never in the sweep: the coordinator refuses it at the door
    with pytest.raises(SpecError, match="never written in a sweep"):
        parse_sweep(sweep_text(tiny_model, SERVER_CLOSED, engine="openai",
                               engine_args='base_url = "http://127.0.0.1:1"\napi_key = "x"'))


def test_only_variables_the_host_lists_are_sent_as_the_key(tiny_model, endpoint, monkeypatch):
    # Security audit A: any variable of the worker went to the sweep's server as the key.
    monkeypatch.setenv("ENDPOINT_TEST_API_KEY", "s3cret-key")
    monkeypatch.setenv("HOME_SECRET", "not-for-endpoints")
    run = _openai(tiny_model, endpoint.url, extra='api_key_env = "HOME_SECRET"')
    for listed in (None, "ENDPOINT_TEST_API_KEY"):     # unset: none is sent
        if listed:
            monkeypatch.setenv("FARM_API_KEY_ENVS", listed)
        else:
            monkeypatch.delenv("FARM_API_KEY_ENVS", raising=False)
        result, _ = _run(run)
        assert result.status == "failed" and result.error.kind == "engine"
        assert ("api_key_env 'HOME_SECRET' is not a variable this worker" in
                result.error.message and "FARM_API_KEY_ENVS" in result.error.message)
        assert f"({listed or 'none'})" in result.error.message
    assert endpoint.stats.completed == 0 and not endpoint.stats.payloads
    # A FARM_* name never reaches the worker's environment, listed or not.
    good = _openai(tiny_model, endpoint.url)
    bad = good.model_copy(update={"engine": good.engine.model_copy(update={
        "args": {"base_url": endpoint.url, "api_key_env": "FARM_SIGNING_KEY"}})})
    with pytest.raises(EngineError, match="farm's own settings"):
        make_engine(bad, [CpuDevice()], threading.Event())
    monkeypatch.setenv("FARM_API_KEY_ENVS", "FARM_SIGNING_KEY")
    with pytest.raises(SettingsError, match="FARM_API_KEY_ENVS='FARM_SIGNING_KEY' has "
                                            "FARM_SIGNING_KEY, one of the farm's own"):
        load_settings()


def test_the_model_policy_and_dataset_roots_hold_for_an_endpoint(tiny_model, endpoint,
                                                                 tmp_path, monkeypatch):
    # Security audit B: the openai engine loaded any tokenizer and read any prompt file,
    # and sent the prompts to the sweep's server.
    monkeypatch.setenv("FARM_MODEL_ROOTS", str(tmp_path / "models"))
    outside, _ = _run(_openai(tiny_model, endpoint.url))
    assert outside.status == "failed" and outside.error.kind == "engine"
    assert f"model source '{tiny_model}' is not one this worker" in outside.error.message
    monkeypatch.setenv("FARM_MODEL_ROOTS", str(tiny_model.parent))
    private = tmp_path / "private.jsonl"
    private.write_text('{"prompt": "the secret plan"}\n')
    monkeypatch.setenv("FARM_DATASET_ROOTS", str(tmp_path / "datasets"))
    text = sweep_text(tiny_model, SERVER_CLOSED, engine="openai",
                      engine_args=f'base_url = "{endpoint.url}"')
    text = text.replace("[workload]\n", f'[workload]\ndataset = "{private}"\n')
    [run, *_] = expand(parse_sweep(text))
    refused, _ = _run(run)
    assert refused.status == "failed" and refused.error.kind == "dataset"
    assert "not a dataset this worker" in refused.error.message
    assert "FARM_DATASET_ROOTS" in refused.error.message
    assert endpoint.stats.completed == 0 and not endpoint.stats.payloads


def test_an_endpoint_that_never_answers_fails_at_its_ready_timeout(tiny_model):
    url = f"http://127.0.0.1:{free_loopback_port()}"
    t0 = time.monotonic()
    result, _ = _run(_openai(tiny_model, url, extra="ready_timeout_s = 1"))
    assert result.status == "failed" and result.error.kind == "engine"
    assert "/v1/models was not ready within 1 s (last: no answer)" in result.error.message
    assert time.monotonic() - t0 < 30


def test_endpoint_arguments_are_checked(tiny_model):
    assert normalize_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    assert normalize_base_url("https://api.example.org/proxy/v1") == \
        "https://api.example.org/proxy"
    good = runs(tiny_model, SERVER_CLOSED, engine="openai", engine_args='base_url = "http://h"')[0]
    for bad, match in (({"base_url": "ftp://x"}, "not an http"),
                       ({"base_url": "http://h", "health_path": "v1"}, "must start with /"),
                       ({"base_url": "http://h", "api_key_env": "A-B"}, "not an environment"),
                       ({"base_url": "http://h", "max_tokens": 3}, "max_tokens.*known: base_url")):
        # `validate` refuses each (with its line); the worker, through the same model.
        text = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in bad.items())
        with pytest.raises(SpecError, match=match.split(".*")[0]):
            parse_sweep(sweep_text(tiny_model, SERVER_CLOSED, engine="openai", engine_args=text))
        run = good.model_copy(update={"engine": good.engine.model_copy(update={"args": bad})})
        with pytest.raises(EngineError, match=match):
            make_engine(run, [CpuDevice()], threading.Event())


# ------------------------------------------------------------------ isolation


def test_endpoint_processes_are_the_named_ones_and_their_descendants():
    tree = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 5
        members: set[int] = set()
        while time.monotonic() < deadline and len(members) < 2:
            members, found, _ = endpoint_processes({tree.pid}, set())
            time.sleep(0.05)
        assert found == {tree.pid} and tree.pid in members and len(members) == 2
        child = (members - {tree.pid}).pop()
        by_name, _, matched = endpoint_processes(set(), {"sleep"})
        assert child in by_name and tree.pid not in by_name and matched == {"sleep"}
        assert endpoint_processes({2 ** 22 + 7}, {"no-such-process-name"})[1:] == (set(), set())
    finally:
        tree.kill()
        tree.wait()


def test_the_endpoints_declared_pid_is_allowed_and_recorded(tiny_model, mock_process):
    proc, url = mock_process
    run = runs(tiny_model, SERVER_CLOSED, engine="openai", engine_args=(
        f'base_url = "{url}"\nserved_model = "mock-model"\nendpoint_pids = "{proc.pid}"'))[0]
    assert resident_pids(run) == {proc.pid}          # before any engine exists
    result, engine = _run(run)
    assert result.status == "succeeded", result.error
    assert engine.pids() == {proc.pid}               # still allowed after stop()
    for lp in result.load_points:
        assert any(f"pids {proc.pid} (endpoint_pids={proc.pid})" in n for n in lp.notes)
    assert proc.poll() is None                       # the endpoint was not stopped


def test_the_runner_lets_the_endpoints_processes_through_preflight(tiny_model, mock_process,
                                                                   monkeypatch):
    # The endpoint's server is on the GPUs before the run: preflight must not call it a
    # foreign tenant (gpu_busy), nor the idle windows.
    import workers.runner as runner

    seen: list[set[int]] = []
    real = runner.run_preflight
    monkeypatch.setattr(runner, "run_preflight",
                        lambda gpus, spec, own, *a: seen.append(set(own)) or real(gpus, spec,
                                                                                  own, *a))
    proc, url = mock_process
    run = runs(tiny_model, SERVER_CLOSED, engine="openai", engine_args=(
        f'base_url = "{url}"\nserved_model = "mock-model"\nendpoint_pids = "{proc.pid}"'))[0]
    result, _ = _run(run)
    assert result.status == "succeeded", result.error
    assert seen and proc.pid in seen[0] and os.getpid() in seen[0]


def test_a_stale_declaration_fails_the_start(tiny_model, endpoint):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    result, _ = _run(_openai(tiny_model, endpoint.url, extra=f"endpoint_pids = {dead.pid}"))
    assert result.status == "failed"
    assert f"no running process matches endpoint_pids {dead.pid}" in result.error.message


# ------------------------------------------------------------------ launched servers


class MockServerEngine(OpenAIServerEngine):
    """A whole server engine in one class: the shipped mock, launched per run."""

    kind = "mock-server"
    display_name = "mock server"
    distributions = ("aiohttp",)

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "workers.mock_openai", "--port", str(port),
                "--ttft-s", "0.01", "--itl-s", "0.002"]


class ExitingServerEngine(MockServerEngine):
    def command(self, port: int) -> list[str]:
        return [sys.executable, "-c", "import sys; print('ValueError: bad flag'); sys.exit(3)"]


def test_a_server_engine_is_one_class_on_the_base(tiny_model):
    run = _openai(tiny_model, "http://unused")
    result, engine = _run(run, factory=MockServerEngine)
    assert result.status == "succeeded", result.error
    assert result.engine.kind == "mock-server"
    assert result.engine.version == installed_version(("aiohttp",)) is not None
    assert all(r.ok and r.output_tokens == 16 for r in result.requests)
    assert engine.base_url.startswith("http://127.0.0.1:") and engine.served_model == "tiny"
    assert group_pids(engine.process.pid) == set(), "server processes left behind"


def test_a_launched_server_that_exits_fails_the_run_with_its_output(tiny_model):
    result, engine = _run(_openai(tiny_model, "http://unused"), factory=ExitingServerEngine)
    assert result.status == "failed" and result.error.kind == "engine"
    assert "the mock server engine exited with code 3 before healthy" in result.error.message
    assert "ValueError: bad flag" in result.error.message
    assert group_pids(engine.process.pid) == set()


# ------------------------------------------------------------------ registry, sweeps


def test_engines_register_with_a_decorator():
    engines = registered()
    assert engines[("openai", "server")] is OpenAIEndpointEngine
    assert {("vllm", "server"), ("vllm", "batch"), ("hf", "batch"), ("sim", None)} <= set(engines)
    with pytest.raises(ValueError, match="registered twice"):
        register("openai", "server")(MockServerEngine)
    assert registered()[("openai", "server")] is OpenAIEndpointEngine
    batch = runs("/m", BATCH, engine="vllm")[0]
    odd = batch.model_copy(update={"engine": batch.engine.model_copy(update={"kind": "openai"})})
    with pytest.raises(EngineError, match="'openai' with a batch scenario is not available"):
        engine_class(odd)


def test_sweep_rules_for_the_openai_kind(tiny_model):
    args = 'base_url = "http://127.0.0.1:8000"\nendpoint_pids = ["1", "2"]'
    spec = parse_sweep(sweep_text(tiny_model, SERVER_CLOSED, engine="openai", engine_args=args))
    assert [r.engine.args for r in expand(spec)] == [
        {"base_url": "http://127.0.0.1:8000", "endpoint_pids": p} for p in ("1", "2")]
    with pytest.raises(SpecError, match="server scenarios only"):
        parse_sweep(sweep_text(tiny_model, BATCH, engine="openai", engine_args=args))
    with pytest.raises(SpecError, match="needs base_url"):
        parse_sweep(sweep_text(tiny_model, SERVER_CLOSED, engine="openai", engine_args=""))
    sim_text = sweep_text(tiny_model, SERVER_CLOSED, engine="openai", engine_args=args)
    with pytest.raises(SpecError, match="needs real GPUs"):
        parse_sweep(sim_text.replace('gpu = ["cpu"]', 'gpu = ["sim:H100"]'))
    # --simulate: the sim engine with its defaults, one run per scenario point
    # (the sim engine needs the model's size: "tiny" does not say it)
    gpu_text = sim_text.replace('gpu = ["cpu"]', 'gpu = ["H100"]').replace(
        'dtype = "float32"', 'dtype = "float32"\nparams_b = 0.01')
    measured = parse_sweep(gpu_text + '\n[[exclude]]\n"engine.endpoint_pids" = "1"\n')
    assert [r.engine.args["endpoint_pids"] for r in expand(measured)] == ["2"]
    copy = simulated_copy(measured)
    sims = expand(copy)
    assert copy.engine.kind == "sim" and copy.exclude == []
    assert len(sims) == 1 and sims[0].engine.args == {} and sims[0].simulated


def test_resident_pids_are_none_for_engines_the_farm_starts_and_never_raise():
    assert resident_pids(runs("/m", SERVER_CLOSED)[0]) == set()
    assert os.getpid() not in resident_pids(runs("/m", BATCH, engine="hf", engine_args="")[0])
    good = runs("/m", SERVER_CLOSED, engine="openai", engine_args='base_url = "http://h"')[0]
    bad = good.model_copy(update={"engine": good.engine.model_copy(
        update={"args": {"base_url": "http://h", "endpoint_pids": "12 x"}})})  # past validate
    assert resident_pids(bad) == set()
    with pytest.raises(EngineError, match="endpoint_pids: '12 x' is not a list of process ids"):
        make_engine(bad, [CpuDevice()], threading.Event())
