"""What cannot run is refused at the door: `farmctl validate`/`enqueue` exit 2 with the
field and the line, never a traceback, for sweeps whose every run would fail on a worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.cli import ExitCode, main
from farm.simulate import simulated_copy_with_notes
from farm.sweep import expand
from farm.sweep_file import SpecError, parse_sweep
from farm_contract.engine_args import (
    EngineArgsError,
    HfArgs,
    SimArgs,
    parse_args,
    vllm_args_model,
)
from farm_contract.engines import ENGINE_KINDS
from tests.paths import ROOT

EXAMPLES = ROOT / "examples"


def sweep(*, kind: str = "vllm", gpu: str = '"H100"', gpus_per_run: str = "1",
          engine: str = "", model: str = 'id = "llama-8b"\nsource = "org/Llama-3.1-8B"',
          scenario: str = 'kind = "batch"\nnum_prompts = 8', tokens: str = "input_tokens = 64",
          extra: str = "") -> str:
    return f"""name = "door"
[[model]]
{model}
[hardware]
gpu = [{gpu}]
gpus_per_run = {gpus_per_run}
[engine]
kind = "{kind}"
{engine}
[[scenario]]
{scenario}
[workload]
{tokens}
output_tokens = 16
{extra}"""


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def refused(text: str, tmp_path: Path, *args: str) -> str:
    """The CLI's error output for `text`, asserting exit code 2 and no traceback."""
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    result = CliRunner().invoke(main, [*args, str(path)])
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("engine,needle,message", [
    ("max_num_seq = 8", "max_num_seq", "engine.max_num_seq: unknown key (did you mean "
                                       "'max_num_seqs'?)"),
    ("tensor_parallel_size = 4", "tensor_parallel", "engine.tensor_parallel_size: not an "
     "engine argument: the farm sets it to the run's GPU count: set gpus_per_run in "
     "[hardware]"),
    ('model = "org/other"', "model =", "engine.model: not an engine argument: the farm sets "
                                       "the model from [[model]]"),
    ("seed = 3", "seed", "engine.seed: not an engine argument: the farm sets the seed from "
                         "[workload] seed"),
    ("port = 8001", "port", "engine.port: not an engine argument: the farm starts the server"),
    ("max_num_seqs = [8, \"lots\"]", "max_num_seqs", "engine.max_num_seqs[1]: Input should "
                                                     "be a valid integer"),
    ('dtype = "half"', "dtype", "engine.dtype: not an engine argument"),
    ('compilation_config = "{mode"', "compilation", "engine.compilation_config: vLLM takes "
                                                    "a config here"),
    ("pipeline_parallel_size = 2", "pipeline", "engine.pipeline_parallel_size: "
     "pipeline_parallel_size = 2 does not divide "
                                               "the run's 1 GPU(s)"),
])
def test_vllm_arguments_are_refused_with_field_and_line(tmp_path, engine, needle, message):
    text = sweep(engine=engine)
    out = refused(text, tmp_path, "validate")
    assert f"line {line_of(text, needle)}: {message}" in out


def test_a_swept_engine_argument_checks_each_value():
    runs = expand(parse_sweep(sweep(engine="max_num_seqs = [8, 64]\nenforce_eager = true")))
    assert [r.engine.args["max_num_seqs"] for r in runs] == [8, 64]
    with pytest.raises(SpecError, match=r"engine.max_num_seqs\[2\]: Input should be a valid"):
        parse_sweep(sweep(engine="max_num_seqs = [8, 64, 1.5]"))


def test_parallel_degrees_that_divide_the_gpus_pass_and_set_tensor_parallel():
    spec = parse_sweep(sweep(gpus_per_run="[2, 4]", engine="pipeline_parallel_size = 2"))
    assert [r.hardware.gpu_count for r in expand(spec)] == [2, 4]
    with pytest.raises(SpecError, match="does not divide the run's 3 GPU"):
        parse_sweep(sweep(gpus_per_run="[2, 3]", engine="pipeline_parallel_size = 2"))
    # An exclude rule that leaves the bad combination out makes the sweep valid.
    parse_sweep(sweep(gpus_per_run="[2, 3]", engine="pipeline_parallel_size = 2",
                      extra="[[exclude]]\ngpus_per_run = 3"))


