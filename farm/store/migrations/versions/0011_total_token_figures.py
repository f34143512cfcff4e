"""J per total token (input + output), gross and net of idle, on load points; a load
point's input tokens nullable (a load tool's report may not give them: `farmctl
measure`), so an unknown count is NULL, never 0.

Revision ID: 0011
Revises: 0010

Two nullable columns, no server default (see 0003 and 0008); older rows read
NULL: `farmctl results` shows "—" for them, never 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("load_points") as batch:
        batch.add_column(sa.Column("energy_per_total_token_j", sa.Float(), nullable=True))
        batch.add_column(sa.Column("energy_per_total_token_net_j", sa.Float(), nullable=True))
        batch.alter_column("input_tokens", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("load_points") as batch:
        batch.alter_column("input_tokens", existing_type=sa.Integer(), nullable=False)
    # Native DROP COLUMN, not batch mode (see 0003's downgrade).
    op.drop_column("load_points", "energy_per_total_token_net_j")
    op.drop_column("load_points", "energy_per_total_token_j")
