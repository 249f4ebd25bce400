"""notify: notification rules, their events, the debounce and the delivery outbox

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 07:45:00

- ``notify_rule``: rules made on the admin page or through the API (their spec as JSON).
- ``notify_event``: what the producers (ingest, silent-device sweep, sessions) wrote for
  the notification worker, in their own transactions.
- ``notify_state``: problems a rule told of and has not told resolved yet (the debounce).
- ``notify_outbox``: messages to deliver, with their due time, attempts and last error.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

import server.models.base

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = server.models.base.UTCDateTime


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "notify_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _text(64), nullable=False),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("created_by", _text(64), nullable=False),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "notify_event",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("kind", _text(32), nullable=False),
        sa.Column("state", _text(16), nullable=False),
        sa.Column("device_id", _text(63), nullable=False),
        sa.Column("subject", _text(200), nullable=False),
        sa.Column("severity", _text(16), nullable=True),
        sa.Column("message", _text(1024), nullable=False),
        sa.Column("at", _UTC(timezone=True), nullable=False),
        sa.Column("body", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "notify_state",
        sa.Column("rule", _text(64), nullable=False),
        sa.Column("device_id", _text(63), nullable=False),
        sa.Column("subject", _text(200), nullable=False),
        sa.Column("opened_at", _UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rule", "device_id", "subject"),
    )
    op.create_table(
        "notify_outbox",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("rule", _text(64), nullable=False),
        sa.Column("channel", _text(16), nullable=False),
        sa.Column("status", _text(16), nullable=False),
        sa.Column("device_id", _text(63), nullable=False),
        sa.Column("subject", _text(200), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", _UTC(timezone=True), nullable=False),
        sa.Column("lease_until", _UTC(timezone=True), nullable=True),
        sa.Column("last_error", _text(512), nullable=True),
        sa.Column("created_at", _UTC(timezone=True), nullable=False),
        sa.Column("sent_at", _UTC(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notify_outbox_due", "notify_outbox", ["status", "due_at"])
    op.create_index("ix_notify_outbox_rule", "notify_outbox", ["rule"])


def downgrade() -> None:
    op.drop_index("ix_notify_outbox_rule", table_name="notify_outbox")
    op.drop_index("ix_notify_outbox_due", table_name="notify_outbox")
    op.drop_table("notify_outbox")
    op.drop_table("notify_state")
    op.drop_table("notify_event")
    op.drop_table("notify_rule")
