"""escalation: an incident's assignee, support tier and handover note

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 05:10:00.000000

- ``incident.assignee``: the user name the case is assigned to (indexed: "my
  incidents" on the desk).
- ``incident.tier``: 1 call center, 2 remote specialist, 3 field (existing
  incidents: 1).
- ``incident.handover_note``: the latest escalation's note (each one is also in
  the audit log).

On SQLite the columns are added in place (``ALTER TABLE ... ADD COLUMN``, no
"move and copy"), so the full-text triggers of 0011 on ``incident`` stay.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "incident",
        sa.Column("assignee", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    )
    op.add_column("incident", sa.Column("tier", sa.Integer(), server_default="1", nullable=False))
    op.add_column(
        "incident",
        sa.Column("handover_note", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    )
    op.create_index("ix_incident_assignee", "incident", ["assignee"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_incident_assignee", table_name="incident")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite >= 3.35 drops a column in place; the 0011 triggers stay.
        for name in ("handover_note", "tier", "assignee"):
            op.execute(f"ALTER TABLE incident DROP COLUMN {name}")
        return
    op.drop_column("incident", "handover_note")
    op.drop_column("incident", "tier")
    op.drop_column("incident", "assignee")
