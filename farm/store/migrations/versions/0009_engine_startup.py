"""What the engine's start-up cost and chose (`results.engine_startup_json`, JSON:
EngineStartup's times and KV-cache size) and whether the model's weights were
random (`results.model_weights`: "random" or NULL).

Revision ID: 0009
Revises: 0008

Nullable columns (older rows: NULL, not known), no index and no server default,
so neither PostgreSQL nor SQLite copies the table (see 0003).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:
    return [sa.Column("model_weights", sa.String(), nullable=True),
            sa.Column("engine_startup_json", sa.JSON(none_as_null=True), nullable=True)]


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        for column in _columns():
            batch.add_column(column)


def downgrade() -> None:
    # Native DROP COLUMN, not batch mode (see 0003's downgrade).
    for column in reversed(_columns()):
        op.drop_column("results", column.name)
