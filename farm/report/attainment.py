"""SLO attainment under latency limits other than those a run was measured under:
recounted from the run's stored per-request records by the contract's goodput rule,
the one the workers apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from farm.report.points import RunPoint
from farm_contract.rules import Slo, goodput_of


def attainment_of(records: Sequence[Any], ttft_ms: float, tpot_ms: float) -> float | None:
    """Share of the requests sent that were good under the limits (ms): the
    contract's goodput rule (`farm_contract.rules.goodput_of`), the one the
    workers apply. None without records."""
    return goodput_of(records, 1.0, Slo.from_ms(ttft_ms, tpot_ms)).attainment


# (run point, TTFT limit ms, TPOT limit ms) -> its SLO attainment under those limits
Recount = Callable[[RunPoint, float, float], "float | None"]


class StoredAttainment:
    """SLO attainment of a run point recounted under other limits from the run's
    stored per-request records (`Store.requests_for`), cached per run."""

    def __init__(self, store: Any):
        self.store = store
        self._indices: dict[str, list[tuple[str, float, int]]] = {}

    def _index(self, point: RunPoint) -> int | None:
        if point.run_id not in self._indices:
            self._indices[point.run_id] = [
                (lp.kind, lp.value, lp.index) for lp in self.store.load_points_for(point.run_id)]
        for kind, value, index in self._indices[point.run_id]:
            if kind == point.load_kind and point.load_value is not None \
                    and math.isclose(value, point.load_value):
                return index
        return None

    def __call__(self, point: RunPoint, ttft_ms: float, tpot_ms: float) -> float | None:
        """The point's SLO attainment (0–1) under these limits (ms); None without records."""
        index = self._index(point)
        if index is None:
            return None
        return attainment_of(self.store.requests_for(point.run_id, index), ttft_ms, tpot_ms)
