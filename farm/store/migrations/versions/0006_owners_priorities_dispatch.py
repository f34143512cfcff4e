"""Owners, priorities and dispatch (issue 12 item 3): `sweeps.owner` and
`sweeps.priority`, `runs.dispatched_at` (NULL = recorded as queued but not yet
on a broker queue: the dispatcher, farm/dispatch.py, sends it), and an index on
runs (queue, status, dispatched_at) for the dispatcher's per-queue reads.

Revision ID: 0006
Revises: 0005

Columns only (see 0003), with constant server defaults for the two NOT NULL
sweep columns, which both PostgreSQL (11+) and SQLite add without copying the
table. Runs an older farm recorded as queued or running were sent to their
queues at enqueue: they are marked dispatched at their queue time, so the
dispatcher does not send them a second time.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

INDEX = "ix_runs_queue_status_dispatched_at"


def upgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("owner", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE runs SET dispatched_at = COALESCE(queued_at, created_at) "
               "WHERE status IN ('queued', 'running')")
    op.create_index(INDEX, "runs", ["queue", "status", "dispatched_at"])


def downgrade() -> None:
    # Native DROP COLUMN, not batch mode (see 0003's downgrade).
    op.drop_index(INDEX, table_name="runs")
    op.drop_column("runs", "dispatched_at")
    op.drop_column("sweeps", "priority")
    op.drop_column("sweeps", "owner")
