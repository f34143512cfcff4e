"""What adaptive repetitions (farm/adaptive.py) read: a run's RunSpec and sweep,
and, for the runs of one configuration, their status, validity and each load
point's J/output token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import select

from farm.store.base import StoreBase
from farm.store.mapping import load_points_t, results_t, runs_t, sweeps_t
from farm_contract.runspec import RunSpec


class PointFigures(NamedTuple):
    """One load point of a repetition: its load and J/output token, gross and net of
    idle (None when not measured)."""

    kind: str
    value: float
    energy_per_output_token_j: float | None
    energy_per_output_token_net_j: float | None = None


@dataclass(frozen=True)
class RepetitionFigures:
    """One repetition of a configuration: its status, validity verdict and its load
    points' figures by index."""

    run_id: str
    repetition: int
    status: str
    valid: bool | None
    points: dict[int, PointFigures]


class RepetitionReads(StoreBase):
    """The store's side of adaptive repetitions."""

    def run_spec(self, run_id: str) -> tuple[str, RunSpec, str] | None:
        """(sweep id, RunSpec, the sweep's file text) of a stored run, or None."""
        stmt = (select(runs_t.c.sweep_id, runs_t.c.spec_json, sweeps_t.c.spec_toml)
                .join(sweeps_t, sweeps_t.c.id == runs_t.c.sweep_id)
                .where(runs_t.c.id == run_id))
        with self._read() as session:
            row = session.execute(stmt).first()
        if row is None:
            return None
        return row.sweep_id, RunSpec.model_validate_json(row.spec_json), row.spec_toml

    def repetition_figures(self, run_ids: Sequence[str]) -> dict[str, RepetitionFigures]:
        """The stored runs among `run_ids` (unknown ids left out), with their figures."""
        r, res, lp = runs_t.c, results_t.c, load_points_t.c
        out: dict[str, RepetitionFigures] = {}
        if not run_ids:
            return out
        with self._read() as session:
            for where in self._id_filters(r.id, list(run_ids)):
                for row in session.execute(
                        select(r.id, r.repetition, r.status, res.valid)
                        .outerjoin(results_t, res.run_id == r.id).where(where)):
                    out[row.id] = RepetitionFigures(row.id, row.repetition, row.status,
                                                    row.valid, {})
            for where in self._id_filters(lp.run_id, list(out)):
                for row in session.execute(
                        select(lp.run_id, lp.idx, lp.kind, lp.value,
                               lp.energy_per_output_token_j,
                               lp.energy_per_output_token_net_j).where(where)):
                    out[row.run_id].points[row.idx] = PointFigures(
                        row.kind, row.value, row.energy_per_output_token_j,
                        row.energy_per_output_token_net_j)
        return out
