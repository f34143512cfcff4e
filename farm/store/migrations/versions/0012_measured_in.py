"""Where a run was measured (`results.measured_in`): "run process" (a process of the
run's own, off the worker's interpreter lock) or "worker thread"; NULL for results
stored before it was recorded.

Revision ID: 0012
Revises: 0011

One nullable column, no index and no server default (see 0003 and 0008).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("measured_in", sa.String(), nullable=True))


def downgrade() -> None:
    # Native DROP COLUMN, not batch mode (see 0003's downgrade).
    op.drop_column("results", "measured_in")
