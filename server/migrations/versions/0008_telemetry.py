"""telemetry: 64-bit sequence numbers and counters, timestamps the server did not trust

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-06 01:45:00.000000

- ``telemetry_sample.seq``, ``device.last_seq`` and the device's telemetry
  counters become 64-bit on PostgreSQL (``seq`` is ``0..2^63-1`` on the wire; a
  ``seq`` past 2^31 used to fail its whole batch). SQLite's INTEGER is 64-bit already.
- ``telemetry_sample.ts_untrusted``: the device's ``ts`` was implausibly far from
  the server's clock, and ``ts`` holds the server's receive time instead.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WIDENED = (
    ("telemetry_sample", "seq", False),
    ("device", "last_seq", True),
    ("device", "telemetry_received", False),
    ("device", "telemetry_missing", False),
    ("device", "telemetry_rejected", False),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column, nullable in _WIDENED:
            op.alter_column(
                table,
                column,
                existing_type=sa.Integer(),
                type_=sa.BigInteger(),
                existing_nullable=nullable,
            )
    with op.batch_alter_table("telemetry_sample") as batch_op:
        batch_op.add_column(
            sa.Column("ts_untrusted", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("telemetry_sample") as batch_op:
        batch_op.drop_column("ts_untrusted")
    if op.get_bind().dialect.name == "postgresql":
        for table, column, nullable in _WIDENED:
            op.alter_column(
                table,
                column,
                existing_type=sa.BigInteger(),
                type_=sa.Integer(),
                existing_nullable=nullable,
            )
