"""followup overdue: when an open follow-up was found overdue (the notification rules told)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 09:00:00

- ``followup.overdue_at``: set once, when the notification worker finds the follow-up
  past its due time and writes a ``followup`` event for the rules.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.models.base

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("followup") as batch:
        batch.add_column(
            sa.Column("overdue_at", server.models.base.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("followup") as batch:
        batch.drop_column("overdue_at")
