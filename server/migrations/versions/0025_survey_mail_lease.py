"""survey mail lease: which server process is e-mailing a survey, until when

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 12:30:00

- ``survey.mail_lease_until``: set by the survey-mail job of the process that sends the
  survey (or its reminder) just before it talks to the relay, so that another process's
  job skips it; cleared when the send failed; a lease that runs out (the process died)
  lets another job send it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.models.base

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("survey") as batch:
        batch.add_column(
            sa.Column(
                "mail_lease_until", server.models.base.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("survey") as batch:
        batch.drop_column("mail_lease_until")
