import threading
import time

import pytest

from farm_contract.records import GpuInfo
from workers.allocator import GpuAllocator
from workers.errors import PermanentError, RunAborted


class Dev:
    def __init__(self, model, i):
        self.info = GpuInfo(index=i, uuid=f"{model}-{i}", name=model, model=model, backend="sim")


def devices():
    return [Dev("h100", 0), Dev("h100", 1), Dev("l4", 2)]


def test_grants_distinct_gpus_of_the_model():
    alloc = GpuAllocator(devices())
    never = threading.Event()
    with alloc.hold("h100", 1, "a", never) as a, alloc.hold("h100", 1, "b", never) as b:
        assert {a[0].info.uuid, b[0].info.uuid} == {"h100-0", "h100-1"}
        assert alloc.busy() == {"h100-0": "a", "h100-1": "b"} or alloc.busy() == {
            "h100-1": "a", "h100-0": "b"}
    assert alloc.busy() == {}


def test_more_gpus_than_the_host_has_is_a_permanent_error():
    with pytest.raises(PermanentError, match="needs 2"):
        with GpuAllocator(devices()).hold("l4", 2, "x", threading.Event()):
            pass


def test_two_gpu_run_waits_and_is_not_starved():
    alloc = GpuAllocator(devices())
    never = threading.Event()
    order = []
    first = alloc.hold("h100", 1, "first", never)
    first.__enter__()

    def big():
        with alloc.hold("h100", 2, "big", never):
            order.append("big")

    def small():
        with alloc.hold("h100", 1, "small", never):
            order.append("small")

    t_big = threading.Thread(target=big)
    t_big.start()
    time.sleep(0.1)
    t_small = threading.Thread(target=small)   # arrives later, a GPU is free now
    t_small.start()
    time.sleep(0.3)
    assert order == []          # FIFO: the small run may not jump the queue
    first.__exit__(None, None, None)
    t_big.join(2)
    t_small.join(2)
    assert order == ["big", "small"]


def test_other_models_are_not_blocked_by_a_waiting_run():
    alloc = GpuAllocator(devices())
    never = threading.Event()
    with alloc.hold("h100", 2, "all-h100", never):
        with alloc.hold("l4", 1, "l4-run", never) as got:
            assert got[0].info.model == "l4"


def test_abort_while_waiting():
    alloc = GpuAllocator(devices())
    abort = threading.Event()
    with alloc.hold("l4", 1, "holder", threading.Event()):
        threading.Timer(0.2, abort.set).start()
        with pytest.raises(RunAborted):
            with alloc.hold("l4", 1, "waiter", abort, poll_s=0.05):
                pass
