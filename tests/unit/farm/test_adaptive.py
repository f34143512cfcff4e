"""Adaptive repetitions: the sweep file's table, the decision, and the store adding the
next repetition exactly once (SQLite and PostgreSQL, the `store` fixture)."""

from __future__ import annotations

import threading

import pytest

from farm import adaptive
from farm.report.stats import estimate, half_width_pct
from farm.spec import Repetitions
from farm.store import Store
from farm.store.repetitions import PointFigures, RepetitionFigures
from farm.sweep import expand
from farm.sweep_file import SpecError, parse_sweep
from tests import factories

POLICY = Repetitions(min=3, max=5, ci_half_width_pct=2.0)

ADAPTIVE = factories.SMALL_SWEEP.replace(
    "repetitions = 2", "repetitions = { min = 3, max = 5, ci_half_width_pct = 2 }")


def rep(i: int, value: float | None, status: str = "succeeded",
        valid: bool | None = True, net: float | None = None) -> RepetitionFigures:
    points = {} if status != "succeeded" else {0: PointFigures("concurrency", 1.0, value, net)}
    return RepetitionFigures(f"r{i}", i, status, valid, points)


# ------------------------------------------------------------------ the sweep file

def test_a_fixed_count_expands_exactly_as_before():
    # The ids of a sweep without the table, as the code before the table made them.
    spec = parse_sweep(factories.SMALL_SWEEP)
    assert spec.adaptive is None and spec.initial_repetitions == 2
    assert [r.run_id for r in expand(spec)] == [
        "eeba4a95d3d21f7d7119e6ae", "2a0352e57be65605bec6c43f", "892881966e96416536bf049d",
        "6d52b89382d5d390609090e3", "390ad35a56764e4dadd61bfb", "0ebec559eb25a81376fd1b27",
        "801069224fd7b0b895a4bacf", "c499de888d0f0eba0f020b05"]


def test_the_table_enqueues_min_with_the_same_ids_as_a_count():
    spec = parse_sweep(ADAPTIVE)
    assert spec.adaptive == Repetitions(min=3, max=5, ci_half_width_pct=2.0)
    runs = expand(spec)
    fixed = expand(parse_sweep(factories.SMALL_SWEEP.replace("repetitions = 2",
                                                             "repetitions = 3")))
    assert [r.run_id for r in runs] == [r.run_id for r in fixed]
    assert sorted({r.repetition for r in runs}) == [0, 1, 2]


@pytest.mark.parametrize("table,field,fragment", [
    ("{ min = 5, max = 3, ci_half_width_pct = 2 }", "repetitions", "min (5) is above max (3)"),
    ("{ min = 1, max = 3, ci_half_width_pct = 2 }", "repetitions.min", "greater than or equal"),
    ("{ min = 3, max = 5 }", "repetitions.ci_half_width_pct", "required"),
    ("{ min = 3, max = 5, ci_half_width_pct = 0 }", "repetitions.ci_half_width_pct",
     "greater than 0"),
    ("{ min = 3, mx = 5, ci_half_width_pct = 2 }", "repetitions.mx", "did you mean 'max'"),
    ('{ min = 3, ci_half_width_pct = 2, figure = "idle" }', "repetitions.figure",
     "'gross' or 'net'"),
    ("0", "repetitions", "greater than 0"),
])
def test_bad_tables_name_field_and_line(table, field, fragment):
    text = factories.SMALL_SWEEP.replace("repetitions = 2", f"repetitions = {table}")
    with pytest.raises(SpecError) as caught:
        parse_sweep(text)
    (problem,) = caught.value.problems
    assert problem.field == field and fragment in problem.message
    assert problem.line == 3


def test_a_net_target_needs_the_idle_baselines():
    text = ADAPTIVE.replace("ci_half_width_pct = 2 }", 'ci_half_width_pct = 2, figure = "net" }')
    assert parse_sweep(text).adaptive.figure == "net"
    no_idle = text + "\n[measurement]\nidle_baseline_s = 0\n"
    if "[measurement]" in text:
        no_idle = text.replace("[measurement]\n", "[measurement]\nidle_baseline_s = 0\n", 1)
    with pytest.raises(SpecError) as caught:
        parse_sweep(no_idle)
    (problem,) = caught.value.problems
    assert problem.field == "repetitions.figure" and problem.line == 3
    assert "idle_baseline_s is 0" in problem.message


