"""Maintenance windows: when a device, a customer's fleet or one of its sites is being worked on.

During a window a device's faults and offline states are still recorded, but they
open no incident and send no notification; a window may also pre-approve the remote
sessions opened during it (the site's consent given in advance). A window is one-off
(``starts_at`` for ``duration_minutes``) or recurring: an RFC 5545 ``RRULE`` read in
the window's IANA time zone, so that "every Sunday 02:00-04:00" stays 02:00 local
across daylight-saving changes. See :mod:`server.maintenance.schedule`.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import field_validator, model_validator
from sqlmodel import Field, SQLModel

from server.models.base import utc_column
from shared.ids import check_device_id, utcnow

#: The longest window: 31 days.
DURATION_MAX_MINUTES = 31 * 24 * 60
RRULE_MAX = 256
REASON_MAX = 500
_BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class MaintenanceWindow(SQLModel, table=True):
    """One window, for one device, one customer's devices, or one site of a customer."""

    __tablename__ = "maintenance_window"

    id: int | None = Field(
        default=None, sa_column=sa.Column(_BIGINT_PK, primary_key=True, autoincrement=True)
    )
    device_id: str | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.String(63), sa.ForeignKey("device.id", ondelete="CASCADE"), index=True
        ),
    )
    customer_number: str | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.String(32), sa.ForeignKey("customer.number", ondelete="CASCADE"), index=True
        ),
    )
    #: With ``customer_number``: only the devices at this site (``device.site``).
    site: str | None = Field(default=None, max_length=256)
    #: The first occurrence's start (UTC); its wall-clock time in ``timezone`` anchors the rule.
    starts_at: datetime = Field(sa_column=utc_column(nullable=False))
    duration_minutes: int
    #: An RFC 5545 recurrence rule without ``DTSTART`` (``FREQ=WEEKLY;BYDAY=SU``); ``None``: once.
    rrule: str | None = Field(default=None, max_length=RRULE_MAX)
    #: The IANA time zone the rule's wall-clock times are read in.
    timezone: str = Field(default="UTC", max_length=64)
    reason: str = Field(default="", max_length=REASON_MAX)
    #: Sessions opened during the window need no further consent.
    preapprove_sessions: bool = False
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))


class MaintenanceWindowCreate(SQLModel):
    """Body of ``POST /api/v1/maintenance-windows``.

    ``start`` without an offset is a wall-clock time in ``timezone``.
    """

    device_id: str | None = Field(default=None, max_length=63)
    customer_number: str | None = Field(
        default=None, max_length=32, schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$"}
    )
    site: str | None = Field(default=None, min_length=1, max_length=256)
    start: datetime
    duration_minutes: int = Field(ge=1, le=DURATION_MAX_MINUTES)
    rrule: str | None = Field(default=None, min_length=1, max_length=RRULE_MAX)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    reason: str = Field(default="", max_length=REASON_MAX)
    preapprove_sessions: bool = False

    @field_validator("device_id")
    @classmethod
    def _valid_device(cls, value: str | None) -> str | None:
        return check_device_id(value) if value is not None else None

    @field_validator("reason", "site", "rrule")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        if value is not None and any(ord(ch) < 32 for ch in value):
            msg = "control characters are not allowed"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _one_target(self) -> MaintenanceWindowCreate:
        if (self.device_id is None) == (self.customer_number is None):
            msg = "give either device_id or customer_number (with an optional site)"
            raise ValueError(msg)
        if self.site is not None and self.customer_number is None:
            msg = "site needs customer_number"
            raise ValueError(msg)
        return self


class MaintenanceWindowPublic(SQLModel):
    """A window as the API shows it, with its next occurrences."""

    id: int
    device_id: str | None
    customer_number: str | None
    site: str | None
    starts_at: datetime
    duration_minutes: int
    rrule: str | None
    timezone: str
    reason: str
    preapprove_sessions: bool
    created_by: str
    created_at: datetime
    #: The occurrence in progress, if any: ``[start, end]``.
    active: list[datetime] | None = None
    #: The next occurrences' starts (at most five, within a year).
    next_starts: list[datetime] = Field(default_factory=list)


class MaintenanceWindowsPublic(SQLModel):
    """A page of windows."""

    items: list[MaintenanceWindowPublic]
    count: int
