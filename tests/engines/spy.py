"""An engine factory for `run_one` that keeps the engines it made, so a test can
look at their processes after the run."""

from __future__ import annotations

from workers.engines import make_engine


class EngineSpy:
    """Engine factory that keeps the engines it made (to look at their processes)."""

    def __init__(self, factory=make_engine):
        self.factory = factory
        self.engines = []

    def __call__(self, run, gpus, abort):
        engine = self.factory(run, gpus, abort)
        self.engines.append(engine)
        return engine
