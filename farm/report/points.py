"""A sweep's measured figures as run points: one per (run, load point).

A *run point* is one load point of one run. Run points that differ only in
their repetition form one *configuration point* (`config_key`): the unit
reports average over, with a confidence interval from the repetitions.

Figures are copied from the store as they are: None stays None (not
measured), and every point keeps its run's status, validity verdict and
reasons, so a report can say what it leaves out and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from farm.errors import ExitCode, FarmError
from farm.output import load_label, tuning_label
from farm.store import Store
from farm.store.repository import RESULT_POINT_FIGURES
from farm_contract.runspec import Scalar

# Figures a run point carries (units in the names), straight from the store's rows:
# every load point figure result_rows carries (derived from LoadPointResult's
# fields), the run's idle power and what its GPUs read back of the tuning it asked
# for (farm.store.mapping.tuning_columns).
FIGURES = (*RESULT_POINT_FIGURES, "idle_power_w", "idle_ctx_power_w",
           "applied_power_limit_w", "applied_sm_clock_mhz", "tuning_refused")


class SweepNotFound(FarmError, LookupError):
    """No sweep of that name or id in the store (exit 5)."""

    exit_code = ExitCode.NOT_FOUND


def args_text(args: Iterable[tuple[str, Any]]) -> str:
    """Engine arguments as "key=value, ..." (empty when there are none)."""
    return ", ".join(f"{k}={v}" for k, v in args)


@dataclass(frozen=True)
class RunPoint:
    """One run of a sweep as the report reads it: its configuration, status and figures."""
    run_id: str
    sweep: str
    repetition: int
    model: str
    backend: str
    gpu_model: str
    gpu_count: int
    engine: str
    engine_version: str | None
    engine_args: tuple[tuple[str, Scalar], ...]
    scenario: str
    scenario_kind: str
    load_kind: str | None            # concurrency | request_rate | batch; None: no result
    load_value: float | None
    input_tokens: int | None
    output_tokens: int
    decoding: str
    status: str
    simulated: bool
    valid: bool | None               # None: no verdict (failed or not run)
    invalid_reasons: str | None
    error: str | None
    # The GPU tuning the run asked for (None: the GPUs were left as they were):
    # part of its configuration, as a GPU model is.
    power_limit_w: float | str | None = None     # "default": the GPU's own, asked for
    sm_clock_mhz: int | str | None = None
    figures: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def get(self, figure: str) -> Any:
        """The value of `figure` for this run; None when it was not measured."""
        return self.figures.get(figure)

    @property
    def measured(self) -> bool:
        """Succeeded and has a load point: its figures can be plotted."""
        return self.status == "succeeded" and self.load_kind is not None

    @property
    def usable(self) -> bool:
        """Measured and passed its validity checks."""
        return self.measured and self.valid is True

    @property
    def config_key(self) -> tuple:
        """Everything that defines the point except the repetition."""
        return (self.model, self.backend, self.gpu_model, self.gpu_count, *self.tuning,
                self.engine, self.engine_args, self.scenario, self.load_kind, self.load_value,
                self.input_tokens, self.output_tokens, self.decoding)

    @property
    def tuning(self) -> tuple[float | None, int | None]:
        """(power limit W, SM clock MHz) the run asked for; None where it set none."""
        return (self.power_limit_w, self.sm_clock_mhz)

    @property
    def tuning_label(self) -> str:
        """The tuning as a label: "300 W cap", "SM 1200 MHz", both joined by " · "; ""
        when the run set none."""
        return tuning_label(self.power_limit_w, self.sm_clock_mhz)

    @property
    def gpu_label(self) -> str:
        """The GPU as a label: "H200", or "2× H200" for a run on several."""
        return self.gpu_model if self.gpu_count == 1 else f"{self.gpu_count}× {self.gpu_model}"

    @property
    def args_label(self) -> str:
        """The engine arguments as "key=value, ..." (empty when there are none)."""
        return args_text(self.engine_args)

    @property
    def load_label(self) -> str:
        """The load point as a label ("c=8", "2 req/s", "batch 16"; "the command" for a
        `farmctl measure` run); "—" when there is none."""
        if self.engine == "measure":
            return "the command"
        return load_label(self.load_kind, self.load_value)


def points_from_rows(rows: Iterable[dict[str, Any]]) -> list[RunPoint]:
    """A RunPoint for each of the store's result rows (Store.result_rows)."""
    points = []
    for row in rows:
        args = tuple(sorted((row["engine_args"] or {}).items()))
        points.append(RunPoint(
            run_id=row["run_id"], sweep=row["sweep"], repetition=row["repetition"],
            model=row["model"], backend=row["backend"], gpu_model=row["gpu_model"],
            gpu_count=row["gpu_count"], engine=row["engine"],
            engine_version=row["engine_version"], engine_args=args,
            scenario=row["scenario"], scenario_kind=row["scenario_kind"],
            load_kind=row["load_kind"], load_value=row["load_value"],
            input_tokens=row["input_tokens"], output_tokens=row["output_tokens"],
            decoding=row["decoding"], status=row["status"], simulated=row["simulated"],
            valid=row["valid"], invalid_reasons=row["invalid_reasons"], error=row["error"],
            power_limit_w=row.get("power_limit_w"), sm_clock_mhz=row.get("sm_clock_mhz"),
            figures={name: row.get(name) for name in FIGURES}))
    return points


def load_run_points(store: Store, sweep: str) -> tuple[str, list[RunPoint]]:
    """(sweep name, its run points) for a sweep given by name or id."""
    row = store.find_sweep(sweep)
    if row is None:
        raise SweepNotFound(f"no sweep named {sweep!r} in the store")
    return row.name, points_from_rows(store.result_rows(row.id))
