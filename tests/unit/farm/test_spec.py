"""Sweep files: the shipped examples validate; bad files fail with the field and line."""

from __future__ import annotations

import textwrap

import pytest

from farm.simulate import simulated_copy
from farm.sweep import expand, plan
from farm.sweep_file import SpecError, load_sweep, parse_sweep
from farm_contract.runspec import RunSpec
from tests.paths import ROOT

EXAMPLES = ROOT / "examples"

VALID = textwrap.dedent("""\
    name = "t"
    repetitions = 1

    [[model]]
    id = "m-8b"
    source = "org/m-8B"

    [hardware]
    gpu = ["H100"]

    [engine]
    kind = "vllm"

    [[scenario]]
    kind = "server"
    concurrency = [1, 8]
    duration_s = 10

    [workload]
    input_tokens = [128]
    output_tokens = [64]
    """)


def test_issue_example_validates_and_expands():
    spec, _ = load_sweep(EXAMPLES / "study.toml")
    runs = expand(spec)
    # 2 models × 3 GPUs × 3 scenarios × 3 inputs × 2 outputs × 2 decodings × 3 reps
    assert len(runs) == 2 * 3 * 3 * 3 * 2 * 2 * 3
    assert plan(runs) == {"gpu.h100-80gb.x1": 216, "gpu.a100-40gb.x1": 216, "gpu.l4.x1": 216}
    assert len({r.run_id for r in runs}) == len(runs)
    closed = next(r for r in runs if r.scenario.kind == "server" and r.scenario.concurrency)
    # The load list stays inside one run: five load points, one engine start.
    assert [v for _, v in closed.scenario.load_points] == [1, 8, 32, 100, 256]


def test_quickstart_is_simulated():
    spec, _ = load_sweep(EXAMPLES / "quickstart.toml")
    assert all(r.simulated and r.hardware.queue.startswith("sim.") for r in expand(spec))


def test_hf_gpu_example_is_one_prompt_count_per_batch_size_on_real_gpus():
    spec, _ = load_sweep(EXAMPLES / "hf-gpu.toml")
    runs = expand(spec)
    shapes = {(r.hardware.queue, r.engine.args["batch_size"], r.scenario.num_prompts)
              for r in runs}
    assert shapes == {(q, b, n) for q in ("gpu.h100-80gb.x1", "gpu.h200-141gb.x1")
                      for b, n in ((1, 8), (8, 48), (64, 256))}
    assert not any(r.simulated for r in runs) and {r.engine.kind for r in runs} == {"hf"}
    # Host-bound: the CI target is on net-of-idle J/token (docs/measurement.md).
    assert spec.adaptive.figure == "net" and spec.adaptive.column == \
        "energy_per_output_token_net_j"


def test_run_ids_are_stable_and_depend_on_content():
    a = expand(parse_sweep(VALID))
    b = expand(parse_sweep(VALID))
    assert [r.run_id for r in a] == [r.run_id for r in b]
    c = expand(parse_sweep(VALID.replace("output_tokens = [64]", "output_tokens = [65]")))
    assert {r.run_id for r in a}.isdisjoint({r.run_id for r in c})


def test_server_scenarios_carry_an_slo_with_mlperf_defaults():
    run = expand(parse_sweep(VALID))[0]
    assert (run.scenario.slo_ttft_ms, run.scenario.slo_tpot_ms) == (2000.0, 200.0)
    text = VALID.replace("duration_s = 10", "duration_s = 10\nslo_ttft_ms = 450\nslo_tpot_ms = 40")
    run = expand(parse_sweep(text))[0]
    assert (run.scenario.slo_ttft_ms, run.scenario.slo_tpot_ms) == (450.0, 40.0)
    with pytest.raises(SpecError, match=r"slo_tpot_ms.*greater than 0"):
        parse_sweep(VALID.replace("duration_s = 10", "duration_s = 10\nslo_tpot_ms = 0"))


# Pinned before the SLO keys existed: adding them kept every run id.
PINNED_IDS = {"closed": "8acb83901a69229cfdd52567", "open": "ca654da492e4f3b1a54ddc80"}
OPEN = VALID.replace("concurrency = [1, 8]", "request_rate = [2.5]\nmax_concurrency = 16")


