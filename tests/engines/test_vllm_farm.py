"""The shipped vLLM example through the whole farm: `farmctl run` starts a private
Redis, the recorder and a CPU worker; both scenarios run on the real vLLM engine
with the tiny model, land in the store and show in `farmctl results`. A second
model that does not exist fails with vLLM's own message while the worker
carries on with the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from farm.store import Store
from tests.engines.conftest import needs_vllm
from tests.integration.test_local_run import farmctl

pytestmark = [needs_vllm, pytest.mark.integration, pytest.mark.timeout(600)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vllm-cpu.toml"


@pytest.mark.slow
def test_the_vllm_cpu_example_runs_both_scenarios_through_the_farm(tmp_path, tiny_model):
    text = EXAMPLE.read_text()
    assert 'source = ".farm/models/tiny-llama"' in text
    text = text.replace('source = ".farm/models/tiny-llama"', f'source = "{tiny_model}"')
    text = text.replace("[hardware]", '[[model]]\nid = "missing"\nsource = "'
                        f'{tmp_path / "no-such-model"}"\n\n[hardware]')
    sweep = tmp_path / "vllm-cpu.toml"
    sweep.write_text(text)

    proc = farmctl(tmp_path, "run", str(sweep), "--quiet", timeout_s=540)
    assert proc.returncode == 1, proc.stdout + proc.stderr       # the missing model's runs failed
    rows = json.loads(farmctl(tmp_path, "results", "vllm-cpu-tiny",
                              "--format", "json").stdout)["rows"]
    tiny = [r for r in rows if r["model"] == "tiny-llama"]
    missing = [r for r in rows if r["model"] == "missing"]
    assert {r["status"] for r in tiny} == {"succeeded"}
    assert sorted((r["load_kind"], r["load_value"]) for r in tiny) == [
        ("batch", 1024), ("concurrency", 1), ("concurrency", 8)]
    assert len(missing) == 2 and {r["status"] for r in missing} == {"failed"}
    assert all("no-such-model" in r["error"] for r in missing)
    for row in tiny:
        assert row["output_throughput_tps"] > 0 and row["ttft_p50_ms"] > 0
        assert row["energy_per_output_token_j"] is None      # no RAPL on this VM: null, not 0
        assert not row["simulated"]
        # CodeCarbon's host figures without RAPL are estimates, and say so
        assert row["cpu_energy_j"] is None or row["cpu_method"] == "estimated"

    with Store.open(f"sqlite:///{tmp_path}/farm.db") as store:
        for row in tiny:
            requests = store.requests_for(row["run_id"])
            assert requests and all(r.ok and r.output_tokens == 64 for r in requests)
            trace = store.trace_for(row["run_id"])
            assert trace is not None and len(trace.t_s) > 10
            result = store.result_for(row["run_id"])
            assert result["engine_kind"] == "vllm" and result["engine_version"] == "0.32.0"
