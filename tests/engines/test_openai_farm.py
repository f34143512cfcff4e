"""Engine kind `openai` through the whole farm: `farmctl run` starts a private Redis,
the recorder and a CPU worker; the worker loads the shipped mock server (running
here, on 127.0.0.1) as an already-running endpoint, and the figures land in the
store with the engine's notes."""

from __future__ import annotations

import json

import pytest

from farm.store import Store
from tests.integration.test_local_run import farmctl
from workers.mock_openai import VERSION, MockConfig, MockOpenAIServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SWEEP = """name = "openai-mock"

[[model]]
id = "tiny"
source = "{source}"

[hardware]
gpu = ["cpu"]

[engine]
kind = "openai"
base_url = "{url}/v1"
served_model = ["mock-model", "other-model"]

[[scenario]]
kind = "server"
concurrency = [1, 4]
duration_s = 2
warmup_s = 1

[workload]
input_tokens = 16
output_tokens = 8

[measurement]
idle_baseline_s = 0.5
min_steady_s = 0.5
codecarbon = false
cooldown_timeout_s = 0
"""


@pytest.mark.slow
def test_an_endpoint_measured_through_the_farm(tmp_path, tiny_model):
    with MockOpenAIServer(MockConfig(ttft_s=0.01, itl_s=0.002)) as mock:
        sweep = tmp_path / "openai.toml"
        sweep.write_text(SWEEP.format(source=tiny_model, url=mock.url))
        proc = farmctl(tmp_path, "run", str(sweep), "--quiet", timeout_s=360)
        served = mock.stats.completed
    # other-model is not served by the mock: that run fails, the other succeeds
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = json.loads(farmctl(tmp_path, "results", "openai-mock",
                              "--format", "json").stdout)["rows"]
    ok = [r for r in rows if r["status"] == "succeeded"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert sorted(r["load_value"] for r in ok) == [1, 4]
    assert len(failed) == 1 and "does not serve 'other-model'" in failed[0]["error"]
    assert served > 0
    with Store.open(f"sqlite:///{tmp_path}/farm.db") as store:
        run_id = ok[0]["run_id"]
        result = store.result_for(run_id)
        assert result["engine_kind"] == "openai" and result["engine_version"] == VERSION
        requests = store.requests_for(run_id)
        assert requests and all(r.ok and r.output_tokens == 8 for r in requests)
        for lp in store.load_points_for(run_id):
            assert any("not started by the farm" in note for note in lp.notes)
