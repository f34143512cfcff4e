"""How each energy window's counters were read at its edges
(`energy_windows.edges`): "read" when the window opened and closed, "tick" just
after each counter moved (the idle baselines; workers.power.Meter `align`).

Revision ID: 0008
Revises: 0007

One nullable column (older rows: NULL, not said), no index and no server default,
so neither PostgreSQL nor SQLite copies the table (see 0003).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("energy_windows") as batch:
        batch.add_column(sa.Column("edges", sa.String(), nullable=True))


def downgrade() -> None:
    # Native DROP COLUMN, not batch mode (see 0003's downgrade).
    op.drop_column("energy_windows", "edges")
