"""Goodput and load-generator figures of load points: the SLO limits they were
counted under, good requests, SLO attainment, goodput, whether the p99s met the
limits; lateness (sent − scheduled) statistics, unsent arrivals, requests in
flight at most, and the engine's notes.

Revision ID: 0004
Revises: 0003

Columns only, all nullable (older rows: not measured), no index and no
server default, so neither PostgreSQL nor SQLite copies the table (see 0003).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def _float(name: str) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=True)


def _int(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=True)


def _columns() -> dict[str, list[sa.Column]]:
    return {
        "load_points": [
            _float("slo_ttft_ms"),
            _float("slo_tpot_ms"),
            _int("good_requests"),
            _float("slo_attainment"),
            _float("goodput_rps"),
            sa.Column("slo_p99_met", sa.Boolean(), nullable=True),
            _float("lateness_mean_ms"),
            _float("lateness_p50_ms"),
            _float("lateness_p90_ms"),
            _float("lateness_p99_ms"),
            _int("unsent_requests"),
            _int("max_in_flight"),
            sa.Column("notes", sa.JSON(none_as_null=True), nullable=True),
        ],
    }


def upgrade() -> None:
    for table, columns in _columns().items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.add_column(column)


def downgrade() -> None:
    # Native DROP COLUMN, not batch mode (see 0003's downgrade).
    for table, columns in reversed(_columns().items()):
        for column in reversed(columns):
            op.drop_column(table, column.name)
