"""`farmctl compare`: matching two sweeps' points, what differs, Welch deltas of
J/token and their verdicts, unmatched counts, and the sim-vs-measured refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from itertools import count

import pytest

from farm.cli import ExitCode
from farm.report.compare import (
    HIGHER,
    LOWER,
    NO_CI,
    NO_CLEAR,
    CompareError,
    compare,
    differences,
    format_comparison,
)
from farm.report.points import RunPoint, load_run_points
from farm.report.stats import estimate, welch_difference
from farm.store import Store

_ids = count()


def point(load: float = 8.0, rep: int = 0, *, jpt: float | None = 0.5, gpu: str = "h100",
          args=(("max_num_seqs", 256),), version: str = "1.0", simulated: bool = False,
          valid: bool = True, status: str = "succeeded", ttft: float = 100.0,
          tps: float = 1000.0) -> RunPoint:
    measured = status == "succeeded"
    return RunPoint(
        run_id=f"run-{next(_ids)}", sweep="s", repetition=rep, model="m",
        backend="sim" if simulated else "nvml", gpu_model=gpu, gpu_count=1, engine="vllm",
        engine_version=version if measured else None, engine_args=args,
        scenario="server-closed", scenario_kind="server",
        load_kind="concurrency" if measured else None, load_value=load if measured else None,
        input_tokens=64, output_tokens=16, decoding="greedy", status=status,
        simulated=simulated, valid=valid if measured else None,
        invalid_reasons=None if valid else "steady_window", error=None,
        figures={"energy_per_output_token_j": jpt, "ttft_p90_ms": ttft,
                 "output_throughput_tps": tps} if measured else {})


# ---------------------------------------------------------------- pure


def test_what_differs_arguments_and_engine_version():
    a = [point(args=(("max_num_seqs", 256), ("dtype", "bf16")))]
    b = [point(args=(("max_num_seqs", 64), ("dtype", "bf16")), version="2.0")]
    diffs = differences(a, b)
    assert [d.label for d in diffs] == ["engine_version 1.0 → 2.0", "max_num_seqs 256 → 64"]
    # An argument only one sweep sets differs too; several values print as a set.
    a = [point(args=(("max_num_seqs", 8),)), point(args=(("max_num_seqs", 256),))]
    b = [point(args=(("max_num_seqs", 8), ("enforce_eager", True)))]
    assert [d.label for d in differences(a, b)] == [
        "enforce_eager (unset) → True", "max_num_seqs {256, 8} → 8"]


def test_matching_ignores_what_differs_and_counts_the_rest():
    a = [point(c, r, jpt=0.5 + 0.01 * r) for c in (1, 8, 32) for r in (0, 1)]
    a += [point(8, r, gpu="l4") for r in (0, 1)]                      # only in A
    b = [point(c, r, jpt=0.4 + 0.01 * r, args=(("max_num_seqs", 64),))
         for c in (1, 8, 32, 64) for r in (0, 1)]                    # c=64 only in B
    cmp = compare(a, b, sweep_a="A", sweep_b="B")
    assert [d.label for d in cmp.differences] == ["max_num_seqs 256 → 64"]
    assert [m.head.load_value for m in cmp.matched] == [1, 8, 32]
    assert (cmp.only_a, cmp.only_b, cmp.ambiguous) == (1, 1, 0)
    e = cmp.matched[0].energy
    assert e.pct == pytest.approx(100 * (0.405 - 0.505) / 0.505)
    assert e.verdict == LOWER


def test_delta_and_its_interval_are_welch_relative_to_a():
    a = [point(8, r, jpt=v, ttft=t, tps=s) for r, (v, t, s) in
         enumerate(((1.0, 100, 900), (1.1, 110, 950), (0.9, 90, 1000)))]
    b = [point(8, r, jpt=v, ttft=t, tps=s, args=(("max_num_seqs", 64),)) for r, (v, t, s)
         in enumerate(((1.05, 150, 800), (0.95, 140, 820), (1.1, 160, 790)))]
    (m,) = compare(a, b, sweep_a="A", sweep_b="B").matched
    d = welch_difference([1.0, 1.1, 0.9], [1.05, 0.95, 1.1])
    e = m.energy
    assert e.diff == d
    assert e.pct == pytest.approx(100 * d.mean / 1.0)
    assert e.pct_ci == pytest.approx((100 * d.low, 100 * d.high))
    assert e.verdict == NO_CLEAR and e.pct_ci[0] < 0 < e.pct_ci[1]
    assert e.a == estimate([1.0, 1.1, 0.9])
    ttft = m.deltas["ttft_p90_ms"]
    assert ttft.verdict == HIGHER and ttft.pct == pytest.approx(50.0)
    assert m.deltas["output_throughput_tps"].verdict == LOWER


def test_one_repetition_gives_a_delta_without_an_interval():
    cmp = compare([point(8, 0, jpt=1.0)], [point(8, 0, jpt=0.8, version="2")],
                  sweep_a="A", sweep_b="B")
    (m,) = cmp.matched
    assert m.energy.pct == pytest.approx(-20.0)
    assert m.energy.pct_ci is None and m.energy.verdict == NO_CI
    doc = cmp.to_json()
    assert doc["points"][0]["energy_per_output_token_j"]["delta_pct_ci95"] is None
    assert doc["energy_verdicts"] == {NO_CI: 1}
    assert "no CI (n=1)" in format_comparison(cmp)


def test_unusable_points_are_left_out_and_counted():
    a = [point(8, 0), point(8, 1), point(32, 0, valid=False), point(32, 1, valid=False),
         point(64, 0, status="failed")]
    b = [point(8, 0), point(32, 0), point(32, 1, valid=False)]
    cmp = compare(a, b, sweep_a="A", sweep_b="B")
    assert [m.head.load_value for m in cmp.matched] == [8]
    assert (cmp.unusable_a, cmp.failed_runs_a, cmp.unusable_b) == (1, 1, 0)
    assert (cmp.only_a, cmp.only_b) == (0, 1)          # B's c=32 has a valid repetition
    assert [len(m.b) for m in cmp.matched] == [1]


def test_ignore_arg_forces_and_ambiguity_is_counted():
    a = [point(8, 0, args=(("max_num_seqs", 64),)), point(8, 0, args=(("max_num_seqs", 256),))]
    b = [point(8, 0, args=(("max_num_seqs", 64),)), point(8, 0, args=(("max_num_seqs", 256),))]
    cmp = compare(a, b, sweep_a="A", sweep_b="B")
    assert cmp.differences == [] and len(cmp.matched) == 2
    forced = compare(a, b, sweep_a="A", sweep_b="B", ignore_args=["max_num_seqs"])
    assert [d.label for d in forced.differences] == [
        "max_num_seqs {256, 64} → {256, 64} (ignored)"]
    # Two configurations on each side now share one key: neither matched nor guessed.
    assert forced.matched == [] and forced.ambiguous == 1
    with pytest.raises(CompareError, match="no such engine argument"):
        compare(a, b, sweep_a="A", sweep_b="B", ignore_args=["max_num_sqs"])


def test_simulated_is_never_compared_with_measured():
    with pytest.raises(CompareError, match="refusing to compare B .SIMULATED. with A"):
        compare([point()], [point(simulated=True)], sweep_a="A", sweep_b="B")
    # The sweeps' own labels decide, even where the points would not say.
    with pytest.raises(CompareError):
        compare([point()], [point()], sweep_a="A", sweep_b="B", simulated_a=True,
                simulated_b=False)
    ok = compare([point(simulated=True)], [point(simulated=True)], sweep_a="A", sweep_b="B")
    assert ok.simulated and format_comparison(ok).startswith("SIMULATED")


def test_a_missing_figure_gives_no_delta():
    (m,) = compare([point(8, 0, jpt=None)], [point(8, 0)], sweep_a="A", sweep_b="B").matched
    assert m.energy.diff is None and m.energy.verdict == "no figure"


def capped(watts: float | None, load: float = 8.0, rep: int = 0, **kw) -> RunPoint:
    """A point of a run that asked for a `watts` power limit (None: the default)."""
    return replace(point(load, rep, **kw), power_limit_w=watts)


def test_power_limits_match_cap_for_cap_and_are_named_in_the_output():
    # Both sweeps ran at 300 and 700 W; B's engine differs. Each cap is its own point.
    a = [capped(w, c, r, jpt=w / 1000 + 0.01 * r) for w in (300.0, 700.0) for c in (1, 8)
         for r in (0, 1)]
    b = [capped(w, c, r, jpt=w / 1200 + 0.01 * r, version="2.0") for w in (300.0, 700.0)
         for c in (1, 8) for r in (0, 1)]
    cmp = compare(a, b, sweep_a="A", sweep_b="B")
    assert [d.label for d in cmp.differences] == ["engine_version 1.0 → 2.0"]
    assert [(m.head.power_limit_w, m.head.load_value) for m in cmp.matched] == [
        (300.0, 1.0), (300.0, 8.0), (700.0, 1.0), (700.0, 8.0)]
    assert cmp.ambiguous == 0 and all(len(m.a) == len(m.b) == 2 for m in cmp.matched)
    assert cmp.matched[0].energy.pct == pytest.approx(100 * (0.255 / 0.305 - 1))
    doc = cmp.to_json()["points"][0]
    assert doc["a"]["power_limit_w"] == doc["b"]["power_limit_w"] == 300.0
    assert doc["a"]["sm_clock_mhz"] is None
    text = format_comparison(cmp, width=None)
    header = next(line for line in text.splitlines() if "J/out-tok A" in line)
    assert header.index("power limit") < header.index("load")
    rows = [line for line in text.splitlines() if line.startswith(("300 W", "700 W"))]
    assert [line.split()[:3] for line in rows] == [
        ["300", "W", "c=1"], ["300", "W", "c=8"], ["700", "W", "c=1"], ["700", "W", "c=8"]]
    assert "SM clock" not in text                     # no run locked one


def test_a_cap_against_the_default_is_what_differs():
    a = [capped(None, c, r) for c in (1, 8) for r in (0, 1)]
    b = [capped(300.0, c, r, jpt=0.4) for c in (1, 8) for r in (0, 1)]
    cmp = compare(a, b, sweep_a="A", sweep_b="B")
    assert [d.label for d in cmp.differences] == ["power_limit_w (unset) → 300 W"]
    assert len(cmp.matched) == 2 and cmp.matched[0].energy.verdict == LOWER
    text = format_comparison(cmp, width=None)
    assert "what differs: power_limit_w (unset) → 300 W" in text
    assert "power limit: default → 300 W" in text     # the same in every row: above the table
    # B over two caps against A's default: A's points match neither alone.
    b2 = b + [capped(700.0, c, r) for c in (1, 8) for r in (0, 1)]
    two = compare(a, b2, sweep_a="A", sweep_b="B")
    assert [d.label for d in two.differences] == ["power_limit_w (unset) → {300 W, 700 W}"]
    assert two.matched == [] and two.ambiguous == 2


# --------------------------------------------- two simulated sweeps, measured

SWEEP_A = textwrap.dedent("""\
    name = "cmp-a"
    repetitions = 2

    [[model]]
    id = "llama-3.1-8b"
    source = "meta-llama/Llama-3.1-8B-Instruct"
    dtype = "bfloat16"

    [hardware]
    gpu = ["sim:H100-80GB", "sim:L4"]
    gpus_per_run = [1]

    [engine]
    kind = "sim"
    max_num_seqs = 256

    [[scenario]]
    kind = "server"
    concurrency = [1, 8, 32]
    duration_s = 0.25
    warmup_s = 0.02

    [workload]
    input_tokens = [64]
    output_tokens = [16]

    [measurement]
    sample_period_s = 0.05
    idle_baseline_s = 0.05
    min_steady_s = 0.05
    cooldown_timeout_s = 0
    codecarbon = false
    """)
# Same grid on the H100 only, max_num_seqs 8, and one more concurrency.
SWEEP_B = (SWEEP_A.replace('"cmp-a"', '"cmp-b"').replace("max_num_seqs = 256", "max_num_seqs = 8")
           .replace('["sim:H100-80GB", "sim:L4"]', '["sim:H100-80GB"]')
           .replace("[1, 8, 32]", "[1, 8, 32, 64]"))
# One repetition of a load point neither has: nothing to match.
SWEEP_C = (SWEEP_B.replace('"cmp-b"', '"cmp-c"').replace("repetitions = 2", "repetitions = 1")
           .replace("[1, 8, 32, 64]", "[2]"))


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """(URL, A's points, B's points) of a store with A, B and C (7 runs, ~10 s)."""
    from tests.reportdata import fill_store

    url = f"sqlite:///{tmp_path_factory.mktemp('compare-store') / 'farm.db'}"
    with Store.open(url, upgrade=True) as store:
        fill_store(store, SWEEP_A)
        fill_store(store, SWEEP_B)
        fill_store(store, SWEEP_C)
        _, a = load_run_points(store, "cmp-a")
        _, b = load_run_points(store, "cmp-b")
    return url, a, b


def test_sim_sweeps_match_counts_and_what_differs(two_sweeps):
    _, a, b = two_sweeps
    cmp = compare(a, b, sweep_a="cmp-a", sweep_b="cmp-b")
    assert cmp.simulated
    assert [d.label for d in cmp.differences] == ["max_num_seqs 256 → 8"]
    assert [(m.head.gpu_model, m.head.load_value) for m in cmp.matched] == [
        ("h100-80gb", 1), ("h100-80gb", 8), ("h100-80gb", 32)]
    # L4 at c = 1, 8, 32 only in A; c = 64 only in B.
    assert (cmp.only_a, cmp.only_b, cmp.ambiguous) == (3, 1, 0)
    assert all(len(m.a) == 2 and len(m.b) == 2 for m in cmp.matched)


def test_sim_sweeps_deltas_are_the_stored_figures_arithmetic(two_sweeps):
    _, a, b = two_sweeps
    cmp = compare(a, b, sweep_a="cmp-a", sweep_b="cmp-b")

    def values(points, load, figure):
        return [p.get(figure) for p in points
                if p.gpu_model == "h100-80gb" and p.load_value == load and p.usable]

    for m in cmp.matched:
        load = m.head.load_value
        for figure in ("energy_per_output_token_j", "ttft_p90_ms", "output_throughput_tps"):
            va, vb = values(a, load, figure), values(b, load, figure)
            mean_a = sum(va) / len(va)
            expected = 100 * (sum(vb) / len(vb) - mean_a) / mean_a
            delta = m.deltas[figure]
            assert delta.pct == pytest.approx(expected)
            w = welch_difference(va, vb)
            assert delta.pct_ci == pytest.approx((100 * w.low / mean_a, 100 * w.high / mean_a))
            # The verdict follows the interval's sign, whatever the sim engine did.
            lo, hi = delta.pct_ci
            assert delta.verdict == (LOWER if hi < 0 else HIGHER if lo > 0 else NO_CLEAR)
    # Reversing the sweeps reverses the sign of every delta.
    back = compare(b, a, sweep_a="cmp-b", sweep_b="cmp-a")
    for fwd, rev in zip(cmp.matched, back.matched, strict=True):
        assert (fwd.energy.diff.mean == pytest.approx(-rev.energy.diff.mean))


def test_cli_compare(two_sweeps):
    url, _, _ = two_sweeps
    env = {**os.environ, "FARM_DB_URL": url}

    def farmctl(*args):
        return subprocess.run([sys.executable, "-m", "farm.cli", *args], capture_output=True,
                              text=True, timeout=120, env=env)

    proc = farmctl("compare", "cmp-a", "cmp-b")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SIMULATED")
    assert "what differs: max_num_seqs 256 → 8" in proc.stdout
    assert "3 matched point(s); unmatched: 3 only in A, 1 only in B" in proc.stdout
    proc = farmctl("compare", "cmp-a", "cmp-b", "--format", "json")
    doc = json.loads(proc.stdout)
    assert doc["matched"] == 3 and doc["unmatched"] == {"only_in_a": 3, "only_in_b": 1,
                                                        "ambiguous": 0}
    assert doc["what_differs"][0]["name"] == "max_num_seqs"
    proc = farmctl("compare", "cmp-a", "cmp-b", "--ignore-arg", "nope")
    assert proc.returncode == ExitCode.INVALID_INPUT, proc.stderr
    assert "no such engine argument" in proc.stderr
    proc = farmctl("compare", "cmp-a", "cmp-c")
    assert proc.returncode == ExitCode.NO_MATCH
    assert "no configuration point of cmp-a matches one of cmp-c" in proc.stderr
    assert "0 matched point(s); unmatched: 6 only in A, 1 only in B" in proc.stdout
    proc = farmctl("compare", "cmp-a", "missing")
    assert proc.returncode == ExitCode.NOT_FOUND