def test_server_only_vllm_arguments_are_refused_for_a_batch():
    with pytest.raises(SpecError, match="only the vllm server takes enable_log_requests"):
        parse_sweep(sweep(engine="enable_log_requests = true"))
    parse_sweep(sweep(engine="enable_log_requests = true",
                      scenario='kind = "server"\nconcurrency = 1\nduration_s = 1'))


def test_data_parallelism_is_refused_for_a_vllm_batch():
    # vLLM's LLM() raises on it, an engine start (minutes on a GPU) into the run.
    with pytest.raises(SpecError, match="runs no data parallelism"):
        parse_sweep(sweep(gpus_per_run="[2]", engine="data_parallel_size = 2"))
    parse_sweep(sweep(gpus_per_run="[2]", engine="data_parallel_size = 2",
                      scenario='kind = "server"\nconcurrency = 1\nduration_s = 1'))


def test_vllm_arguments_the_server_has_no_flag_for_are_refused_for_a_server():
    # vLLM's server would exit "unrecognized arguments" a run's engine start later.
    server = 'kind = "server"\nconcurrency = 1\nduration_s = 1'
    with pytest.raises(SpecError, match="has no flag for enable_mm_processor_stats"):
        parse_sweep(sweep(engine="enable_mm_processor_stats = true", scenario=server))
    parse_sweep(sweep(engine="enable_mm_processor_stats = true"))     # a batch takes it


def test_hf_refuses_vllm_arguments_and_more_than_one_gpu(tmp_path):
    text = sweep(kind="hf", engine="max_num_seqs = 8")
    assert (f"line {line_of(text, 'max_num_seqs')}: engine.max_num_seqs: unknown key"
            in refused(text, tmp_path, "validate"))
    text = sweep(kind="hf", gpus_per_run="[1, 2]")
    assert (f"line {line_of(text, 'gpus_per_run')}: hardware.gpus_per_run: the hf engine "
            "runs on 1 GPU per run" in refused(text, tmp_path, "validate"))


def test_sim_model_of_unknown_size_is_refused(tmp_path):
    text = sweep(kind="sim", gpu='"sim:H100"', model='id = "mystery"\nsource = "org/mystery"')
    out = refused(text, tmp_path, "validate")
    assert (f"line {line_of(text, '[[model]]')}: model[0]: the sim engine cannot tell the "
            "size of model 'mystery'" in out)
    assert "add `params_b = <billions>`" in out
    ok = text.replace('source = "org/mystery"', 'source = "org/mystery"\nparams_b = 3')
    assert len(expand(parse_sweep(ok))) == 1


def test_a_70b_model_on_a_simulated_l4_is_refused_as_out_of_memory(tmp_path):
    model = 'id = "llama-70b"\nsource = "org/Llama-3-70B"'
    text = sweep(kind="sim", gpu='"sim:H100", "sim:L4"', model=model)
    out = refused(text, tmp_path, "validate")
    assert f"line {line_of(text, 'gpu = [')}: hardware.gpu: CUDA out of memory (simulated)" in out
    assert "on 1× l4" in out and "on 1× h100" in out   # 140 GB of weights fit neither
    # The perf model's own rule: two H100s hold it; the L4 excluded, the sweep is valid.
    fits = sweep(kind="sim", gpu='"sim:H100", "sim:L4"', model=model, gpus_per_run="2",
                 extra='[[exclude]]\ngpu = "sim:L4"')
    assert {r.hardware.gpu_model for r in expand(parse_sweep(fits))} == {"h100-80gb"}


def test_sim_bf16_on_a_gpu_without_it_and_a_dataset_without_lengths_are_refused():
    with pytest.raises(SpecError, match="Bfloat16 is only supported"):
        parse_sweep(sweep(kind="sim", gpu='"sim:T4"', model='id = "m-1b"\nsource = "o/m-1B"\n'
                                                             'dtype = "bfloat16"'))
    with pytest.raises(SpecError, match=r"workload.input_tokens: the sim engine needs"):
        parse_sweep(sweep(kind="sim", gpu='"sim:H100"', tokens='dataset = "prompts.jsonl"'))


