"""Validity, preflight, idle baseline and host energy of a run; net and carbon
figures of load points; energy-counter agreement of windows; the optional power
trace series (memory power, temperature, SM clock, throttle reasons).

Revision ID: 0003
Revises: 0002

Columns only, all nullable but energy_windows.disagrees (false for older rows),
and no new index (results.valid is two-valued: not worth one). Adding them never
copies a table: PostgreSQL and SQLite both add a column with a constant default
in place. The default is the plain string '0' (false to both): an SQL
expression default would make Alembic's batch mode rebuild the table on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def _float(name: str) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=True)


def _str(name: str) -> sa.Column:
    return sa.Column(name, sa.String(), nullable=True)


def _blob(name: str) -> sa.Column:
    return sa.Column(name, sa.LargeBinary(), nullable=True)


def _columns() -> dict[str, list[sa.Column]]:
    return {
        "results": [
            sa.Column("valid", sa.Boolean(), nullable=True),
            sa.Column("validity_json", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("invalid_reasons", sa.Text(), nullable=True),
            sa.Column("preflight_json", sa.JSON(none_as_null=True), nullable=True),
            sa.Column("cooled", sa.Boolean(), nullable=True),
            _float("idle_power_w"),
            _float("idle_ctx_power_w"),
            _str("host_tracker"),
            _float("host_duration_s"),
            _float("cpu_energy_j"),
            _str("cpu_method"),
            _float("ram_energy_j"),
            _str("ram_method"),
            _float("host_gpu_energy_j"),
            _float("emissions_g"),
            _float("carbon_intensity_g_per_kwh"),
            _str("region"),
            sa.Column("host_note", sa.Text(), nullable=True),
        ],
        "load_points": [
            _float("output_tokens_per_j"),
            _float("peak_power_w"),
            _float("energy_net_j"),
            _float("energy_per_output_token_net_j"),
            _float("energy_per_request_net_j"),
            _float("output_tokens_per_j_net"),
            _float("avg_power_net_w"),
            _float("gco2e_per_1k_tokens"),
            _float("gco2e_per_1k_tokens_net"),
        ],
        "energy_windows": [
            _float("agreement"),
            sa.Column("disagrees", sa.Boolean(), nullable=False, server_default="0"),
        ],
        "power_traces": [
            _blob("memory_power_w"),
            _blob("temperature_c"),
            _blob("sm_clock_mhz"),
            _blob("throttle_reasons"),
        ],
    }


def upgrade() -> None:
    for table, columns in _columns().items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.add_column(column)


def downgrade() -> None:
    # Not batch mode: on SQLite it would copy `results` and drop the original,
    # and with foreign keys on that drop cascades to every child table. The
    # native ALTER TABLE ... DROP COLUMN (SQLite >= 3.35) keeps the rows; none
    # of these columns is indexed or constrained, as it requires.
    for table, columns in reversed(_columns().items()):
        for column in reversed(columns):
            op.drop_column(table, column.name)
