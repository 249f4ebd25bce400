"""The site's approval of a session from the web: the request bodies and one-time links.

A :class:`SessionApprovalLink` lets a site contact with no account approve or deny
one session awaiting consent: its token is shown once (in the link) and stored
only as its SHA-256 hash; it expires, serves once, and names only its session.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from server.models.base import utc_column
from shared.ids import utcnow
from shared.wire import MAX_REASON_LENGTH

#: The longest a session may be approved for from the web (the server's cap applies too).
MAX_APPROVED_DURATION_S = 24 * 3600.0


class SessionApprovalLink(SQLModel, table=True):
    """A one-time link for a site contact to approve or deny one session."""

    __tablename__ = "session_approval_link"

    id: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(foreign_key="remote_session.id", max_length=40, index=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    expires_at: datetime = Field(sa_column=utc_column(nullable=False))
    #: Set once, when the link is used (approve or deny); the link serves no more.
    used_at: datetime | None = Field(default=None, sa_column=utc_column())
    verdict: str | None = Field(default=None, max_length=8)


class SessionApprove(SQLModel):
    """The body of ``POST /api/v1/sessions/{id}/approve`` (optional: narrow the session)."""

    services: list[str] | None = Field(default=None, max_length=16)
    max_duration_s: float | None = Field(default=None, gt=0, le=MAX_APPROVED_DURATION_S)


class SessionDeny(SQLModel):
    """The body of ``POST /api/v1/sessions/{id}/deny``."""

    reason: str = Field(default="", max_length=MAX_REASON_LENGTH)


class ApprovalLinkCreate(SQLModel):
    """The body of ``POST /api/v1/sessions/{id}/approval-link`` (optional)."""

    #: How long the link lives (never past the session's own window to be approved).
    ttl_s: int | None = Field(default=None, ge=1, le=86400)


class ApprovalLinkPublic(SQLModel):
    """A new approval link: its URL carries the token, shown this once."""

    session_id: str
    url: str
    expires_at: datetime
