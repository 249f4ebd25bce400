"""The tamper-evident audit log and the login-throttle state.

Each audit entry carries the SHA-256 of its own fields and of the entry
before it (``prev_hash``), so editing, deleting or reordering rows breaks the
chain where it happened. ``audit_head`` is one row that names the newest
entry: every append updates it first, which serializes appends (a row lock on
PostgreSQL, the write lock on SQLite) and lets verification notice a log cut
short at its end.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import Field, SQLModel

from server.models.base import utc_column
from shared.ids import utcnow

#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64


class AuditEntry(SQLModel, table=True):
    """One audited action: who did what to what, when and from where.

    ``details`` is the canonical JSON text of a dict (kept as text so that the
    bytes hashed are the bytes stored, on every database).
    """

    __tablename__ = "audit_entry"

    id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=False,
        ),
    )
    ts: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False, index=True))
    actor: str = Field(max_length=128, index=True)
    action: str = Field(max_length=64, index=True)
    target: str | None = Field(default=None, max_length=256, index=True)
    details: str = Field(default="{}", sa_column=sa.Column(sa.Text(), nullable=False))
    source_ip: str | None = Field(default=None, max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class AuditHead(SQLModel, table=True):
    """The newest entry of the chain: its id (``seq``) and hash. There is one row, id 1."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(
        default=0,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    )
    head_hash: str = Field(default=GENESIS_HASH, max_length=64)


class AuditEntryPublic(SQLModel):
    """An audit entry as the API shows it."""

    id: int
    ts: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    source_ip: str | None
    prev_hash: str
    hash: str

    @field_validator("details", mode="before")
    @classmethod
    def _parse_details(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


class AuditEntriesPublic(SQLModel):
    """A page of audit entries and how many match in all."""

    items: list[AuditEntryPublic]
    count: int


class LoginThrottle(SQLModel, table=True):
    """Failed logins counted per key (``user:NAME`` or ``ip:ADDRESS``) and the lock they caused.

    Kept in the database so that several server processes share it.
    """

    __tablename__ = "login_throttle"

    key: str = Field(primary_key=True, max_length=200)
    failures: int = 0
    window_started_at: datetime = Field(
        default_factory=utcnow, sa_column=utc_column(nullable=False)
    )
    locked_until: datetime | None = Field(default=None, sa_column=utc_column())