def test_a_table_header_form_points_at_the_key_line():
    text = factories.SMALL_SWEEP.replace("repetitions = 2\n", "") + (
        "\n[repetitions]\nmin = 4\nmax = 3\nci_half_width_pct = 2\n")
    with pytest.raises(SpecError, match=r"line \d+: repetitions: min \(4\) is above max"):
        parse_sweep(text)


# ------------------------------------------------------------------ the decision

def test_a_ci_within_the_target_stops():
    d = adaptive.decide(POLICY, [rep(0, 1.000), rep(1, 1.005), rep(2, 0.995)])
    assert d.verdict == "met" and d.n == 3
    assert d.worst_half_width_pct == pytest.approx(
        half_width_pct(estimate([1.000, 1.005, 0.995])))
    assert d.worst_half_width_pct < 2.0


def test_a_wide_ci_asks_for_the_next_index():
    d = adaptive.decide(POLICY, [rep(0, 1.0), rep(1, 1.2), rep(2, 0.9)])
    assert d.verdict == "more" and d.next_repetition == 3
    assert d.worst_half_width_pct > 2.0


def test_max_stops_a_wide_ci():
    reps = [rep(i, v) for i, v in enumerate([1.0, 1.2, 0.9, 1.3, 0.8])]
    assert adaptive.decide(POLICY, reps).verdict == "max"


def test_nothing_is_decided_while_a_repetition_is_pending():
    for status in ("queued", "running"):
        d = adaptive.decide(POLICY, [rep(0, 1.0), rep(1, 1.2), rep(2, None, status)])
        assert d.verdict == "waiting" and d.pending == 1


def test_failed_and_invalid_runs_give_no_value_but_count_toward_max():
    reps = [rep(0, 1.0), rep(1, 1.01), rep(2, None, "failed", None), rep(3, 9.0, valid=False)]
    d = adaptive.decide(POLICY, reps)
    # Two usable values, 1.0 and 1.01: t(0.975, 1) = 12.7 makes the CI ~ 64% wide.
    assert d.usable == 2 and d.runs == 4 and d.verdict == "more" and d.next_repetition == 4
    d = adaptive.decide(POLICY, [*reps, rep(4, None, "failed", None)])
    assert d.verdict == "max" and d.runs == 5 and d.n == 2


def test_no_usable_run_adds_nothing():
    reps = [rep(i, None, "failed", None) for i in range(3)]
    assert adaptive.decide(POLICY, reps).verdict == "no usable run"


def test_a_cancelled_repetition_stops_the_configuration():
    d = adaptive.decide(POLICY, [rep(0, 1.0), rep(1, 1.3), rep(2, None, "cancelled", None)])
    assert d.verdict == "cancelled"


def test_the_net_figure_is_the_one_bounded_when_asked():
    # A host-bound engine (docs/measurement.md, H200): gross J/token moves with the
    # host's speed (±17–21% at n = 3), the net of idle does not (±1.4–1.9%).
    reps = [rep(0, 0.0330, net=0.01550), rep(1, 0.0389, net=0.01565), rep(2, 0.0352,
                                                                        net=0.01560)]
    assert adaptive.decide(POLICY, reps).verdict == "more"
    net = Repetitions(min=3, max=5, ci_half_width_pct=2.0, figure="net")
    d = adaptive.decide(net, reps)
    assert d.verdict == "met" and d.figure == "energy_per_output_token_net_j"
    assert d.points[0].estimate == estimate([0.01550, 0.01565, 0.01560])
    # A run without a net figure (no idle baseline) gives no value to a net target.
    d = adaptive.decide(net, [*reps[:2], rep(2, 0.0352, net=None)])
    assert d.verdict == "more" and d.n == 2 and d.usable == 3
    # None with one: more runs would not give one either.
    d = adaptive.decide(net, [rep(i, 0.0352, net=None) for i in range(3)])
    assert d.verdict == "no value" and d.usable == 3 and d.n == 0


