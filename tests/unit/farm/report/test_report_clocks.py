"""The "clocks" figure (experiment f of issue 19): J/output token against TPOT and
TTFT over SM clock / power-cap settings, the Pareto fronts, and each point labelled
with what drove it (farm/report/drivers.py) from its stored timeline.

The store holds a simulated sweep's server runs asked for clock locks and caps
(`factories.tuned`: the spec refuses the axes on simulated GPUs, whose model does
not slow down with a clock), each with a timeline written for one driver: power
at the cap with the SW power cap bit, a locked clock with busy HBM, a GPU barely
above its idle, and one with no memory power series (the data cannot tell).
"""

from __future__ import annotations

import pytest

from farm.report.drivers import Driver, combine, reason_names
from farm.report.figures.clock_pareto import driver_table
from farm.report.plots import draw_figure
from farm.report.report import collect
from farm.store import Store
from farm_contract.records import EnergyWindow, GpuTuning, PowerTrace
from tests import factories
from tests.unit.farm.report.test_report_browser import _check_figure

SWEEP = """
name = "clocks-sim"
[[model]]
id = "llama-3.1-8b"
source = "local/llama-3.1-8b"
[hardware]
gpu = "sim:H100"
[engine]
kind = "sim"
[[scenario]]
kind = "server"
concurrency = [8, 64]
duration_s = 1.0
[workload]
input_tokens = [64]
output_tokens = [16]
"""

# setting → (board W, SM MHz, throttle mask, memory W in the steady windows; None:
# no memory series), J/output token at c=8 and c=64, TPOT p90 ms at c=8 and c=64
SETTINGS = {
    ("default", "default"): ((660.0, 1500.0, 0x4, 60.0), (0.30, 0.10), (11.0, 20.0)),
    ("default", 990): ((300.0, 990.0, 0, 90.0), (0.20, 0.08), (14.0, 26.0)),
    (400.0, "default"): ((120.0, 1980.0, 0x1, 40.0), (0.25, 0.09), (12.0, 30.0)),
    ("default", 1500): ((500.0, 1500.0, 0, None), (0.35, 0.12), (13.0, 24.0)),
}
IDLE_CTX_W, MEMORY_IDLE_W = 75.0, 35.0


def _timed(result, run, board_w, mhz, mask, memory_w, j_per_token, tpot_ms):
    """`result` with an idle_ctx window (0–1 s), one steady window per load point
    (1–2 s, 2–3 s) and a 0.1 s timeline set to the driver's readings in them."""
    t_s = [round(0.1 * k, 1) for k in range(31)]
    idle = [t < 1.0 for t in t_s]
    windows = [EnergyWindow(name="idle_ctx", start_s=0.0, duration_s=1.0, energy_j=75.0),
               *[EnergyWindow(name="steady", load_point=i, start_s=1.0 + i, duration_s=1.0,
                              energy_j=board_w) for i in range(2)]]
    trace = PowerTrace(
        sensor="sim.power", sample_period_s=0.1, gpu_uuids=[result.gpus[0].uuid], t_s=t_s,
        power_w=[[IDLE_CTX_W if i else board_w for i in idle]],
        sm_clock_mhz=[[345.0 if i else mhz for i in idle]],
        throttle_reasons=[[0x1 if i else mask for i in idle]],
        memory_power_w=None if memory_w is None else [[MEMORY_IDLE_W if i else memory_w
                                                       for i in idle]])
    points = [lp.model_copy(update={"avg_power_w": board_w,
                                    "energy_per_output_token_j": j_per_token[i],
                                    "tpot": lp.tpot.model_copy(update={"p90_ms": tpot_ms[i]})})
              for i, lp in enumerate(result.load_points)]
    return result.model_copy(update={"windows": windows, "trace": trace, "load_points": points})


def _with_tuning(result, watts, mhz):
    """The tuning record the worker stores ("default": the default limit asked for and
    read back, the clock unlocked)."""
    default = watts == "default"
    record = GpuTuning(
        uuid=result.gpus[0].uuid, requested_power_limit_w=700.0 if default else watts,
        requested_sm_clock_mhz=None if mhz == "default" else mhz,
        power_limit_default=True if default else None,
        sm_clock_default=True if mhz == "default" else None, default_power_limit_w=700.0,
        applied_power_limit_w=700.0 if default else watts,
        applied_sm_clock_mhz=None if mhz == "default" else float(mhz), via="nvml",
        restored=True)
    return result.model_copy(update={"preflight": result.preflight.model_copy(
        update={"tuning": [record]})})