def test_the_slo_is_not_part_of_the_run_id():
    for name, text in (("closed", VALID), ("open", OPEN)):
        base = expand(parse_sweep(text))[0]
        assert base.run_id == PINNED_IDS[name]
        strict = expand(parse_sweep(text.replace(
            "duration_s = 10", "duration_s = 10\nslo_ttft_ms = 450.0\nslo_tpot_ms = 40.0")))[0]
        assert strict.scenario.slo_ttft_ms == 450.0
        assert strict.run_id == base.run_id
        assert strict.canonical_json() == base.canonical_json()
        assert "slo_" not in base.canonical_json()
        # What travels to the worker and into the store keeps the limits.
        assert RunSpec.model_validate_json(strict.to_json()) == strict
        assert RunSpec.model_validate_json(strict.to_json()).run_id == base.run_id
    # A RunSpec written before the SLO existed reads with the defaults, same id.
    old = expand(parse_sweep(VALID))[0].canonical_json()
    assert RunSpec.model_validate_json(old).scenario.slo_ttft_ms == 2000.0
    assert RunSpec.model_validate_json(old).run_id == PINNED_IDS["closed"]


def test_repetitions_make_distinct_runs():
    runs = expand(parse_sweep(VALID.replace("repetitions = 1", "repetitions = 3")))
    assert [r.repetition for r in runs] == [0, 1, 2]
    assert len({r.run_id for r in runs}) == 3


def test_friendly_gpu_names_resolve_to_one_queue():
    for name in ("H100", "H100-80GB", "NVIDIA H100 80GB HBM3", "h100_80gb"):
        runs = expand(parse_sweep(VALID.replace('gpu = ["H100"]', f'gpu = ["{name}"]')))
        assert runs[0].hardware.queue == "gpu.h100-80gb.x1"


def test_engine_argument_lists_are_swept_and_scalars_accepted():
    text = VALID.replace('kind = "vllm"', 'kind = "vllm"\nmax_num_seqs = [64, 256]\n'
                         'enable_prefix_caching = false')
    runs = expand(parse_sweep(text))
    assert sorted(r.engine.args["max_num_seqs"] for r in runs) == [64, 256]
    assert all(r.engine.args["enable_prefix_caching"] is False for r in runs)


def test_exclude_rules_drop_combinations():
    text = VALID.replace('gpu = ["H100"]', 'gpu = ["H100", "L4"]').replace(
        "input_tokens = [128]", "input_tokens = [128, 2048]")
    text += '\n[[exclude]]\ngpu = "L4"\ninput_tokens = 2048\n'
    runs = expand(parse_sweep(text))
    combos = {(r.hardware.gpu_model, r.workload.input_tokens) for r in runs}
    assert combos == {("h100-80gb", 128), ("h100-80gb", 2048), ("l4", 128)}


def test_simulated_copy_keeps_gpu_exclude_rules():
    text = VALID.replace('gpu = ["H100"]', 'gpu = ["H100", "L4"]')
    text += '\n[[exclude]]\ngpu = "L4"\n'
    runs = expand(simulated_copy(parse_sweep(text)))
    assert {r.hardware.gpu_model for r in runs} == {"h100-80gb"}


def test_simulated_copy_relabels_everything():
    spec = simulated_copy(parse_sweep(VALID))
    assert spec.name == "t-sim"
    runs = expand(spec)
    assert all(r.hardware.backend == "sim" and r.engine.kind == "sim" for r in runs)