def test_the_summary_says_which_figure_the_ci_is_on():
    net = Repetitions(min=3, max=5, ci_half_width_pct=2.0, figure="net")
    run = expand(parse_sweep(ADAPTIVE))[0]
    reps = [rep(0, 0.0330, net=0.01550), rep(1, 0.0389, net=0.01565), rep(2, 0.0352,
                                                                        net=0.01560)]
    configs = [adaptive.ConfigurationSummary(run, adaptive.decide(net, reps))]
    text = adaptive.format_summary(configs)
    assert "half-width of net J/output token (net of idle) is ≤ 2% of the mean" in text
    assert "target met" in text
    (doc,) = adaptive.summary_json(configs)
    assert doc["ci_figure"] == "energy_per_output_token_net_j" and doc["verdict"] == "met"
    assert doc["points"][0]["energy_per_output_token_net_j"] == pytest.approx(0.015583, 1e-3)
    gross = [adaptive.ConfigurationSummary(run, adaptive.decide(POLICY, reps))]
    assert "half-width of J/output token is ≤ 2%" in adaptive.format_summary(gross)
    assert adaptive.summary_json(gross)[0]["ci_figure"] == "energy_per_output_token_j"


def test_decisions_in_turn_are_what_each_result_saw():
    reps = [rep(2, 80.0), rep(0, 100.0), rep(3, 101.0), rep(1, 100.0)]
    path = adaptive.decisions_in_turn(POLICY, reps)
    assert [d.runs for d in path] == [1, 2, 3, 4]
    assert [d.worst_half_width_pct is None for d in path] == [True, False, False, False]
    assert path[1].worst_half_width_pct == 0.0                 # 100, 100
    assert path[2].verdict == "more" and path[2].worst_half_width_pct > 2    # + 80
    assert path[-1] == adaptive.decide(POLICY, reps)


def test_every_load_point_must_meet_the_target():
    def two(i, a, b):
        return RepetitionFigures(f"r{i}", i, "succeeded", True,
                                 {0: PointFigures("concurrency", 1.0, a),
                                  1: PointFigures("concurrency", 8.0, b)})
    d = adaptive.decide(POLICY, [two(0, 1.0, 0.5), two(1, 1.0, 0.7), two(2, 1.0, 0.6)])
    assert d.verdict == "more" and d.points[0].half_width_pct == 0.0
    assert d.worst_half_width_pct == d.points[1].half_width_pct > 2.0


# ------------------------------------------------------------------ the store

@pytest.fixture
def adaptive_sweep(store: Store):
    spec, text, runs = factories.sweep(ADAPTIVE)
    sid = store.record_sweep(spec, text)
    store.add_runs(sid, runs)
    return sid, runs


def finish(store: Store, run, energy: float, status: str = "succeeded") -> None:
    n = len(run.scenario.load_points)
    outcome = store.record_result(factories.result(run, status, steady_energy_j=[energy] * n))
    assert outcome == "stored"


def configuration(runs, index: int = 0):
    first = [r for r in runs if r.repetition == 0][index]
    return [r for r in runs if adaptive.repetition(r, 0).run_id == first.run_id]


def test_the_next_repetition_is_added_once(store: Store, adaptive_sweep) -> None:
    sid, runs = adaptive_sweep
    reps = configuration(runs)
    finish(store, reps[0], 100.0)
    finish(store, reps[1], 130.0)
    # Repetition 2 still queued: nothing yet.
    assert adaptive.after_result(store, reps[1].run_id) == []
    finish(store, reps[2], 80.0)
    added = adaptive.after_result(store, reps[2].run_id)
    assert [r.repetition for r in added] == [3]
    assert added[0].run_id == adaptive.repetition(reps[0], 3).run_id
    assert store.run_statuses([added[0].run_id]) == {added[0].run_id: "queued"}
    # A re-delivered result, or a second recorder, decides again and adds nothing.
    assert adaptive.after_result(store, reps[2].run_id) == []
    assert adaptive.after_result(store, reps[0].run_id) == []
    assert len(store.runs_of(sid)) == len(runs) + 1
    # Not yet dispatched: the dispatcher sends it.
    assert added[0].run_id in store.undispatched_ids(sid)


