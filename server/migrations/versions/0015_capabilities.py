"""capabilities: what an agent's birth announced (``device.capabilities``)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 06:00:00

- ``device.capabilities``: the capabilities of the agent's newest own birth, sorted and
  comma-separated (``via-sessions``: a site gateway that runs sessions to the devices it
  watches); a session to a watched device needs its gateway's.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.add_column(
            sa.Column("capabilities", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.drop_column("capabilities")
