"""surveys: a customer survey after each closed incident, follow-ups of low scores

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 07:31:32

- ``survey``: one per closed incident (when made): the seed its link's token is derived
  from and the token's SHA-256 (never the token), expiry, whom it asks (contact, language),
  the touchpoints of the case, when it was sent and reminded, and the answer (recommend
  0-10, satisfaction 1-5 per touchpoint, comment); ``demo`` marks seeded demo answers.
- ``followup``: a call back owed for a low answer: due time, and when, by whom and how
  it was closed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from server.models.base import BIGINT, UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "survey",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("incident_id", BIGINT, nullable=False),
        sa.Column("seed", _text(64), nullable=False),
        sa.Column("token_hash", _text(64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("customer_number", _text(32), nullable=True),
        sa.Column("device_id", _text(63), nullable=False),
        sa.Column("contact_key", _text(254), nullable=True),
        sa.Column("contact_name", _text(256), nullable=True),
        sa.Column("contact_email", _text(254), nullable=True),
        sa.Column("language", _text(8), nullable=False),
        sa.Column("touchpoints", _text(64), nullable=False),
        sa.Column("sent_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("answered_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("recommend", sa.Integer(), nullable=True),
        sa.Column("csat_call_center", sa.Integer(), nullable=True),
        sa.Column("csat_remote_fix", sa.Integer(), nullable=True),
        sa.Column("csat_on_site", sa.Integer(), nullable=True),
        sa.Column("comment", _text(4000), nullable=True),
        sa.Column("demo", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incident.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_survey_answered_at", "survey", ["answered_at"])
    op.create_index("ix_survey_contact_created", "survey", ["contact_key", "created_at"])
    op.create_index("ix_survey_customer_number", "survey", ["customer_number"])
    op.create_index("ix_survey_device_id", "survey", ["device_id"])
    op.create_table(
        "followup",
        sa.Column("id", BIGINT, autoincrement=True, nullable=False),
        sa.Column("survey_id", BIGINT, nullable=False),
        sa.Column("incident_id", BIGINT, nullable=False),
        sa.Column("customer_number", _text(32), nullable=True),
        sa.Column("device_id", _text(63), nullable=False),
        sa.Column("reason", _text(256), nullable=False),
        sa.Column("opened_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_by", _text(64), nullable=True),
        sa.Column("note", _text(2000), nullable=True),
        sa.ForeignKeyConstraint(["survey_id"], ["survey.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("survey_id"),
    )
    op.create_index("ix_followup_closed_at", "followup", ["closed_at"])
    op.create_index("ix_followup_customer_number", "followup", ["customer_number"])
    op.create_index("ix_followup_device_id", "followup", ["device_id"])
    op.create_index("ix_followup_due_at", "followup", ["due_at"])
    op.create_index("ix_followup_incident_id", "followup", ["incident_id"])


def downgrade() -> None:
    op.drop_table("followup")
    op.drop_table("survey")
