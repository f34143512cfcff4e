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


def test_an_answer_that_came_as_the_process_ended_is_kept():
    # The answer arrives, and the process ends, between an empty poll and the look at
    # the process: the answer is read, not called lost (a whole run measured again).
    from workers.runproc import _wait

    class LateInbox:        # its first poll comes just before the answer
        def __init__(self, connection):
            self.connection, self.polls = connection, 0

        def poll(self, timeout=0.0):
            self.polls += 1
            return self.polls > 1 and self.connection.poll(timeout)

        def recv_bytes(self):
            return self.connection.recv_bytes()

    inbox, outbox = multiprocessing.Pipe(duplex=False)
    outbox.send_bytes(b'{"result": "the run"}')
    ended = SimpleNamespace(pid=1, exitcode=0, is_alive=lambda: False)
    groups: list[int] = []
    assert _wait(ended, LateInbox(inbox), SimpleNamespace(), threading.Event(), None,
                 groups) == {"result": "the run"}


def test_an_engine_left_by_a_run_process_that_died_is_stopped_by_the_worker(tmp_path):
    # An engine runs in a session of its own, so it outlives the run process that
    # started it (killed, out of memory): the worker stops it, or it holds the GPUs.
    # A subprocess: the command engine needs FARM_ALLOW_COMMANDS in the forkserver's
    # environment, which is fixed when the first run of this test session started it.
    import os
    import subprocess
    import sys
    import textwrap

    mark = f"{os.getpid()}.4242"
    script = textwrap.dedent(f'''
        import multiprocessing, subprocess, threading, time
        from farm.sweep import expand
        from farm.sweep_file import parse_sweep
        from tests.unit.workers.test_runner import WORKER
        from workers.gpu.sim import SimInventory
        from workers.runproc import RunProcessDied, run_in_process

        SWEEP = """
        name = "orphan"
        [[model]]
        id = "command"
        source = "command"
        [hardware]
        gpu = ["sim:L4"]
        [engine]
        kind = "measure"
        command = "sleep {mark}"
        [[scenario]]
        kind = "batch"
        name = "command"
        num_prompts = 1
        warmup_prompts = 0
        [workload]
        dataset = "load-tool"
        output_tokens = 8
        [measurement]
        idle_baseline_s = 0.1
        min_steady_s = 0.1
        cooldown_timeout_s = 0
        """

        def kill_the_run_process():
            while not subprocess.run(["pgrep", "-f", "sleep {mark}"],
                                     capture_output=True).stdout:
                time.sleep(0.05)
            for child in multiprocessing.active_children():
                if child.name.startswith("farm-run-"):
                    child.kill()

        if __name__ == "__main__":
            threading.Thread(target=kill_the_run_process, daemon=True).start()
            try:
                run_in_process(expand(parse_sweep(SWEEP))[0], SimInventory("L4").devices(),
                               threading.Event(), worker=WORKER, attempt=1)
            except RunProcessDied as exc:
                print("died:", exc)
        ''')
    (tmp_path / "orphan.py").write_text(script)
    # What a run that set a power limit leaves in the journal (a simulated GPU cannot
    # be tuned; the entry says nothing was changed, so restoring only forgets it).
    journal = tmp_path / "journal"
    journal.mkdir()
    uuid = SimInventory("L4").devices()[0].info.uuid
    (journal / f"{uuid}.json").write_text(
        f'{{"uuid": "{uuid}", "run_id": "the dead run", "pid": 1, "changed": []}}')
    env = {**os.environ, "FARM_ALLOW_COMMANDS": "1",
           "PYTHONPATH": os.getcwd(), "FARM_GPU_TUNE_JOURNAL_DIR": str(journal)}
    try:
        done = subprocess.run([sys.executable, str(tmp_path / "orphan.py")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert "died: the run's process" in done.stdout, done.stdout + done.stderr
        assert "left engine process group" in done.stderr
        assert "GPU settings its process left" in done.stderr
        assert not list(journal.iterdir()), "the GPU's settings were not restored"
        left = subprocess.run(["pgrep", "-f", f"sleep {mark}"], capture_output=True).stdout
        assert not left, "the engine outlived the run process and the worker"
    finally:
        subprocess.run(["pkill", "-9", "-f", f"sleep {mark}"], check=False)
