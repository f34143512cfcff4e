"""Imported by the run processes' forkserver alone (`workers.runproc.PRELOAD`),
never by a worker: it makes that server ignore SIGTERM and SIGINT.

A stop sent to the worker's whole process group (killpg, Ctrl-C in a terminal)
must reach the worker, which relays it to its runs (handed back), and not kill
the forkserver: a run whose process cannot be started is lost. The server still
ends with the worker (its pipe from the worker closes); the run processes it
forks put handlers of their own in place (`workers.runproc._child`).
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
