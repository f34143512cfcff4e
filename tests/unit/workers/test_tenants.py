"""The tenant watch (workers/tenants.py) on fake devices and a fake clock, the
allocator's use of it, the runner stopping at a tenant, and the simulated-tenant
file of the sim GPU seam."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from farm_contract.records import GpuInfo
from tests.unit.workers.test_runner import SERVER, WORKER, one_run
from workers.allocator import GpuAllocator
from workers.errors import TenantHeld
from workers.gpu.sim import SIM_TENANTS_VAR, SimInventory
from workers.runner import Contaminated, run_one
from workers.tenants import TenantWatch, own_process_tree, servable


class Dev:
    """A GPU whose compute process list the test sets (None: cannot be listed)."""

    def __init__(self, model: str, i: int):
        self.info = GpuInfo(index=i, uuid=f"{model}-{i}", name=model, model=model, backend="sim")
        self.pids: list[int] | None = []

    def compute_pids(self):
        return self.pids


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def watch_of(devs, held=None, settle_s=30.0):
    clock = Clock()
    held = held if held is not None else {}
    watch = TenantWatch(devs, lambda: held, settle_s, own_pids=lambda: {os.getpid(), 7},
                        clock=clock, wall=clock)
    return watch, clock


def by_uuid(watch):
    return {s.uuid: s for s in watch.states()}


def test_a_gpu_free_at_start_is_usable_at_once():
    devs = [Dev("h100", 0)]
    watch, _ = watch_of(devs)
    watch.poll()
    state = by_uuid(watch)["h100-0"]
    assert (state.state, state.settled, state.since) == ("free", True, None)
    assert state.describe(30) == "free"


def test_a_tenant_holds_the_gpu_until_it_has_been_gone_for_the_settle_time():
    devs = [Dev("h100", 0), Dev("h100", 1)]
    watch, clock = watch_of(devs)
    devs[0].pids = [4242, os.getpid(), 7]       # ours are not tenants
    watch.poll()
    held = by_uuid(watch)["h100-0"]
    assert (held.state, held.pids, held.since) == ("held", (4242,), 1000.0)
    assert held.describe(30) == "held by pid 4242"
    assert not watch.usable("h100-0") and watch.usable("h100-1")
    assert "foreign process 4242 on GPU h100-0" in watch.blocked("h100", 2)
    assert watch.blocked("h100", 1) is None       # one usable GPU serves a 1-GPU run

    clock.t += 50
    devs[0].pids = []
    watch.poll()                                  # gone: free, but not settled
    assert not watch.usable("h100-0")
    assert "less than FARM_GPU_SETTLE_S=30 s" in watch.blocked("h100", 2)
    assert by_uuid(watch)["h100-0"].since == 1050.0
    clock.t += 29.9
    assert not watch.usable("h100-0")
    clock.t += 0.2
    assert watch.usable("h100-0") and watch.blocked("h100", 2) is None


def test_a_tenant_back_before_the_settle_time_starts_it_again():
    devs = [Dev("l4", 0)]
    watch, clock = watch_of(devs, settle_s=10)
    devs[0].pids = [99]
    watch.poll()
    devs[0].pids = []
    clock.t += 1
    watch.poll()
    clock.t += 8
    devs[0].pids = [99]
    watch.poll()
    clock.t += 1
    devs[0].pids = []
    watch.poll()
    clock.t += 9
    assert not watch.usable("l4-0")
    clock.t += 1
    assert watch.usable("l4-0")


def test_a_tenant_a_run_saw_between_polls_restarts_the_settle_time():
    devs = [Dev("l4", 0)]
    watch, clock = watch_of(devs, settle_s=5)
    watch.poll()
    watch.saw_tenant("l4-0", [31337])
    assert not watch.usable("l4-0")
    clock.t += 5
    assert watch.usable("l4-0")


def test_states_show_our_runs_and_an_unreadable_list_counts_as_free():
    devs = [Dev("h100", 0), Dev("h100", 1)]
    watch, _ = watch_of(devs, held={"h100-0": "run-abc"})
    devs[1].pids = None
    watch.poll()
    states = by_uuid(watch)
    assert states["h100-0"].describe(30) == "running run-abc"
    assert states["h100-0"].advert()["run_id"] == "run-abc"
    assert states["h100-1"].state == "free" and watch.usable("h100-1")


def test_more_gpus_than_the_host_has_is_not_a_tenant_block():
    watch, _ = watch_of([Dev("l4", 0)])
    watch.poll()
    assert watch.blocked("l4", 2) is None          # the allocator fails it as permanent


def test_servable_queues_leave_out_gpus_held_by_tenants_our_runs_and_waiting_runs():
    devs = [Dev("h100", 0), Dev("h100", 1), Dev("l4", 2), Dev("a100", 3)]
    needs = {"sim.h100.x1": ("h100", 1), "sim.h100.x2": ("h100", 2),
             "sim.l4.x1": ("l4", 1), "sim.a100.x1": ("a100", 1)}
    watch, _ = watch_of(devs)
    devs[3].pids = [555]
    watch.poll()
    assert servable(needs, watch, {}, {}) == {"sim.h100.x1", "sim.h100.x2", "sim.l4.x1"}
    # One H100 running our run: a 2-GPU run cannot be served, a 1-GPU one can.
    assert servable(needs, watch, {"h100-0": "r"}, {}) == {"sim.h100.x1", "sim.l4.x1"}
    # The L4 busy with our run: its queue is not consumed while the H100s are free.
    assert servable(needs, watch, {"l4-2": "r"}, {}) == {"sim.h100.x1", "sim.h100.x2"}
    # A 2-GPU run already waiting for the H100s: they are promised to it.
    assert servable(needs, watch, {}, {"h100": 2}) == {"sim.l4.x1"}


def test_the_allocator_never_hands_out_a_gpu_a_tenant_holds_and_gives_up_when_told():
    devs = [Dev("h100", 0), Dev("h100", 1)]
    watch, _ = watch_of(devs)
    devs[0].pids = [4242]
    watch.poll()
    changes = []
    alloc = GpuAllocator(devs, usable=watch.usable, on_change=lambda: changes.append(1))
    never = threading.Event()
    with alloc.hold("h100", 1, "a", never) as gpus:
        assert [g.info.uuid for g in gpus] == ["h100-1"]
        assert changes == [1]
    assert changes == [1, 1]            # told at grant and at release
    started = time.monotonic()
    with pytest.raises(TenantHeld, match="foreign process 4242"):
        with alloc.hold("h100", 2, "b", never, poll_s=0.01,
                        give_up=lambda: watch.blocked("h100", 2)):
            pass
    assert time.monotonic() - started < 5
    assert alloc.waiting() == {}


def test_own_process_tree_holds_our_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tree = own_process_tree()
        assert os.getpid() in tree and child.pid in tree
        assert 1 not in tree
    finally:
        child.kill()
        child.wait()


def test_a_tenant_arriving_mid_run_stops_the_run_at_once_as_contaminated():
    # A 20 s load point: stopped within seconds of the tenant, not at the end.
    long = SERVER.replace("duration_s = 0.3", "duration_s = 20").replace("[1, 4]", "[4]")
    gpus = SimInventory("L4").devices()
    intruder = threading.Timer(0.5, lambda: gpus[0].add_compute_pid(999_999))
    started = time.monotonic()
    intruder.start()
    try:
        with pytest.raises(Contaminated, match="foreign process 999999 on GPU") as caught:
            run_one(one_run(long), gpus, threading.Event(), worker=WORKER, attempt=1)
    finally:
        intruder.cancel()
        gpus[0].remove_compute_pid(999_999)
    assert time.monotonic() - started < 15
    assert caught.value.sightings[0].gpu_uuid == gpus[0].info.uuid


def test_the_simulated_tenant_file_shows_pids_on_a_sim_gpu(tmp_path, monkeypatch):
    gpu = SimInventory("L4").devices()[0]
    path = tmp_path / "tenants.json"
    monkeypatch.setenv(SIM_TENANTS_VAR, str(path))
    assert gpu.compute_pids() == []                        # no file yet: none
    path.write_text(json.dumps({gpu.info.uuid: [4242], "SIM-other": [1]}))
    gpu.add_compute_pid(77)
    assert gpu.compute_pids() == [77, 4242]
    path.write_text("{half written")
    assert gpu.compute_pids() == [77]                      # unreadable: none this time


class Consumer:
    """Records what the gate asks Celery's consumer to do, as its event loop would."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def call_soon(self, fn, queue):
        self.calls.append((fn.__name__, queue))

    def add_task_queue(self, queue):
        pass

    def cancel_task_queue(self, queue):
        pass


