"""Where an imported result came from (`results.imported_from`): the export's
manifest digest and when it was exported; NULL for a result this farm's recorder
stored from its own workers.

Revision ID: 0010
Revises: 0009

One nullable column, no index and no server default (see 0003 and 0008).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("imported_from", sa.String(), nullable=True))


def downgrade() -> None:
    # Native DROP COLUMN, not batch mode (see 0003's downgrade).
    op.drop_column("results", "imported_from")
