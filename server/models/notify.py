"""Notifications: rules kept in the database, the events waiting for them, what was
told (the debounce), and the outbox of messages to deliver (:mod:`server.notify`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.models.base import BIGINT, JSONType, utc_column
from shared.ids import utcnow


class NotifyRuleRecord(SQLModel, table=True):
    """A rule made on the admin page or through the API (``[[server.notify]]`` rules
    live in ``server.toml``); ``spec`` is a :class:`server.notify.rules.NotifyRule`, and a
    webhook rule's signing secret encrypted under ``secret_encrypted``
    (:data:`server.notify.store.SEALED_SECRET`)."""

    __tablename__ = "notify_rule"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    spec: dict[str, Any] = Field(sa_column=sa.Column(JSONType, nullable=False))
    created_by: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))


class NotifyEvent(SQLModel, table=True):
    """Something a rule may want to hear of, written by its producer in the producer's
    own transaction (the ingest's batch, the silent-device sweep, a session's move) and
    consumed by the notification worker."""

    __tablename__ = "notify_event"

    id: int | None = Field(default=None, sa_column=sa.Column(BIGINT, primary_key=True))
    #: ``fault``, ``offline``, ``consent`` (:data:`server.notify.rules.EVENT_KINDS`).
    kind: str = Field(max_length=32)
    #: ``problem``, ``resolved`` or ``event`` (a one-off: nothing to resolve).
    state: str = Field(max_length=16)
    device_id: str = Field(max_length=63)
    #: What the debounce keys on besides the device: a fault's code, ``offline``, a session.
    subject: str = Field(max_length=200)
    severity: str | None = Field(default=None, max_length=16)
    message: str = Field(default="", max_length=1024)
    at: datetime = Field(sa_column=utc_column(nullable=False))
    body: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(JSONType))


class NotifyState(SQLModel, table=True):
    """A problem a rule told of and whose resolution it has not told yet (the debounce)."""

    __tablename__ = "notify_state"

    rule: str = Field(primary_key=True, max_length=64)
    device_id: str = Field(primary_key=True, max_length=63)
    subject: str = Field(primary_key=True, max_length=200)
    opened_at: datetime = Field(sa_column=utc_column(nullable=False))


class NotifyOutbox(SQLModel, table=True):
    """One message to one channel of one rule, until it is delivered (or given up)."""

    __tablename__ = "notify_outbox"
    __table_args__ = (sa.Index("ix_notify_outbox_due", "status", "due_at"),)

    id: int | None = Field(default=None, sa_column=sa.Column(BIGINT, primary_key=True))
    rule: str = Field(max_length=64, index=True)
    #: ``webhook`` or ``email``.
    channel: str = Field(max_length=16)
    #: ``queued``, ``sent``, ``dead`` (given up), ``cancelled`` (resolved within ``hold_s``).
    status: str = Field(default="queued", max_length=16)
    #: The debounce key, to cancel a held problem message when it resolves in time.
    device_id: str = Field(max_length=63)
    subject: str = Field(max_length=200)
    payload: dict[str, Any] = Field(sa_column=sa.Column(JSONType, nullable=False))
    attempts: int = 0
    due_at: datetime = Field(sa_column=utc_column(nullable=False))
    #: Held by a worker until then (a worker that dies mid-delivery lets it go).
    lease_until: datetime | None = Field(default=None, sa_column=utc_column())
    last_error: str | None = Field(default=None, max_length=512)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=utc_column())
