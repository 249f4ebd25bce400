"""operator heartbeat: when the operator's client last said it still uses a session

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 08:00:00

- ``remote_session.operator_seen_at``: the last heartbeat of the operator's client
  (``fieldlink exec|connect|ssh``); a session without one for
  ``operator_heartbeat_timeout_s`` is closed (``operator_gone``). ``NULL``: no client
  keeps it alive (the console, ``fieldlink session open``), never closed for that.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.models.base

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("remote_session") as batch:
        batch.add_column(
            sa.Column(
                "operator_seen_at", server.models.base.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("remote_session") as batch:
        batch.drop_column("operator_seen_at")