# Each case: a change to VALID, the field the error must name, a fragment of the
# message, and the line it must point at.
BAD = [
    ("unknown top-level key", 'colour = "red"\n' + VALID, "colour", "unknown key", 1),
    ("typo in a key", VALID.replace('source = "org/m-8B"', 'source = "x"\ndtyp = "bf16"'),
     "model[0].dtyp", "did you mean 'dtype'", 7),
    ("wrong type", VALID.replace("repetitions = 1", 'repetitions = "three"'),
     "repetitions", "integer", 2),
    ("empty list", VALID.replace("concurrency = [1, 8]", "concurrency = []"),
     "scenario[0].concurrency", "at least 1 item", 16),
    ("negative duration", VALID.replace("duration_s = 10", "duration_s = -5"),
     "scenario[0].duration_s", "greater than 0", 17),
    ("unknown GPU", VALID.replace('gpu = ["H100"]', 'gpu = ["Z9000"]'),
     "hardware.gpu", "unknown GPU model 'Z9000'", 9),
    ("unknown engine kind", VALID.replace('kind = "vllm"', 'kind = "tgi"'),
     "engine.kind", "'vllm', 'hf', 'sim', 'openai' or 'measure'", 12),
    ("both load kinds", VALID.replace("concurrency = [1, 8]",
                                      "concurrency = [1]\nrequest_rate = [2.0]"),
     "scenario[0]", "exactly one of", 14),
    ("missing section", VALID.replace('[hardware]\ngpu = ["H100"]\n', ""),
     "hardware", "required", None),
    ("missing output tokens", VALID.replace("output_tokens = [64]\n", ""),
     "workload.output_tokens", "required", 19),
    ("bad decoding word", VALID + 'decoding = ["beam"]\n', "workload.decoding[0]",
     "unknown decoding 'beam'", 22),
    ("bad decoding key", VALID + 'decoding = [{ temperature = 0.8, top_q = 0.9 }]\n',
     "workload.decoding[0].top_q", "did you mean 'top_p'", 22),
    ("zero GPUs per run", VALID.replace('gpu = ["H100"]', 'gpu = ["H100"]\ngpus_per_run = [0]'),
     "hardware.gpus_per_run[0]", "greater than 0", 10),
    ("scenario kind", VALID.replace('kind = "server"', 'kind = "offline"'),
     "scenario[0]", "server", 14),
    ("server on hf", VALID.replace('kind = "vllm"', 'kind = "hf"'), "(top level)",
     "batch scenarios only", None),
    ("sim engine on real GPUs", VALID.replace('kind = "vllm"', 'kind = "sim"'), "(top level)",
     "simulated GPUs only", None),
    ("real engine on sim GPUs", VALID.replace('gpu = ["H100"]', 'gpu = ["sim:H100"]'),
     "(top level)", "needs real GPUs", None),
    ("bad region", VALID + '[measurement]\nregion = "France"\n', "measurement.region",
     "pattern", 23),
    ("bad exclude key", VALID + '[[exclude]]\ncolour = "red"\n', "exclude",
     "unknown exclude key 'colour'", 22),
    ("duplicate model id", VALID.replace('[hardware]', '[[model]]\nid = "m-8b"\nsource = "y"\n\n'
                                         '[hardware]'), "model", "unique", 4),
]


@pytest.mark.parametrize("text,field,fragment,line", [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_invalid_sweeps_name_field_and_line(text, field, fragment, line):
    with pytest.raises(SpecError) as info:
        parse_sweep(text, "sweep.toml")
    problems = info.value.problems
    matching = [p for p in problems if p.field == field and fragment in p.message]
    assert matching, f"no problem for {field!r} containing {fragment!r}: {problems}"
    assert matching[0].line == line
    assert "sweep.toml" in str(info.value)


def test_toml_syntax_error_has_line():
    with pytest.raises(SpecError) as info:
        parse_sweep('name = "x"\n[model\n', "s.toml")
    assert info.value.problems[0].line == 2
    assert "invalid TOML" in info.value.problems[0].message


def test_unreadable_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_sweep(tmp_path / "missing.toml")


def test_the_host_cpu_is_a_device_of_its_own():
    runs = expand(parse_sweep(VALID.replace('gpu = ["H100"]', 'gpu = ["cpu", "H100"]')))
    assert {r.hardware.queue for r in runs} == {"cpu.cpu.x1", "gpu.h100-80gb.x1"}
    assert not any(r.simulated for r in runs)
    with pytest.raises(SpecError, match="CPU cannot be simulated"):
        parse_sweep(VALID.replace('gpu = ["H100"]', 'gpu = ["sim:cpu"]'))
    with pytest.raises(SpecError, match="one device per host"):
        parse_sweep(VALID.replace('gpu = ["H100"]', 'gpu = ["cpu"]\ngpus_per_run = [1, 2]'))


def test_the_sweep_builds_on_the_contracts_server_load():
    """The sweep's server scenario is the contract's ServerLoad; a field it declares
    again must differ (optional, a list from one value, a bound), never be a copy."""
    from farm.spec import ServerScenario
    from farm_contract.runspec import ServerLoad

    assert issubclass(ServerScenario, ServerLoad)
    assert list(ServerScenario.model_fields) == list(ServerLoad.model_fields)
    for name in ServerScenario.__annotations__:
        mine, theirs = ServerScenario.model_fields[name], ServerLoad.model_fields[name]
        assert (mine.annotation, mine.metadata, mine.default) != (
            theirs.annotation, theirs.metadata, theirs.default), f"{name} is a copy"
