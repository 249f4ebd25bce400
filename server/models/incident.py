"""Call-center incidents, the unit the KPIs are computed from (see docs/kpis.md).

An incident is one case about one device: when the call (or alert) came in
and was answered, when the device went down and was back in service, and how
it was resolved. ``device_type`` is copied from the device when the incident
is recorded (a device's type is fixed at registration: its id derives from
it), so the KPI queries read one table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import AwareDatetime
from sqlmodel import Field, SQLModel

from server.models.base import utc_column
from shared.ids import utcnow

Resolution = Literal["remote", "phone", "dispatch", "no_fault"]
Channel = Literal["phone", "web", "email", "alert"]
IncidentState = Literal["open", "closed"]
RESOLUTIONS: tuple[str, ...] = ("remote", "phone", "dispatch", "no_fault")
CHANNELS: tuple[str, ...] = ("phone", "web", "email", "alert")

#: The columns of the CSV import and export, in order (docs/kpis.md's field names).
CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "external_id",
    "device_id",
    "opened_at",
    "answered_at",
    "down_at",
    "restored_at",
    "closed_at",
    "channel",
    "symptom",
    "error_code",
    "resolution",
    "remote_session_used",
    "dispatched_at",
    "engineer_arrived_at",
    "resolution_note",
    "handover_note",
)
#: The longest resolution note (what was done, parts used) an incident keeps.
RESOLUTION_NOTE_MAX = 4000
#: The longest handover note an escalation keeps (what was tried, what the next tier needs).
HANDOVER_NOTE_MAX = 2000
#: Support tiers: 1 call center, 2 remote specialist, 3 field service.
Tier = Literal[1, 2, 3]
TIERS: tuple[int, ...] = (1, 2, 3)
#: The timestamp fields of an incident.
TIME_FIELDS: tuple[str, ...] = (
    "opened_at",
    "answered_at",
    "down_at",
    "restored_at",
    "closed_at",
    "dispatched_at",
    "engineer_arrived_at",
)


class IncidentCreate(SQLModel):
    """Body of ``POST /api/v1/incidents`` and one row of a CSV import.

    Timestamps are ISO 8601 with an offset (``Z`` or ``+01:00``); ``down_at``
    defaults to ``opened_at``. Closing (``closed_at``) needs ``resolution`` and
    ``restored_at``.
    """

    external_id: str | None = Field(default=None, min_length=1, max_length=128)
    device_id: str = Field(min_length=1, max_length=63)
    opened_at: AwareDatetime
    answered_at: AwareDatetime | None = None
    down_at: AwareDatetime | None = None
    restored_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None
    channel: Channel | None = None
    symptom: str | None = Field(default=None, max_length=4000)
    error_code: str | None = Field(default=None, max_length=128)
    resolution: Resolution | None = None
    remote_session_used: bool = False
    dispatched_at: AwareDatetime | None = None
    engineer_arrived_at: AwareDatetime | None = None
    #: What was done and which parts were used (the fault-case knowledge base's fixes).
    resolution_note: str | None = Field(default=None, max_length=RESOLUTION_NOTE_MAX)


class IncidentUpdate(SQLModel):
    """Body of ``PATCH /api/v1/incidents/{id}``: only the fields given change.

    Close an incident by giving ``closed_at`` with ``resolution`` and
    ``restored_at`` (or with those already recorded); give ``closed_at: null``
    to reopen it.
    """

    external_id: str | None = Field(default=None, min_length=1, max_length=128)
    opened_at: AwareDatetime | None = None
    answered_at: AwareDatetime | None = None
    down_at: AwareDatetime | None = None
    restored_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None
    channel: Channel | None = None
    symptom: str | None = Field(default=None, max_length=4000)
    error_code: str | None = Field(default=None, max_length=128)
    resolution: Resolution | None = None
    remote_session_used: bool | None = None
    dispatched_at: AwareDatetime | None = None
    engineer_arrived_at: AwareDatetime | None = None
    resolution_note: str | None = Field(default=None, max_length=RESOLUTION_NOTE_MAX)


class IncidentClose(SQLModel):
    """Body of ``POST /api/v1/incidents/{id}/close``: the desk's one-click close.

    ``restored_at`` defaults to the one recorded, else to ``restored_at_proposed``
    (when the fault that opened the incident cleared); ``closed_at`` to now.
    """

    resolution: Resolution
    resolution_note: str | None = Field(default=None, max_length=RESOLUTION_NOTE_MAX)
    restored_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None
    dispatched_at: AwareDatetime | None = None
    engineer_arrived_at: AwareDatetime | None = None


class IncidentEscalate(SQLModel):
    """Body of ``POST /api/v1/incidents/{id}/escalate``: a new tier and/or assignee.

    ``assignee`` is a user name (an enabled user); ``null`` or absent keeps the
    current one. ``note`` is the handover note, kept on the incident and in the
    audit log.
    """

    tier: Tier | None = None
    assignee: str | None = Field(default=None, min_length=1, max_length=64)
    note: str = Field(min_length=1, max_length=HANDOVER_NOTE_MAX)


class Incident(SQLModel, table=True):
    """One recorded call-center case about one device."""

    __table_args__ = (
        sa.UniqueConstraint("external_id", name="uq_incident_external_id"),
        sa.Index("ix_incident_closed_at_resolution", "closed_at", "resolution"),
        # Similar past cases: the closed incidents of one error code, newest first.
        sa.Index("ix_incident_error_code_closed_at", "error_code", "closed_at"),
        # At most one open alert-opened incident per device and fault code, even
        # when several ingest processes see the same fault at once.
        sa.Index(
            "uq_incident_open_alert",
            "device_id",
            "error_code",
            unique=True,
            sqlite_where=sa.text("closed_at IS NULL AND channel = 'alert'"),
            postgresql_where=sa.text("closed_at IS NULL AND channel = 'alert'"),
        ),
    )

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    external_id: str | None = Field(default=None, max_length=128)
    device_id: str = Field(max_length=63, foreign_key="device.id", index=True)
    #: Copied from the device when recorded (a device's type never changes).
    device_type: str = Field(max_length=16)
    opened_at: datetime = Field(sa_column=utc_column(nullable=False, index=True))
    answered_at: datetime | None = Field(default=None, sa_column=utc_column())
    down_at: datetime = Field(sa_column=utc_column(nullable=False))
    restored_at: datetime | None = Field(default=None, sa_column=utc_column())
    closed_at: datetime | None = Field(default=None, sa_column=utc_column())
    channel: str | None = Field(default=None, max_length=16)
    symptom: str | None = Field(default=None, max_length=4000)
    error_code: str | None = Field(default=None, max_length=128)
    resolution: str | None = Field(default=None, max_length=16)
    remote_session_used: bool = False
    dispatched_at: datetime | None = Field(default=None, sa_column=utc_column())
    engineer_arrived_at: datetime | None = Field(default=None, sa_column=utc_column())
    resolution_note: str | None = Field(default=None, max_length=RESOLUTION_NOTE_MAX)
    #: Alert-opened incidents: when the fault cleared on the device (clock offset
    #: applied), proposed as ``restored_at`` for the desk to confirm when closing.
    restored_at_proposed: datetime | None = Field(default=None, sa_column=utc_column())
    #: The user name the case is assigned to (``GET /incidents?assignee=me``).
    assignee: str | None = Field(default=None, max_length=64, index=True)
    #: 1 call center, 2 remote specialist, 3 field service.
    tier: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    #: The latest escalation's handover note (every one is in the audit log).
    handover_note: str | None = Field(default=None, max_length=HANDOVER_NOTE_MAX)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))


class IncidentSession(SQLModel, table=True):
    """A remote session used for an incident (linking one marks ``remote_session_used``)."""

    __tablename__ = "incident_session"

    incident_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("incident.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    session_id: str = Field(primary_key=True, max_length=64, index=True)
    linked_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))


class IncidentPublic(SQLModel):
    """An incident as the API shows it; ``state`` is ``closed`` once ``closed_at`` is set."""

    id: int
    external_id: str | None
    device_id: str
    device_type: str
    state: IncidentState
    opened_at: datetime
    answered_at: datetime | None
    down_at: datetime
    restored_at: datetime | None
    closed_at: datetime | None
    channel: str | None
    symptom: str | None
    error_code: str | None
    resolution: str | None
    remote_session_used: bool
    dispatched_at: datetime | None
    engineer_arrived_at: datetime | None
    resolution_note: str | None = None
    restored_at_proposed: datetime | None = None
    assignee: str | None = None
    tier: int = 1
    handover_note: str | None = None
    session_ids: list[str] = []
    #: The customer survey's link (made when the incident closed), for the desk to pass on.
    survey_url: str | None = None
    created_at: datetime
    updated_at: datetime


class IncidentsPublic(SQLModel):
    """A page of incidents."""

    items: list[IncidentPublic]
    count: int
