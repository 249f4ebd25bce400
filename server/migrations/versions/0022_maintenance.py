"""maintenance: maintenance windows per device, customer or site

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 08:00:00

- ``maintenance_window``: one-off or recurring (RFC 5545 RRULE in the window's IANA
  time zone) windows during which faults and offline states open no incident and
  send no notification; optionally pre-approving the sessions opened in them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import server.models.base

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "maintenance_window",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=63), nullable=True),
        sa.Column("customer_number", sa.String(length=32), nullable=True),
        sa.Column("site", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("starts_at", server.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("rrule", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("preapprove_sessions", sa.Boolean(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", server.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_number"], ["customer.number"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["device_id"], ["device.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("maintenance_window", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_maintenance_window_customer_number"), ["customer_number"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_maintenance_window_device_id"), ["device_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("maintenance_window", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_maintenance_window_device_id"))
        batch_op.drop_index(batch_op.f("ix_maintenance_window_customer_number"))
    op.drop_table("maintenance_window")
