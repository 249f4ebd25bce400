"""approval: the site's approval of a session from the web, and one-time approval links

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 07:40:00

- ``remote_session.approved_by``, ``approved_at``, ``approved_via``: who let a session
  awaiting consent go ahead, when, and where (``local``, ``web`` or ``link``).
- ``session_approval_link``: one-time approval links for a site contact with no
  account (the token stored only as its SHA-256 hash; expiring, single use).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import server.models.base

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("remote_session") as batch:
        batch.add_column(
            sa.Column("approved_by", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
        batch.add_column(
            sa.Column("approved_at", server.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("approved_via", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True)
        )
    op.create_table(
        "session_approval_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", server.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", server.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", server.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("verdict", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["remote_session.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("session_approval_link") as batch:
        batch.create_index(
            batch.f("ix_session_approval_link_session_id"), ["session_id"], unique=False
        )
        batch.create_index(
            batch.f("ix_session_approval_link_token_hash"), ["token_hash"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("session_approval_link") as batch:
        batch.drop_index(batch.f("ix_session_approval_link_token_hash"))
        batch.drop_index(batch.f("ix_session_approval_link_session_id"))
    op.drop_table("session_approval_link")
    with op.batch_alter_table("remote_session") as batch:
        batch.drop_column("approved_via")
        batch.drop_column("approved_at")
        batch.drop_column("approved_by")