def test_the_consumer_gate_cancels_and_adds_queues_only_on_change():
    from types import SimpleNamespace

    from tasks.measure import _ConsumerGate

    devs = [Dev("h100", 0), Dev("l4", 1)]
    watch, clock = watch_of(devs, settle_s=10)
    alloc = GpuAllocator(devs, usable=watch.usable)
    ctx = SimpleNamespace(watch=watch, allocator=alloc, abort=threading.Event())
    gate = _ConsumerGate(ctx, {"sim.h100.x1": ("h100", 1), "sim.l4.x1": ("l4", 1)})
    consumer = Consumer()
    watch.poll()
    gate.attach(consumer)
    assert consumer.calls == []                      # both servable: nothing to change
    devs[1].pids = [4242]
    watch.poll()
    gate.update()
    gate.update()
    assert consumer.calls == [("cancel_task_queue", "sim.l4.x1")]
    with alloc.hold("h100", 1, "r", threading.Event()):
        gate.update()
        assert consumer.calls[-1] == ("cancel_task_queue", "sim.h100.x1")
    gate.update()
    assert consumer.calls[-1] == ("add_task_queue", "sim.h100.x1")
    devs[1].pids = []
    watch.poll()
    gate.update()
    assert consumer.calls[-1] == ("add_task_queue", "sim.h100.x1")   # L4 not settled yet
    clock.t += 10
    gate.update()
    assert consumer.calls[-1] == ("add_task_queue", "sim.l4.x1")
    ctx.abort.set()
    devs[1].pids = [4242]
    watch.poll()
    gate.update()
    assert consumer.calls[-1] == ("add_task_queue", "sim.l4.x1")    # stopping: left alone


def test_workers_table_state_text():
    from farm.output import gpu_state_text

    assert gpu_state_text(None, None, None) == "free"           # an older worker's advert
    assert gpu_state_text(None, "abc", None) == "running abc"
    held = {"state": "held", "pids": [4242], "since": 0.0, "settled": False}
    assert gpu_state_text(held, None, 30).startswith("held by pid 4242 (since ")
    settling = {"state": "free", "pids": [], "since": 100.0, "settled": False}
    assert gpu_state_text(settling, None, 30, now=112.0) == "free (settling, 12 s of 30 s)"
    assert gpu_state_text({"state": "free", "since": None, "settled": True}, None, 30) == "free"
    assert gpu_state_text({"state": "running", "run_id": "r1"}, "r1", 30) == "running r1"
