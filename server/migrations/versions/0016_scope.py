"""scope: users limited to customers and regions; the ``site`` role

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 08:00:00

- ``user.customers``, ``user.regions``: the user's scope (customer numbers, regions),
  sorted and comma-separated; ``NULL``: no limit of that kind. A ``site`` user has
  at least one customer (checked by the server, not the schema).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user") as batch:
        batch.add_column(
            sa.Column("customers", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True)
        )
        batch.add_column(
            sa.Column("regions", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("user") as batch:
        batch.drop_column("regions")
        batch.drop_column("customers")