def test_two_recorders_at_once_add_it_once(store: Store, adaptive_sweep) -> None:
    sid, runs = adaptive_sweep
    reps = configuration(runs)
    for r, e in zip(reps, (100.0, 130.0, 80.0)):
        finish(store, r, e)
    added: list = []
    barrier = threading.Barrier(4)

    def decide() -> None:
        barrier.wait()
        added.extend(adaptive.after_result(store, reps[2].run_id))

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.repetition for r in added] == [3]
    assert len(store.runs_of(sid)) == len(runs) + 1


def test_a_tight_configuration_gets_nothing_and_max_bounds(store: Store, adaptive_sweep) -> None:
    sid, runs = adaptive_sweep
    reps = configuration(runs)
    for r in reps:
        finish(store, r, 100.0)         # identical: half-width 0
    assert adaptive.after_result(store, reps[-1].run_id) == []
    wide = configuration(runs, 1)
    energies = iter([100.0, 150.0, 70.0, 140.0, 65.0, 999.0])
    for r in wide:
        finish(store, r, next(energies))
    last = wide[-1]
    while added := adaptive.after_result(store, last.run_id):
        last = added[0]
        finish(store, last, next(energies))
    ids = adaptive.configuration_ids(wide[0], POLICY)
    assert len(store.repetition_figures(ids)) == POLICY.max
    summary = {c.run.run_id: c.decision for c in adaptive.sweep_summary(store, sid)}
    assert summary[reps[0].run_id].verdict == "met"
    assert summary[wide[0].run_id].verdict == "max"
    assert summary[wide[0].run_id].runs == 5


def test_the_store_gives_both_figures(store: Store, adaptive_sweep) -> None:
    _, runs = adaptive_sweep
    reps = configuration(runs)
    for r, e in zip(reps, (100.0, 130.0, 80.0)):
        finish(store, r, e)
    figures = store.repetition_figures([r.run_id for r in reps])
    # tests.factories.result: gross = E / 50 tokens, net = (E − 60 J idle) / 50.
    assert sorted(f.points[0].energy_per_output_token_j for f in figures.values()) == \
        pytest.approx([1.6, 2.0, 2.6])
    assert sorted(f.points[0].energy_per_output_token_net_j for f in figures.values()) == \
        pytest.approx([0.4, 0.8, 1.4])


def test_a_fixed_count_sweep_is_never_extended(store: Store) -> None:
    spec, text, runs = factories.sweep()
    sid = store.record_sweep(spec, text)
    store.add_runs(sid, runs)
    for r in runs:
        finish(store, r, 100.0 + 50 * r.repetition)
    assert all(adaptive.after_result(store, r.run_id) == [] for r in runs)
    assert adaptive.sweep_summary(store, sid) == []
    assert adaptive.extend_sweep(store, sid) == []


def test_extend_sweep_applies_the_decision_once(store: Store, adaptive_sweep) -> None:
    sid, runs = adaptive_sweep
    for r in runs:
        finish(store, r, 100.0 + 30 * r.repetition)
    added = adaptive.extend_sweep(store, sid)
    assert len(added) == len({adaptive.repetition(r, 0).run_id for r in runs})
    assert adaptive.extend_sweep(store, sid) == []


def test_a_configuration_label_names_the_gpu_tuning_it_asked_for():
    # The per-configuration lines of `farmctl results`: a power-limit sweep's caps apart.
    run = expand(parse_sweep(ADAPTIVE))[0]
    plain = adaptive.configuration_label(run)
    assert "cap" not in plain and "MHz" not in plain
    assert adaptive.configuration_label(factories.tuned(run, 300.0, 1200)) == plain.replace(
        "sim:h100-80gb", "sim:h100-80gb · 300 W cap · SM 1200 MHz")
    assert adaptive.configuration_label(factories.tuned(run, 450.0)) == plain.replace(
        "sim:h100-80gb", "sim:h100-80gb · 450 W cap")


