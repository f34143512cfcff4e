"""One run, one process (workers.runproc): the run measured in a child process
gives what run_one gives, relays progress and aborts, hands the simulated GPUs'
state back, and rebuilds the exceptions the task layer decides on."""

from __future__ import annotations

import multiprocessing
import threading
import time
from types import SimpleNamespace

import pytest

from tests.unit.workers.test_runner import BATCH, SERVER, WORKER, one_run
from workers.errors import RunAborted
from workers.gpu.sim import SimInventory
from workers.power import Contamination
from workers.preflight import GpuBusy, IdleTemperatures
from workers.quietgate import IdlePowerReferences
from workers.runner import Contaminated
from workers.runproc import RunProcessDied, _described, _rebuilt, isolatable, run_in_process


def test_a_run_in_its_own_process_measures_and_hands_the_gpus_back():
    run = one_run(SERVER)
    gpus = SimInventory("H100-80GB").devices()
    before_mj = gpus[0].energy_mj()
    told: list[tuple] = []
    temperatures = IdleTemperatures()
    result = run_in_process(run, gpus, threading.Event(), worker=WORKER, attempt=3,
                            on_load_point=lambda *a: told.append(a),
                            idle_temperatures=temperatures,
                            idle_powers=IdlePowerReferences())
    assert result.status == "succeeded" and result.attempt == 3
    assert [lp.index for lp in result.load_points] == [0, 1]
    assert told == [(0, 2, "concurrency", 1.0), (1, 2, "concurrency", 4.0)]
    assert result.window("run").energy_j > 0 and result.validity.valid
    assert result.gpus[0].uuid == gpus[0].info.uuid
    # The run's energy reached the worker's device; its idle reference came back.
    after_mj = gpus[0].energy_mj()
    assert (after_mj - before_mj) / 1000 >= result.window("run").energy_j
    assert temperatures.snapshot([gpus[0].info.uuid])


def test_the_same_run_gives_the_same_figures_in_a_thread_and_in_a_process():
    from workers.runner import run_one

    run = one_run(BATCH)
    a = run_one(run, SimInventory("L4").devices(), threading.Event(), worker=WORKER, attempt=1)
    b = run_in_process(run, SimInventory("L4").devices(), threading.Event(), worker=WORKER,
                       attempt=1)
    assert a.measurement.measured_in == "worker thread"
    assert b.measurement.measured_in == "run process"
    for x, y in zip(a.load_points, b.load_points, strict=True):
        assert x.output_tokens == y.output_tokens
        # The sim engine runs in real time: which tokens fall inside a 0.19 s steady
        # window follows the host's timing (121 against 117 once in CI).
        assert x.steady_output_tokens == pytest.approx(y.steady_output_tokens, rel=0.15)
        # The simulated GPU's power is the same model either way (41.58 W here) ...
        assert x.avg_power_w == pytest.approx(y.avg_power_w, rel=0.01)
        # ... while its energy follows the window's wall-clock length: 0.17 s, which
        # a busy host stretched by 10 ms once in CI (J/token 0.0600 against 0.0637).
        assert x.energy_per_output_token_j == pytest.approx(y.energy_per_output_token_j,
                                                            rel=0.15)


def test_an_abort_reaches_the_run_process():
    abort = threading.Event()
    threading.Timer(0.3, abort.set).start()
    start = time.monotonic()
    with pytest.raises(RunAborted):
        run_in_process(one_run(SERVER.replace("duration_s = 0.3", "duration_s = 30")),
                       SimInventory("L4").devices(), abort, worker=WORKER, attempt=1)
    assert time.monotonic() - start < 10


def test_a_tenant_seen_in_the_run_process_comes_back_as_gpu_busy():
    gpus = SimInventory("L4").devices()
    gpus[0].add_compute_pid(424_242)
    with pytest.raises(GpuBusy) as caught:
        run_in_process(one_run(BATCH), gpus, threading.Event(), worker=WORKER, attempt=1)
    assert caught.value.busy == {gpus[0].info.uuid: [424_242]}
    assert caught.value.kind == "gpu_busy"


