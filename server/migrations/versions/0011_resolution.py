"""resolution notes, and the restore time a cleared fault proposes

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-06 04:30:00.000000

- ``incident.resolution_note``: what was done and which parts were used (the
  fault-case knowledge base's fixes, in and out of the incident CSV).
- ``incident.restored_at_proposed``: an alert-opened incident's fault cleared on
  the device at this time; the desk confirms it as ``restored_at`` when closing.
- ``ix_incident_error_code_closed_at``: similar past cases of one error code.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from server.models.base import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "resolution_note", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=True
            )
        )
        batch_op.add_column(sa.Column("restored_at_proposed", UTCDateTime(), nullable=True))
        batch_op.create_index(
            "ix_incident_error_code_closed_at", ["error_code", "closed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.drop_index("ix_incident_error_code_closed_at")
        batch_op.drop_column("restored_at_proposed")
        batch_op.drop_column("resolution_note")
