"""farm.simulate: the `--simulate` copy of a sweep file, read from disk, and what it
says it left out."""

from __future__ import annotations

import textwrap

import pytest

from farm.simulate import load_simulated
from farm.sweep_file import SpecError

TEXT = textwrap.dedent("""\
    name = "study"

    [[model]]
    id = "llama-3.1-8b"
    source = "meta-llama/Llama-3.1-8B"

    [hardware]
    gpu = ["H100", "L4"]

    [engine]
    kind = "vllm"
    max_num_seqs = [64, 128]
    enable_prefix_caching = true

    [[scenario]]
    kind = "server"
    concurrency = [1, 8]
    duration_s = 10

    [workload]
    input_tokens = [128]
    output_tokens = [64]
    """)


def test_the_copy_is_simulated_renamed_and_says_what_it_dropped(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(TEXT)
    copy, text, notes = load_simulated(path)
    assert text == TEXT
    assert copy.name == "study-sim"
    assert copy.hardware.gpu == ["sim:H100", "sim:L4"]
    assert copy.engine.kind == "sim" and copy.engine.arg_grid() == {"max_num_seqs": [64, 128]}
    assert notes == ["--simulate: engine argument enable_prefix_caching = True dropped: "
                     "the sim engine does not model it"]


def test_the_host_cpu_has_no_simulated_copy_and_the_refusal_names_its_line(tmp_path):
    path = tmp_path / "cpu.toml"
    path.write_text(TEXT.replace('gpu = ["H100", "L4"]', 'gpu = ["cpu"]')
                    .replace("max_num_seqs = [64, 128]\nenable_prefix_caching = true\n", ""))
    with pytest.raises(SpecError) as caught:
        load_simulated(path)
    (problem,) = caught.value.problems
    assert (problem.field, problem.line) == ("hardware.gpu", 8)
    assert caught.value.source == f"{path} (--simulate)"
