"""The most a sweep may ask for, each with the reason: bounds on every number a
sweep file gives, checked before anything is expanded or sent (issue 22).

Without them `concurrency = [1000000]` or `duration_s = 1e12` passed validation
and then ate the worker's memory or overflowed there, and `repetitions =
1000000` made `validate` itself hold a million runs. Each maximum is the edge
of what the farm can do, not of what is useful: a lab hitting one is asking
for something no worker could deliver. docs/sweep-format.md lists them
("Maxima"); `at_most` gives the located error every field gives.
"""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator

DAY_S = 86_400.0
# A run holds its GPUs for its whole length, and FARM_VISIBILITY_TIMEOUT_S (6 h by
# default) must exceed it: no run the farm can finish lasts a day. Every time a
# sweep gives (a load point, a warm-up, a baseline, a wait) is at most this, and so
# is one run's planned sending (warm-up + load points × duration).
MAX_RUN_S = DAY_S
WHY_RUN_S = "a day: a run holds its GPUs throughout, and no run the farm can finish is longer"

# Requests in flight on one worker: each holds a connection (a file descriptor)
# and a task in the load generator's one event loop. Twice the largest study the
# farm reproduces (5,000 simultaneous requests).
MAX_CONCURRENCY = 10_000
WHY_CONCURRENCY = ("requests in flight on one worker, each a connection in one event loop "
                   "(the studies the farm reproduces go to 5,000)")

# Arrivals per second from one load generator; the same reason as concurrency.
MAX_REQUEST_RATE = 10_000.0
WHY_REQUEST_RATE = "arrivals per second from one worker's load generator"

# Load points of one run: each is a steady window against one engine start
# (the rate sweep's own cap, max_points, is the same).
MAX_LOAD_POINTS = 64
WHY_LOAD_POINTS = "load points of one run, each its own steady window"

# Prompts of one batch: each leaves a request record in the worker's memory (and
# a row in the store) with every inter-token gap.
MAX_PROMPTS = 100_000
WHY_PROMPTS = "prompts of one batch, each a request record in the worker's memory"

# Tokens of one prompt or one answer: 2^20, beyond the context window of every
# model the farm serves; a synthetic prompt is built token by token in memory.
MAX_TOKENS = 1_048_576
WHY_TOKENS = "2^20 tokens, beyond every served model's context window"

# Output tokens one batch load point records (prompts × output tokens): the
# request log keeps every inter-token gap, about 32 bytes each in the worker,
# so this is about 1 GB.
MAX_LOGGED_TOKENS = 32_000_000
WHY_LOGGED_TOKENS = ("the request log keeps every inter-token gap, about 32 bytes each: "
                     "about 1 GB on the worker")

# Runs one sweep may expand to, repetitions (an adaptive table's `max`) included,
# counted from the axis lengths before anything is expanded: `validate` and
# `enqueue` hold every run in memory, and at a minute a run it is two weeks of one
# GPU. Twice the 10,000-run sweep the farm's enqueue is measured at
# (docs/performance.md); Watt Counts' whole dataset is 5,000 runs.
MAX_RUNS = 20_000
WHY_RUNS = ("validate and enqueue hold every run in memory, and at a minute each that is "
            "two weeks of one GPU: split the study into sweeps")

# Repetitions of one configuration (also the adaptive table's `max`).
MAX_REPETITIONS = 1_000
WHY_REPETITIONS = ("repetitions of one configuration: the CI narrows as 1/√n, so more "
                   "measures nothing new")

# GPUs of one run: a run is one host's GPUs (the farm runs no multi-host engine).
MAX_GPUS_PER_RUN = 16
WHY_GPUS_PER_RUN = "GPUs of one host: a run never spans hosts"

# `[[exclude]]` rules: each configuration is matched against every rule, twice in
# `validate`; 1,000 rules on 20,000 configurations took 84 s (docs/performance.md).
MAX_EXCLUDE_RULES = 100
WHY_EXCLUDE_RULES = "every configuration is matched against every rule"

# Seeds: the engines' samplers take 32-bit seeds.
MAX_SEED = 2**32 - 1
WHY_SEED = "engines' samplers take 32-bit seeds"

# A sweep file's size, checked before it is read: the largest shipped is 2.5 KB.
MAX_SWEEP_BYTES = 1_048_576
WHY_SWEEP_BYTES = "the file is parsed whole and stored with the sweep"

# Latency limits: a limit longer than a run limits nothing.
MAX_SLO_MS = MAX_RUN_S * 1000
WHY_SLO_MS = "a day: a latency limit longer than a run limits nothing"

# Everything else a sweep states as a number, with the reason.
MAX_TEMPERATURE = 100.0
WHY_TEMPERATURE = "far past where every token is equally likely"
MAX_TOP_K = MAX_TOKENS
WHY_TOP_K = "more than any vocabulary"
MAX_PARAMS_B = 100_000.0
WHY_PARAMS_B = "100 trillion parameters, more than any model"
MAX_BURSTINESS = 1_000.0
WHY_BURSTINESS = "a gamma shape this large already spaces arrivals evenly"
MAX_GROWTH = 1_000.0
WHY_GROWTH = "a median TTFT 1,000 × the first point's is saturation"
MAX_POWER_W = 5_000.0
WHY_POWER_W = "more than any board draws"
MAX_TEMPERATURE_C = 100.0
WHY_TEMPERATURE_C = "the whole range a GPU runs in"
MAX_CI_PCT = 100.0
WHY_CI_PCT = "a half-width larger than the mean bounds nothing"


def _shown(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,g}"


def at_most(limit: float, why: str) -> AfterValidator:
    """A field validator refusing values above `limit`, naming the limit and its reason
    (pydantic's `le` would say neither why nor that it is the farm's own bound)."""
    def check(value: Any) -> Any:
        if value is not None and not isinstance(value, str) and value > limit:
            raise ValueError(f"{_shown(value)} is above the farm's maximum of {_shown(limit)} "
                             f"({why})")
        return value
    return AfterValidator(check)


def most_items(limit: int, why: str) -> AfterValidator:
    """A list validator refusing more than `limit` items, with the reason."""
    def check(values: list[Any] | None) -> list[Any] | None:
        if values is not None and len(values) > limit:
            raise ValueError(f"{len(values):,} values: the farm takes at most {limit:,} ({why})")
        return values
    return AfterValidator(check)
