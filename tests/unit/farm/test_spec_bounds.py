"""Issue 22 item 1: every number a sweep gives is bounded by what the farm can do,
refused with its field and line before anything is expanded; the file itself is
bounded before it is parsed."""

from __future__ import annotations

import os
import time

import pytest

from farm.sweep_file import SpecError, load_sweep, parse_sweep
from farm_contract import limits as lim
from tests.paths import ROOT

QUICKSTART = (ROOT / "examples" / "quickstart.toml").read_text()


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_sweep(text, "s.toml")
    return info.value.render().splitlines()[1:]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old,new,field", [
    ("concurrency = [1, 16, 64]", "concurrency = [1000000]", "scenario[0].concurrency[0]"),
    ("num_prompts = 64", "num_prompts = 100000000", "scenario[1].num_prompts"),
    ("duration_s = 1.0", "duration_s = 1e12", "scenario[0].duration_s"),
    ("warmup_s = 0.2", "warmup_s = 1e12", "scenario[0].warmup_s"),
    ("repetitions = 2", "repetitions = 1000000", "repetitions"),
    ("output_tokens = [64]", "output_tokens = [100000000]", "workload.output_tokens[0]"),
    ("idle_baseline_s = 0.5", "idle_baseline_s = 1e12", "measurement.idle_baseline_s"),
    ("gpus_per_run = [1]", "gpus_per_run = [1024]", "hardware.gpus_per_run[0]"),
    ('decoding = ["greedy"]', "seed = 18446744073709551615", "workload.seed"),
])
def test_each_number_has_a_maximum_named_with_its_field_line_and_reason(old, new, field):
    text = QUICKSTART.replace(old, new)
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(f"  line {line_of(text, new)}: {field}: "), found
    assert "above the farm's maximum of" in found[0]
    assert "(" in found[0].split("maximum of", 1)[1]          # with the reason


def test_a_million_repetitions_is_refused_at_once():
    # Was: 5.5 GB and a minute of `validate`. The adaptive table's max too.
    text = QUICKSTART.replace("repetitions = 2",
                              "repetitions = { min = 2, max = 5000, ci_half_width_pct = 2 }")
    start = time.perf_counter()
    found = problems(text)
    assert time.perf_counter() - start < 2
    assert "repetitions.max: 5,000 is above the farm's maximum of 1,000" in found[0]


def test_the_run_count_is_bounded_before_expansion():
    # 1,000 reps × 2 GPUs × 2 scenario runs × 5 bins = 20,000: the most; 6 bins is not.
    many = QUICKSTART.replace("repetitions = 2", "repetitions = 1000").replace(
        "input_tokens = [128, 512]", "input_tokens = [128, 256, 512, 1024, 2048]")
    assert parse_sweep(many).name == "quickstart-sim"
    text = many.replace("[128, 256, 512, 1024, 2048]", "[128, 256, 512, 1024, 2048, 4096]")
    start = time.perf_counter()
    found = problems(text)
    assert time.perf_counter() - start < 2
    assert found == [f"  line {line_of(text, 'repetitions =')}: repetitions: the sweep expands "
                     "to 24,000 runs (2 GPU models × 2 scenario runs × 6 input bins × 1,000 "
                     f"repetitions), above the farm's maximum of {lim.MAX_RUNS:,} per sweep "
                     f"({lim.WHY_RUNS})"]


def test_a_run_sends_for_at_most_a_day_and_a_batch_logs_a_bounded_request_log():
    text = QUICKSTART.replace("duration_s = 1.0", "duration_s = 40000")
    found = problems(text)
    assert found[0].startswith(f"  line {line_of(text, 'duration_s')}: scenario[0].duration_s: "
                               "warmup_s + 3 load point(s) × duration_s is 120,000 s")
    text = QUICKSTART.replace("num_prompts = 64", "num_prompts = 100000").replace(
        "output_tokens = [64]", "output_tokens = [1024]")
    found = problems(text)
    assert "scenario[1].num_prompts: 100,000 prompts × 1,024 output tokens" in found[0]


def test_a_load_list_is_bounded():
    text = QUICKSTART.replace("concurrency = [1, 16, 64]",
                              f"concurrency = {list(range(1, 100))}")
    assert "scenario[0].concurrency: 99 values: the farm takes at most 64" in problems(text)[0]


def test_a_device_or_a_huge_file_is_refused_before_it_is_read(tmp_path):
    for device in ("/dev/zero", "/dev/urandom"):
        with pytest.raises(SpecError, match="not a regular file"):
            load_sweep(device)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="not a regular file"):
        load_sweep(fifo)                   # without waiting for a writer
    big = tmp_path / "big.toml"
    with big.open("wb") as handle:        # sparse: 4 GB claimed, nothing read
        handle.truncate(4 * 2**30)
    with pytest.raises(SpecError, match=r"4,294,967,296 bytes, above the farm's maximum"):
        load_sweep(big)
    ok = tmp_path / "ok.toml"
    ok.write_text(QUICKSTART)
    assert load_sweep(ok)[0].name == "quickstart-sim"
