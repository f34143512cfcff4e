"""farm.sweep_file: a sweep file's problems named by field and line, and the read
that refuses what is not a sweep file before parsing it."""

from __future__ import annotations

import os
import textwrap

import pytest

from farm.sweep_file import (
    Problem,
    SpecError,
    key_lines,
    load_sweep,
    parse_sweep,
    path_is_tag,
    read_sweep_text,
    validate_sweep,
)
from farm_contract import limits as lim

TEXT = textwrap.dedent("""\
    name = "t"

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

    [[scenario]]
    kind = "batch"
    num_prompts = [8]

    [workload]
    input_tokens = [128]
    output_tokens = [64]
    """)


def test_key_lines_maps_keys_tables_and_array_entries_to_lines():
    lines = key_lines(TEXT)
    assert lines[("name",)] == 1
    assert lines[("model", 0)] == 3 and lines[("model", 0, "source")] == 5
    assert lines[("hardware", "gpu")] == 8
    assert lines[("scenario", 0)] == 13 and lines[("scenario", 1)] == 18
    assert lines[("scenario", 1, "num_prompts")] == 20


def test_a_problem_in_the_second_scenario_names_its_field_and_line():
    with pytest.raises(SpecError) as caught:
        parse_sweep(TEXT.replace("num_prompts = [8]", "num_prompts = [8]\nwarmup = 3"), "s.toml")
    (problem,) = caught.value.problems
    assert problem == Problem("scenario[1].warmup", "unknown key (did you mean "
                              "'warmup_prompts'?)", 21)
    assert str(caught.value) == ("s.toml: 1 problem(s)\n  line 21: scenario[1].warmup: "
                                 "unknown key (did you mean 'warmup_prompts'?)")


def test_data_without_its_text_is_located_by_field_only():
    data = parse_sweep(TEXT).model_dump(mode="python")
    del data["workload"]["output_tokens"]
    with pytest.raises(SpecError) as caught:
        validate_sweep(data, None, "<copy>")
    assert caught.value.problems == [Problem("workload.output_tokens",
                                             "required key is missing", None)]


def test_union_tags_are_not_taken_for_keys():
    assert path_is_tag("server") and path_is_tag("function-after[_check()]")
    assert not path_is_tag("duration_s")


def test_the_read_refuses_a_file_above_the_maximum_and_what_is_not_a_file(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (lim.MAX_SWEEP_BYTES + 1))
    with pytest.raises(SpecError, match="above the farm's maximum"):
        read_sweep_text(big)
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="not a regular file"):
        load_sweep(fifo)
    good = tmp_path / "good.toml"
    good.write_text(TEXT)
    spec, text = load_sweep(good)
    assert spec.name == "t" and text == TEXT
