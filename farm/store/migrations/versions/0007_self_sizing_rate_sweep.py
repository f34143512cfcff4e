"""Self-sizing steady windows and rate sweeps (issue 13 items 1 and 4): per load
point the passes a batch took over its prompts, the sending added to a server
load point, the rate actually offered in the steady window, idle power's share
per request, and for a rate sweep the stop rule a point met and the knee.

Revision ID: 0007
Revises: 0006

Columns only, all nullable (older rows: not measured), no index and no server
default, so neither PostgreSQL nor SQLite copies the table (see 0003).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:
    return [
        sa.Column("passes", sa.Integer(), nullable=True),
        sa.Column("steady_extended_s", sa.Float(), nullable=True),
        sa.Column("offered_rps", sa.Float(), nullable=True),
        sa.Column("idle_energy_per_request_j", sa.Float(), nullable=True),
        sa.Column("saturation", sa.String(), nullable=True),
        sa.Column("knee", sa.Boolean(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("load_points") as batch:
        for column in _columns():
            batch.add_column(column)


def downgrade() -> None:
    # Native DROP COLUMN, not batch mode (see 0003's downgrade).
    for column in reversed(_columns()):
        op.drop_column("load_points", column.name)