@pytest.fixture(scope="module")
def clock_store(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('clocks')}/farm.db"
    spec, toml, (run,) = factories.sweep(SWEEP)
    with Store.open(url, upgrade=True) as store:
        sid = store.record_sweep(spec, toml)
        tuned = {key: factories.tuned(run, *key) for key in SETTINGS}
        store.add_runs(sid, list(tuned.values()))
        for key, tuned_run in tuned.items():
            readings, j, tpot = SETTINGS[key]
            result = _timed(factories.result(tuned_run), tuned_run, *readings, j, tpot)
            store.record_result(_with_tuning(result, *key))
    return url, spec.name


def test_reasons_are_named_and_idle_left_out():
    assert reason_names(0x1 | 0x4 | 0x80) == ["SW power cap", "HW power brake"]
    assert reason_names(0) == [] and reason_names(1 << 40) == ["0x10000000000"]


def test_each_point_says_what_drove_it(clock_store):
    url, name = clock_store
    with Store.open(url) as store:
        data = collect(store, name)
    (spec,) = [s for s in data.figures if s.section == "clocks"]
    assert spec.title.startswith("SIMULATED — llama-3.1-8b on h100-80gb, in 64 / out 16")
    fig = spec.data
    by = {(t.setting, t.load_label): t for t in fig.points}
    assert len(by) == 8 and {t.energy.n for t in fig.points} == {1}
    capped = by[("default power limit · default SM clock", "c=8")].driver
    assert (capped.sm_clock_mhz, capped.throttles, capped.bound) == (
        1500.0, ("SW power cap",), "compute-bound")     # (60−35)/(660−75) = 4% memory
    locked = by[("default power limit · SM 990 MHz", "c=64")].driver
    assert (locked.sm_clock_mhz, locked.throttles, locked.bound) == (990.0, (), "memory-bound")
    assert "memory 24% of the dynamic power" in locked.why
    idle = by[("400 W cap · default SM clock", "c=8")].driver
    assert (idle.bound, idle.throttles) == ("host-bound", ())   # 45 W over idle of 325
    assert "14% of the headroom" in idle.why and "limit 400 W" in idle.why
    blind = by[("default power limit · SM 1500 MHz", "c=8")].driver
    assert blind.bound == "unknown" and "no memory power" in blind.why
    # The fronts, by ascending latency: TPOT p90 11 ms (default, 0.30 J) → 12 ms (400 W
    # cap, 0.25 J) → 14 ms (990 MHz, 0.20 J) at c=8, then c=64's cheaper points.
    tpot_front = [next(t for t in fig.points if t.number == n) for n in fig.fronts["tpot_p90_ms"]]
    assert [(t.setting, t.load_label) for t in tpot_front] == [
        ("default power limit · default SM clock", "c=8"), ("400 W cap · default SM clock", "c=8"),
        ("default power limit · SM 990 MHz", "c=8"),
        ("default power limit · default SM clock", "c=64"),
        ("default power limit · SM 990 MHz", "c=64")]
    assert spec.notes == ["8 run point(s) used; none left out"]
    html = driver_table(spec)
    assert html.count("<tr>") == 9 and "memory-bound" in html and "SW power cap" in html


def test_the_clocks_figure_is_drawn_with_every_point_labelled(clock_store):
    url, name = clock_store
    with Store.open(url) as store:
        data = collect(store, name)
    (spec,) = [s for s in data.figures if s.section == "clocks"]
    fig = draw_figure(spec)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.endswith("990 MHz · no throttle · memory-bound") for t in labels)
    assert len(labels) == 16                              # every point, in both panels
    _check_figure(spec)                      # title, panels, legend inside; no label overlap
    assert fig.axes[0].get_xlabel() == "TPOT p90 (ms)"
    assert fig.axes[1].get_xlabel() == "TTFT p90 (ms)"


def test_repetitions_that_disagree_are_called_mixed():
    host = Driver(1980.0, (), "host-bound", "a")
    mem = Driver(1000.0, ("SW power cap",), "memory-bound", "b")
    both = combine([host, mem, host])
    assert both.bound == "mixed (host-bound ×2, memory-bound ×1)"
    assert (both.sm_clock_mhz, both.throttles) == (1980.0, ("SW power cap",))


def test_the_tuning_caption_names_a_default_setting(clock_store):
    # "default" and numbers side by side (examples/vllm-gpu-clocks.toml) used to fail
    # sorting the settings.
    url, name = clock_store
    with Store.open(url) as store:
        data = collect(store, name)
    notes = [n for s in data.figures if s.section == "tuning" for n in s.notes]
    assert "990 MHz requested: read back 990 MHz (1 run)" in notes
    assert "the default requested: 2 without a read-back" in notes