def tight_and_wide(store: Store, toml: str):
    """The sweep stored with its first configuration's 3 runs equal (target met) and
    its second's spread (100, 150, 70 J: its repetition 3 queued by extend_sweep).
    Returns (spec, sweep id, the wide configuration's runs)."""
    spec, text, runs = factories.sweep(toml)
    sid = store.record_sweep(spec, text)
    store.add_runs(sid, runs)
    tight, wide = configuration(runs, 0), configuration(runs, 1)
    for r in tight:
        finish(store, r, 100.0)
    for r, e in zip(wide, (100.0, 150.0, 70.0)):
        finish(store, r, e)
    adaptive.extend_sweep(store, sid)
    return spec, sid, wide


def test_the_report_lists_the_verdicts_and_the_figure_they_were_on(store: Store) -> None:
    from farm.report.figures import FigureInputs, Reads, kind
    from farm.report.points import load_run_points

    net = ADAPTIVE.replace("ci_half_width_pct = 2 }", 'ci_half_width_pct = 2, figure = "net" }')
    spec, _, _ = tight_and_wide(store, net)
    name, points = load_run_points(store, spec.name)

    def notes(energies):
        reads = Reads(store, "repetitions", kind("repetitions").needs, {})
        return kind("repetitions").build(FigureInputs(name, points, True, False, energies,
                                                      (), reads)).notes

    gross = notes(("energy_per_request_j", "energy_per_output_token_j"))
    head = next(n for n in gross if n.startswith("Adaptive repetitions"))
    assert "net J/output token (net of idle) was ≤ 2% of the mean" in head
    assert "at most 5 runs" in head and "1 target met" in head
    assert "3 repetition running or queued" in head     # the wide one, two untouched
    assert any(n.startswith("The target was on net J/output token") and "--net" in n
               for n in gross)
    assert any(n.startswith("±0.00% (n = 3, 3 run(s)), target met: ") for n in gross)
    assert any("(n = 3, 4 run(s)), repetition running or queued: " in n for n in gross)
    shown_net = notes(("energy_per_request_net_j", "energy_per_output_token_net_j"))
    assert not any(n.startswith("The target was on") for n in shown_net)


def test_the_report_draws_each_configurations_ci_as_its_repetitions_came(
        store: Store) -> None:
    from farm.report.figures import FigureInputs, Reads, kind
    from farm.report.plots import FigureSpec, draw_figure
    from farm.report.points import load_run_points

    spec, sid, wide = tight_and_wide(store, ADAPTIVE)
    (fourth,) = [r for r in store_runs(store, sid) if r.repetition == 3]
    assert adaptive.repetition(fourth, 0).run_id == wide[0].run_id
    finish(store, fourth, 100.0)
    name, points = load_run_points(store, spec.name)
    energies = ("energy_per_request_j", "energy_per_output_token_j")
    section = kind("repetitions").build(FigureInputs(
        name, points, True, False, energies, (),
        Reads(store, "repetitions", kind("repetitions").needs, {})))
    (planned,) = section.figures
    data = planned.data
    assert (data.target_pct, data.max_runs, data.left_out) == (2.0, 5, 0)
    # the configurations still waiting for their first runs have no line yet
    met, more = sorted(data.paths, key=lambda p: len(p.widths))
    assert (met.verdict, more.verdict) == ("met", "more")
    assert met.widths == ((1, None), (2, 0.0), (3, 0.0))
    # the wide one: an interval from run 2, the 4th run (100 J) narrowing it
    widths = [w for _, w in more.widths]
    assert [n for n, _ in more.widths] == [1, 2, 3, 4]
    assert widths[0] is None and widths[1] > widths[3] > 2
    fig = draw_figure(FigureSpec("ci", "repetitions", planned.title, data, simulated=True))
    ax = fig.axes[0]
    assert [line.get_gid() for line in ax.get_lines()].count("target") == 1
    drawn = {line.get_gid(): list(line.get_xdata()) for line in ax.get_lines()}
    assert sorted(len(x) for gid, x in drawn.items() if gid.startswith("path-")) == [2, 3]
    # the met one is marked where it stopped; the one still due more is not
    (end,) = [gid for gid in drawn if gid.startswith("end-")]
    assert data.paths[int(end.removeprefix("end-"))].verdict == "met"


def store_runs(store: Store, sid: str):
    from farm_contract.runspec import RunSpec

    return [RunSpec.model_validate_json(r["spec_json"]) for r in store.runs_of(sid)]
