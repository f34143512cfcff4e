"""farm.sweep_checks: the engine kind's checks of a sweep's expanded runs, each
located at the sweep's field, and at most MAX_PROBLEMS_PER_CHECK of one kind."""

from __future__ import annotations

from farm.spec import EngineSpec
from farm.sweep_checks import MAX_PROBLEMS_PER_CHECK, run_errors
from farm.sweep_file import parse_sweep
from farm_contract.runspec import ModelSpec
from tests.unit.farm.test_spec import VALID

VLLM = VALID                    # a vLLM server sweep on an H100 (test_spec.py)


def _message(error) -> str:
    return str(error["ctx"]["error"])


def test_a_sweep_that_validates_has_no_run_errors():
    assert run_errors(parse_sweep(VLLM)) == []


def test_a_parallel_degree_that_does_not_divide_the_gpus_is_located_at_its_argument():
    # Built past the validator (model_copy does not validate) to call the check itself.
    spec = parse_sweep(VLLM).model_copy(
        update={"engine": EngineSpec(kind="vllm", pipeline_parallel_size=2)})
    (error,) = run_errors(spec)
    assert error["loc"] == ("engine", "pipeline_parallel_size")
    assert "does not divide the run's 1 GPU(s)" in _message(error)


def test_a_run_problem_of_the_model_is_located_at_its_entry_and_capped_per_field():
    sim = parse_sweep(VLLM.replace('gpu = ["H100"]', 'gpu = ["sim:H100"]')
                      .replace('kind = "vllm"', 'kind = "sim"'))
    unknown = [ModelSpec(id=f"x{i}", source=f"org/unknown-{i}")
               for i in range(MAX_PROBLEMS_PER_CHECK + 3)]
    errors = run_errors(sim.model_copy(update={"model": unknown}))
    assert [e["loc"] for e in errors] == [("model", i) for i in range(MAX_PROBLEMS_PER_CHECK)]
    assert "cannot tell the size of model 'x0'" in _message(errors[0])
