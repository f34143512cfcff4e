"""Issue 22 item 5: model sources and remote code are a GPU host's policy, not a
sweep's. Through the real ready-check (workers/engines/ready.py) of a vLLM run:
refusals say one thing whether or not the path exists."""

from __future__ import annotations

import pytest

from farm.sweep import expand
from farm.sweep_file import SpecError, parse_sweep
from workers.engines.ready import require_ready
from workers.errors import EngineError

SWEEP = """
name = "policy"
[[model]]
id = "m"
source = "{source}"
[hardware]
gpu = ["cpu"]
[engine]
kind = "vllm"
{engine}
[[scenario]]
kind = "batch"
num_prompts = 4
[workload]
input_tokens = [8]
output_tokens = [4]
"""


def run_of(source: str, engine: str = ""):
    return expand(parse_sweep(SWEEP.format(source=source, engine=engine)))[0]


def refused(source: str, engine: str = "") -> str:
    with pytest.raises(EngineError) as info:
        require_ready(run_of(source, engine))
    return str(info.value)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A host whose one model root holds a model folder; the hub and remote code off."""
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    monkeypatch.setenv("FARM_MODEL_ROOTS", str(models))
    for name in ("FARM_ALLOW_HUB", "FARM_ALLOW_REMOTE_CODE", "FARM_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return models


def test_a_path_outside_the_roots_and_a_missing_one_get_the_same_answer(root):
    outside = refused("/etc/passwd")
    missing = refused(str(root / "no-such-model"))
    assert "it takes models only from folders under its model roots" in outside
    assert str(root) in outside and "FARM_MODEL_ROOTS" in outside
    assert outside.replace("/etc/passwd", "X") == missing.replace(str(root / "no-such-model"),
                                                                 "X")
    assert "does not exist" not in outside + missing
    # Existing and missing outside the roots, `..` out of a root: the same again.
    assert refused("/etc").replace("/etc", "X") == outside.replace("/etc/passwd", "X")
    assert "model roots" in refused(f"{root}/../../../etc")


def test_a_model_under_a_root_is_accepted_and_a_symlink_out_of_it_is_not(root, tmp_path):
    require_ready(run_of(str(root / "tiny")))
    require_ready(run_of("./models/tiny"))                  # relative to the worker's folder
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert "model roots" in refused(str(root / "escape"))
    assert "model roots" in refused("/etc/passwd")


def test_hub_ids_only_where_the_host_allows_the_hub(root, monkeypatch):
    assert "hub ids where FARM_ALLOW_HUB is on" in refused("org/m-1B")
    monkeypatch.setenv("FARM_ALLOW_HUB", "1")
    require_ready(run_of("org/m-1B"))
    assert "model roots" in refused("/etc/passwd")       # the hub opens no path


def test_remote_code_only_where_the_host_allows_it(root, monkeypatch):
    message = refused(str(root / "tiny"), "trust_remote_code = true")
    assert "FARM_ALLOW_REMOTE_CODE is off" in message
    monkeypatch.setenv("FARM_ALLOW_REMOTE_CODE", "1")
    require_ready(run_of(str(root / "tiny"), "trust_remote_code = true"))


def test_the_default_roots_are_the_working_folder_s_models_and_the_deploy_folder(
        tmp_path, monkeypatch):
    from farm_contract.settings import Settings

    monkeypatch.delenv("FARM_MODEL_ROOTS", raising=False)
    settings = Settings(models_dir=str(tmp_path / "m"))
    assert settings.model_root_paths(str(tmp_path)) == [
        str(tmp_path / ".farm" / "models"), str(tmp_path / "m"), "/models"]


def test_arguments_that_reach_into_the_host_are_refused_even_past_validate(root, tmp_path):
    # reasoning_parser_plugin imported a .py file of the host's as the engine: validate
    # refuses it, and so does the worker for a message that never passed validate.
    plugin = tmp_path / "plugin.py"
    with pytest.raises(SpecError, match="reasoning_parser_plugin: it makes the GPU host "
                                        "import code"):
        run_of(str(root / "tiny"), f'reasoning_parser_plugin = "{plugin}"')
    run = run_of(str(root / "tiny"))
    forged = run.model_copy(update={"engine": run.engine.model_copy(update={"args": {
        **run.engine.args, "reasoning_parser_plugin": str(plugin),
        "compilation_config": '{"backend": "evil.compile"}'}})})
    with pytest.raises(EngineError) as info:
        require_ready(forged)
    message = str(info.value)
    assert "reasoning_parser_plugin: it makes the GPU host import code" in message
    assert "compilation_config: its key 'backend'" in message
