"""Adaptive repetitions through `farmctl run`: real Redis, sim worker, recorder and
dispatcher. A configuration gets repetitions until its CI is within the target, or
until max when the target is out of reach."""

from __future__ import annotations

import json
import textwrap

import pytest

from farm.store import Store
from tests.integration.test_local_run import farmctl

pytestmark = pytest.mark.integration

SWEEP = textwrap.dedent("""\
    name = "{name}"
    repetitions = {{ min = 2, max = 4, ci_half_width_pct = {target} }}

    [[model]]
    id = "tiny-1b"
    source = "org/tiny-1B"

    [hardware]
    gpu = ["sim:L4"]

    [engine]
    kind = "sim"

    [[scenario]]
    kind = "server"
    concurrency = [1, {c}]
    duration_s = 0.3
    warmup_s = 0.05

    [workload]
    input_tokens = [32]
    output_tokens = [16]

    [measurement]
    sample_period_s = 0.05
    idle_baseline_s = 0.1
    min_steady_s = 0.1
    """)


def run_sweep(tmp_path, name: str, target: str, c: int = 8) -> dict:
    path = tmp_path / f"{name}.toml"
    path.write_text(SWEEP.format(name=name, target=target, c=c))
    done = farmctl(tmp_path, "run", str(path), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = farmctl(tmp_path, "results", name)
    assert "adaptive repetitions" in shown.stdout, shown.stdout
    document = json.loads(farmctl(tmp_path, "results", name, "--format", "json").stdout)
    return {"done": done, "shown": shown.stdout, "json": document}


@pytest.mark.slow
def test_an_unreachable_target_runs_to_max(tmp_path):
    # The simulation runs in real time: J/token differs by ~1% between repetitions,
    # never within 0.0001%, so the configuration runs max = 4 times.
    out = run_sweep(tmp_path, "adaptive-max", "0.0001")
    (config,) = out["json"]["repetitions"]
    assert config["verdict"] == "max" and config["runs"] == 4 and config["n"] == 4
    assert config["worst_ci_half_width_pct"] > 0.0001
    assert config["ci_level"] == 0.95
    with Store.open(f"sqlite:///{tmp_path}/farm.db") as store:
        runs = store.runs_of(store.find_sweep("adaptive-max").id)
    assert sorted(r["repetition"] for r in runs) == [0, 1, 2, 3]
    assert {r["status"] for r in runs} == {"succeeded"}
    # `farmctl run` waited for the added repetitions and shows them: 4 runs × 2 points.
    assert "adaptive-max: 8 row(s)" in out["done"].stdout
    assert "max reached, target not met" in out["shown"]
    # Run again: nothing is added, nothing measured twice.
    again = farmctl(tmp_path, "run", str(tmp_path / "adaptive-max.toml"), "--quiet")
    assert again.returncode == 0, again.stderr
    with Store.open(f"sqlite:///{tmp_path}/farm.db") as store:
        assert len(store.runs_of(store.find_sweep("adaptive-max").id)) == 4
        assert store.counts()["results"] == 4


@pytest.mark.parametrize("figure", ["gross", "net"])
def test_a_loose_target_stops_at_min(tmp_path, figure):
    out = run_sweep(tmp_path, "adaptive-met", f'90, figure = "{figure}"')
    (config,) = out["json"]["repetitions"]
    assert config["verdict"] == "met" and config["runs"] == 2
    assert config["worst_ci_half_width_pct"] <= 90
    assert "target met" in out["shown"]
    column = {"gross": "energy_per_output_token_j",
              "net": "energy_per_output_token_net_j"}[figure]
    assert config["ci_figure"] == column
    assert all(p["n"] == 2 and p[column] > 0 for p in config["points"])
