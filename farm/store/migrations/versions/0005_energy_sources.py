"""Extra energy sources read beside the GPUs (host RAPL, an external meter): each
window's energy per source and null reasons (`energy_windows.sources`, JSON), and
the sources' descriptions with the run (`results.energy_sources_json`, JSON).

Revision ID: 0005
Revises: 0004

Columns only, nullable (older rows and runs without extra sources: NULL), no
index and no server default, so neither PostgreSQL nor SQLite copies a table
(see 0003).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def _json(name: str) -> sa.Column:
    return sa.Column(name, sa.JSON(none_as_null=True), nullable=True)


def _columns() -> dict[str, list[sa.Column]]:
    return {
        "results": [_json("energy_sources_json")],
        "energy_windows": [_json("sources")],
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