def test_sim_arguments_keep_their_checks():
    with pytest.raises(SpecError, match="engine.gpu_memory_utilization: Input should be less"):
        parse_sweep(sweep(kind="sim", gpu='"sim:H100"', engine="gpu_memory_utilization = 2"))
    spec = parse_sweep(sweep(kind="sim", gpu='"sim:H100"', engine="max_num_seqs = [4, 64]"))
    assert len(expand(spec)) == 2


def test_openai_needs_base_url_and_refuses_a_key():
    with pytest.raises(SpecError, match="engine: the openai engine needs base_url"):
        parse_sweep(sweep(kind="openai", gpu='"cpu"',
                          scenario='kind = "server"\nconcurrency = 1\nduration_s = 1'))
    with pytest.raises(SpecError, match=r"line \d+: engine.api_key: not an engine argument: an "
                                        "API key is never written"):
        parse_sweep(sweep(kind="openai", gpu='"cpu"',
                          engine='base_url = "http://h"\napi_key = "sk"',
                          scenario='kind = "server"\nconcurrency = 1\nduration_s = 1'))


@pytest.mark.parametrize("name", ["FARM_SIGNING_KEY", "FARM_BROKER_URL", "farm_db_url"])
def test_openai_never_sends_a_farm_setting_as_its_key(name):
    # Security audit A: a sweep's server got the broker password or the host's signing key.
    with pytest.raises(SpecError, match=rf"line \d+: engine.api_key_env: .*'{name}' is one "
                                        "of the farm's own settings"):
        parse_sweep(sweep(kind="openai", gpu='"cpu"',
                          engine=f'base_url = "http://h"\napi_key_env = "{name}"',
                          scenario='kind = "server"\nconcurrency = 1\nduration_s = 1'))


def test_simulate_maps_the_hf_example_and_says_what_it_dropped(tmp_path):
    text = (EXAMPLES / "hf-gpu.toml").read_text()
    copy, notes = simulated_copy_with_notes(parse_sweep(text), text=text)
    # hf's batch_size becomes the sim engine's max_num_seqs, the diagonal kept
    assert copy.engine.kind == "sim" and copy.engine.arg_grid() == {"max_num_seqs": [1, 8, 64]}
    assert len(copy.exclude) == 6
    assert all("engine.max_num_seqs" in rule for rule in copy.exclude)
    assert sorted({(r.engine.args["max_num_seqs"], r.scenario.num_prompts)
                   for r in expand(copy)}) == [(1, 8), (8, 48), (64, 256)]
    assert any("batch_size = [1, 8, 64] carried as max_num_seqs" in n for n in notes)
    assert any("attn_implementation = 'sdpa' dropped" in n for n in notes)
    assert not any("[[exclude]]" in n for n in notes)
    for command in (["validate", "--simulate"], ["enqueue", "--simulate", "--dry-run"]):
        path = tmp_path / "hf.toml"
        path.write_text(text)
        result = CliRunner().invoke(main, [*command, str(path)])
        assert result.exit_code == 0, result.output
        assert "attn_implementation = 'sdpa' dropped: the sim engine does not model it" in \
            result.output
        assert "hf-gpu-llama-0.67b-sim" in result.output


def test_simulate_carries_what_the_sim_engine_takes():
    text = sweep(engine="max_num_seqs = [8, 64]\nenforce_eager = true\n"
                        "gpu_memory_utilization = 0.8",
                 extra='[[exclude]]\n"engine.max_num_seqs" = 8\ngpu = "H100"')
    copy, notes = simulated_copy_with_notes(parse_sweep(text), text=text)
    assert copy.engine.arg_grid() == {"max_num_seqs": [8, 64], "gpu_memory_utilization": [0.8]}
    assert notes == ["--simulate: engine argument enforce_eager = True dropped: the sim engine "
                     "does not model it"]
    assert [r.engine.args["max_num_seqs"] for r in expand(copy)] == [64]   # rule kept


