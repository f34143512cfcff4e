"""Initial schema: sweeps, runs, results and their measurements.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written by hand from the models (autogenerate checked against it: the unit
tests compare the migrated schema with the models on SQLite and PostgreSQL).
Plain SQLAlchemy types only, so this file never changes when the models do.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_STATUSES = "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"
RESULT_STATUSES = "status IN ('succeeded', 'failed')"


def _str(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(), nullable=nullable)


def _int(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def _float(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=nullable)


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.JSON(none_as_null=True), nullable=nullable)


def _child_of_result(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["results.run_id"], ondelete="CASCADE",
                                   name=op.f(f"fk_{table}_run_id_results"))


def _latency_columns() -> list[sa.Column]:
    return [_float(f"{metric}_{stat}_ms")
            for metric in ("ttft", "tpot", "itl", "e2e")
            for stat in ("mean", "p50", "p90", "p99")]


def upgrade() -> None:
    op.create_table(
        "sweeps",
        _str("id"),
        _str("name"),
        _time("created_at"),
        _time("updated_at"),
        sa.Column("spec_toml", sa.Text(), nullable=False),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
        sa.UniqueConstraint("name", name=op.f("uq_sweeps_name")),
    )
    op.create_table(
        "runs",
        _str("id"),
        _str("sweep_id"),
        _int("repetition"),
        _str("model_id"),
        _str("backend"),
        _str("gpu_model"),
        _int("gpu_count"),
        _str("engine_kind"),
        _str("scenario_name"),
        _str("scenario_kind"),
        _int("input_tokens", nullable=True),
        _int("output_tokens"),
        _str("decoding"),
        _str("queue"),
        sa.Column("spec_json", sa.Text(), nullable=False),
        _str("status"),
        _int("attempts"),
        _str("worker", nullable=True),
        _json("gpu_uuids"),
        _time("created_at"),
        _time("queued_at", nullable=True),
        _time("started_at", nullable=True),
        _time("finished_at", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.CheckConstraint(RUN_STATUSES, name=op.f("ck_runs_status")),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweeps.id"], name=op.f("fk_runs_sweep_id_sweeps")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_sweep_id_status", "runs", ["sweep_id", "status"])
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "results",
        _str("run_id"),
        _time("recorded_at"),
        _int("attempt"),
        _str("status"),
        _str("worker"),
        _str("host"),
        _json("gpus_json", nullable=False),
        _str("engine_kind"),
        _str("engine_version", nullable=True),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        _str("energy_sensor"),
        _str("power_sensor", nullable=True),
        _float("sample_period_s"),
        _time("started_at"),
        _time("finished_at"),
        _float("duration_s", nullable=False),
        _float("energy_j"),
        _int("output_tokens", nullable=True),
        _int("steady_output_tokens", nullable=True),
        _float("energy_per_output_token_j"),
        _str("error_kind", nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        _json("log_tail"),
        sa.CheckConstraint(RESULT_STATUSES, name=op.f("ck_results_status")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_results_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_results")),
    )
    op.create_table(
        "load_points",
        _str("run_id"),
        _int("idx"),
        _str("kind"),
        _float("value", nullable=False),
        _float("duration_s", nullable=False),
        _int("num_requests"),
        _int("num_ok"),
        _int("num_failed"),
        _int("input_tokens"),
        _int("output_tokens"),
        _int("steady_output_tokens", nullable=True),
        _float("request_throughput_rps"),
        _float("output_throughput_tps"),
        *_latency_columns(),
        _float("energy_j"),
        _float("energy_per_output_token_j"),
        _float("energy_per_request_j"),
        _float("avg_power_w"),
        _child_of_result("load_points"),
        sa.PrimaryKeyConstraint("run_id", "idx", name=op.f("pk_load_points")),
    )
    op.create_table(
        "energy_windows",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        _str("run_id"),
        _str("name"),
        _int("load_point", nullable=True),
        _float("start_s", nullable=False),
        _float("duration_s", nullable=False),
        _float("energy_j"),
        _json("per_gpu_energy_j"),
        _float("timeline_energy_j"),
        _float("avg_power_w"),
        _float("peak_power_w"),
        _str("null_reason", nullable=True),
        _child_of_result("energy_windows"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_energy_windows")),
    )
    op.create_index("ix_energy_windows_run_id", "energy_windows", ["run_id"])

    op.create_table(
        "requests",
        # SQLite autoincrements only an INTEGER PRIMARY KEY.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False,
                  autoincrement=True),
        _str("run_id"),
        _int("load_point"),
        _int("idx"),
        _float("scheduled_s"),
        _float("sent_s", nullable=False),
        _float("ttft_s"),
        _float("e2e_s"),
        sa.Column("itl_s", sa.LargeBinary(), nullable=True),
        _int("input_tokens", nullable=True),
        _int("output_tokens", nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _child_of_result("requests"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_requests")),
    )
    op.create_index("ix_requests_run_id_load_point", "requests", ["run_id", "load_point"])

    op.create_table(
        "power_traces",
        _str("run_id"),
        _int("gpu_index"),
        _str("gpu_uuid"),
        _str("sensor"),
        _float("sample_period_s", nullable=False),
        _int("n_samples"),
        sa.Column("t_s", sa.LargeBinary(), nullable=True),
        sa.Column("power_w", sa.LargeBinary(), nullable=True),
        _child_of_result("power_traces"),
        sa.PrimaryKeyConstraint("run_id", "gpu_index", name=op.f("pk_power_traces")),
    )


def downgrade() -> None:
    for table in ("power_traces", "requests", "energy_windows", "load_points", "results"):
        op.drop_table(table)
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_index("ix_runs_sweep_id_status", table_name="runs")
    op.drop_table("runs")
    op.drop_table("sweeps")