def test_a_run_process_that_dies_is_a_transient_failure():
    def kill_it() -> None:
        for child in multiprocessing.active_children():
            if child.name.startswith("farm-run-"):
                child.kill()

    threading.Timer(0.5, kill_it).start()
    with pytest.raises(RunProcessDied, match="without a result"):
        run_in_process(one_run(SERVER.replace("duration_s = 0.3", "duration_s = 30")),
                       SimInventory("L4").devices(), threading.Event(), worker=WORKER,
                       attempt=1)


def test_exceptions_cross_the_pipe_with_their_fields():
    sighting = Contamination(at_s=1.5, gpu_uuid="SIM-x", pids=[7])
    again = _rebuilt(_described(Contaminated("foreign process 7", [sighting])))
    assert isinstance(again, Contaminated) and again.sightings == [sighting]
    assert str(again) == "foreign process 7" and again.kind == "contaminated"
    bug = _rebuilt(_described(ZeroDivisionError("division by zero")))
    assert isinstance(bug, RuntimeError) and "ZeroDivisionError" in str(bug)


def test_only_devices_the_run_process_can_open_again_are_isolated():
    assert isolatable(SimInventory("L4x2").devices())
    fake = SimpleNamespace(vendor="nvml")     # a test's own device, not workers.gpu's
    assert not isolatable([*SimInventory("L4").devices(), fake])


def test_a_signal_to_the_process_group_stops_the_run_only_through_the_worker():
    import os
    import signal

    def term_the_run_process() -> None:
        for child in multiprocessing.active_children():
            if child.name.startswith("farm-run-"):
                os.kill(child.pid, signal.SIGTERM)     # as killpg does to the worker's group

    abort = threading.Event()
    threading.Timer(0.5, term_the_run_process).start()
    threading.Timer(1.0, abort.set).start()             # the worker's own shutdown
    with pytest.raises(RunAborted):                     # handed back, not a lost process
        run_in_process(one_run(SERVER.replace("duration_s = 0.3", "duration_s = 30")),
                       SimInventory("L4").devices(), abort, worker=WORKER, attempt=1)


def test_shipped_plug_ins_are_isolated_and_run_time_ones_are_measured_in_the_thread(monkeypatch):
    from farm_contract.engines import ENGINE_KINDS
    from workers import engines as registry
    from workers.energy import EnergySource, SourceReading, parse_source_spec
    from workers.runproc import why_not_isolated

    run = one_run(SERVER)
    gpus = SimInventory("L4").devices()
    assert why_not_isolated(run, gpus, []) is None
    rapl = parse_source_spec("rapl:name=host")
    assert rapl.spec == "rapl:name=host"
    assert why_not_isolated(run, gpus, [rapl]) is None

    class Plug(EnergySource):     # built in code: no spec a run process could read
        kind, sensor = "plug", "plug.counter"

        def read(self) -> SourceReading:
            return SourceReading(1.0)

        @classmethod
        def from_options(cls, name, options):
            return cls()

    plug = Plug()
    plug.name = "plug"
    assert "energy source 'plug'" in why_not_isolated(run, gpus, [plug])

    # An engine registered at run time replaces the shipped one for this kind.
    class LocalSim(registry.engine_class(run)):
        pass

    monkeypatch.setitem(registry._REGISTRY, ("sim", "server"), LocalSim)
    assert "is not a module of workers/engines/" in why_not_isolated(run, gpus, [])
    monkeypatch.setitem(ENGINE_KINDS, "late", ENGINE_KINDS["sim"])
    late = run.model_copy(update={"engine": run.engine.model_copy(update={"kind": "late"})})
    assert "added at run time" in why_not_isolated(late, gpus, [])
