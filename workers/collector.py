"""Python's garbage collector kept from pausing a run's measured windows.

A full collection walks every object the collector tracks while it holds the
interpreter lock. In a run process that heap is the tokenizer's modules, the
engine client and the load points' records, and a full pass took 17-189 ms
(a 64-stream load point against the mock, 2 cores, 2026-12-07), growing with
the records. Meanwhile neither the power sampler nor the load generator's
clock runs: the sampler missed up to two 100 ms periods inside a steady
window, and a token that arrived then is stamped late.

So a process that measures one run (workers/runproc.py) calls `dedicate()`,
and the runner calls `settle()` before warm-up and before each load point,
outside every window: a collection now, then everything alive is frozen
(`gc.freeze`: later collections skip it), so a collection inside a window
walks only what the window itself made. `thaw()` after the run gives the
frozen objects back to the collector. A worker measuring runs in threads
shares one heap between them, so there the collector is left as it is.
"""

from __future__ import annotations

import gc
import time

_dedicated = False


def dedicate() -> None:
    """This process measures one run: `settle` and `thaw` act from now on."""
    global _dedicated
    _dedicated = True


def settle(full: bool = False) -> float | None:
    """Collect now and freeze what is alive; the seconds it took (None: not dedicated).

    `full` walks the whole heap: before the run starts. Between a run's phases only
    the young generations are collected (milliseconds), since a full pass over a
    long load point's records (0.19 s for 200,000 requests here) would lengthen the
    pause the stall check judges; the few cycles already in the old generation are
    frozen with the rest and freed after the run."""
    if not _dedicated:
        return None
    start = time.perf_counter()
    gc.collect() if full else gc.collect(1)
    gc.freeze()
    return time.perf_counter() - start


def thaw() -> None:
    """Give the frozen objects back to the collector (after the run's windows)."""
    if _dedicated:
        gc.unfreeze()
