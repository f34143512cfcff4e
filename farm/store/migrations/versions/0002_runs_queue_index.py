"""Index runs by (sweep, queue, status): `farmctl status SWEEP` counts per queue
without scanning the runs table (55 ms → 3 ms at 100,000 runs, docs/performance.md).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_sweep_id_queue_status", "runs", ["sweep_id", "queue", "status"])


def downgrade() -> None:
    op.drop_index("ix_runs_sweep_id_queue_status", table_name="runs")