def test_simulate_refuses_what_the_simulated_copy_cannot_run(tmp_path):
    text = sweep(gpu='"L4"', model='id = "llama-70b"\nsource = "org/Llama-3-70B"')
    parse_sweep(text)                                # valid as a measured sweep
    out = refused(text, tmp_path, "validate", "--simulate")
    assert "(--simulate): 1 problem(s)" in out
    assert f"line {line_of(text, 'gpu = [')}: hardware.gpu: CUDA out of memory" in out
    out = refused((EXAMPLES / "vllm-cpu.toml").read_text(), tmp_path, "validate", "--simulate")
    assert 'hardware.gpu: "cpu" has no simulated counterpart' in out


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_validates_and_simulates(path):
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    simulated = runner.invoke(main, ["validate", "--simulate", str(path)])
    if path.name == "vllm-cpu.toml":     # the CPU device has no simulated counterpart
        assert simulated.exit_code == ExitCode.INVALID_INPUT
        assert "no simulated counterpart" in simulated.output
    else:
        assert simulated.exit_code == 0, simulated.output
        assert "-sim: valid" in simulated.output


def test_the_worker_reads_arguments_through_the_same_models():
    assert ENGINE_KINDS["sim"].args is SimArgs and ENGINE_KINDS["hf"].args is HfArgs
    assert ENGINE_KINDS["vllm"].args is vllm_args_model()
    from workers.engines.hf import HfEngineArgs
    from workers.engines.sim import SimEngineArgs
    assert HfEngineArgs is HfArgs and SimEngineArgs is SimArgs
    with pytest.raises(EngineArgsError, match="max_num_seq: unknown argument .did you mean "
                                              "'max_num_seqs'"):
        parse_args(vllm_args_model(), {"max_num_seq": 8}, "vllm")
    assert parse_args(vllm_args_model(), {"max_num_seqs": 8, "enforce_eager": True},
                      "vllm").model_dump(exclude_none=True) == {"max_num_seqs": 8,
                                                                "enforce_eager": True}


def test_a_pinned_vllm_version_refuses_the_arguments_it_lacks(tmp_path):
    # 0.26.0 (the GPU hosts' CUDA build) lacks max_num_active_seqs, which 0.32.0 has.
    text = sweep(engine='vllm_version = "0.26"\nmax_num_active_seqs = 8\nmax_num_seqs = 64')
    out = refused(text, tmp_path, "validate")
    assert (f"line {line_of(text, 'max_num_active_seqs')}: engine.max_num_active_seqs: "
            "vLLM 0.26 has no engine argument 'max_num_active_seqs' (it is in 0.32.0's); "
            "the sweep pins vllm_version = '0.26'") in out
    # ... and takes what only it has; unpinned, a name of either version passes.
    parse_sweep(sweep(engine='vllm_version = "0.26.0"\nmax_num_partial_prefills = 2'))
    parse_sweep(sweep(engine="max_num_active_seqs = 8"))
    out = refused(sweep(engine='vllm_version = "0.19"'), tmp_path, "validate")
    assert "the farm knows the engine arguments of vLLM 0.32 (0.32.0), 0.26 (0.26.0)" in out
    with pytest.raises(EngineArgsError, match="vLLM 0.32 has no engine argument "
                                              "'max_num_partial_prefills'"):
        parse_args(vllm_args_model(), {"vllm_version": "0.32", "max_num_partial_prefills": 2},
                   "vllm")


def test_validate_says_which_known_vllm_lacks_an_unpinned_argument(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(sweep(engine="max_num_active_seqs = 8"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert ("note: vLLM 0.26.0 has no engine argument max_num_active_seqs: a worker running "
            "0.26 refuses these runs") in result.output
    path.write_text(sweep(engine="max_num_seqs = 8"))
    assert "note:" not in CliRunner().invoke(main, ["validate", str(path)]).output
