"""gateway: devices watched over the network by a site gateway, and their inventory

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 04:30:00.000000

- ``device.via``: the device id of the site gateway that watches this device over
  the network (SNMP), or NULL for a device with its own agent. Indexed; the
  registry checks it (no database foreign key, so that a device row can be
  removed or renamed by an operator without a cascade through its watched ones).
- ``device.inventory``: what the equipment reports about itself (sysDescr, serial,
  model, firmware), as reported.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device") as batch_op:
        batch_op.add_column(
            sa.Column("via", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "inventory", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
            )
        )
        batch_op.create_index(batch_op.f("ix_device_via"), ["via"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("device") as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_via"))
        batch_op.drop_column("inventory")
        batch_op.drop_column("via")
