"""Remote sessions and the operators' SSH keys for the gateway.

A :class:`RemoteSession` row is the audit record of one session: who opened
it, to which device, why, for which incident, what it reached, how many bytes
went each way, when it started and ended and why it ended. The live tunnel
itself is in memory (:mod:`server.sessions`); the row outlives it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, get_args

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.models.base import JSONType, utc_column
from shared.ids import utcnow
from shared.wire import CloseReason

#: Where a session was opened from.
ORIGINS: Final = ("api", "gateway", "console", "cli")


def _big_int() -> Any:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class RemoteSession(SQLModel, table=True):
    """One remote session: the record that outlives its tunnel."""

    __tablename__ = "remote_session"

    id: str = Field(primary_key=True, max_length=40)
    device_id: str = Field(foreign_key="device.id", max_length=63, index=True)
    operator: str = Field(max_length=64, index=True)
    reason: str = Field(max_length=1024)
    incident_id: int | None = Field(
        default=None, sa_column=sa.Column(_big_int(), sa.ForeignKey("incident.id"), nullable=True)
    )
    origin: str = Field(default="api", max_length=16)
    #: Services asked for (``None``: whatever the site allows).
    services: list[str] | None = Field(default=None, sa_column=sa.Column(JSONType, nullable=True))
    #: What the session actually used: ``shell``, ``exec``, ``sftp``, ``forward:web``...
    services_used: list[str] = Field(
        default_factory=list, sa_column=sa.Column(JSONType, nullable=False)
    )
    state: str = Field(default="requested", max_length=20, index=True)
    close_reason: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, max_length=1024)
    #: The server instance that holds the tunnel (docs/operations.md, "Scaling out").
    instance: str = Field(default="", max_length=64)
    client_key_fingerprint: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    expires_at: datetime = Field(sa_column=utc_column(nullable=False))
    started_at: datetime | None = Field(default=None, sa_column=utc_column())
    ended_at: datetime | None = Field(default=None, sa_column=utc_column())
    bytes_to_device: int = Field(default=0, sa_column=sa.Column(_big_int(), nullable=False))
    bytes_from_device: int = Field(default=0, sa_column=sa.Column(_big_int(), nullable=False))
    #: The agent's own report (``session.closed`` event), kept as it came.
    agent_report: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(JSONType, nullable=True)
    )
    recording_path: str | None = Field(default=None, max_length=512)
    recording_sha256: str | None = Field(default=None, max_length=64)
    recording_bytes: int | None = Field(default=None, sa_column=sa.Column(_big_int()))
    #: Who let a session that needed the site's consent go ahead, when, and where
    #: (``local``: on the device; ``web``: the console or the API; ``link``: an approval link).
    approved_by: str | None = Field(default=None, max_length=128)
    approved_at: datetime | None = Field(default=None, sa_column=utc_column())
    approved_via: str | None = Field(default=None, max_length=8)
    #: The last heartbeat of the operator's client (``fieldlink exec|connect|ssh``);
    #: ``None``: nobody keeps it alive (the console, ``session open``), never closed for it.
    operator_seen_at: datetime | None = Field(default=None, sa_column=utc_column())


class RemoteSessionCreate(SQLModel):
    """The body of ``POST /api/v1/devices/{id}/sessions``."""

    reason: str = Field(min_length=1, max_length=1024)
    incident_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    services: list[str] | None = Field(default=None, max_length=16)
    #: The client will send heartbeats (``POST /sessions/{id}/heartbeat``) while it uses
    #: the session: without one for ``operator_heartbeat_timeout_s`` the server closes it
    #: (``operator_gone``).
    keepalive: bool = False


class RemoteSessionPublic(SQLModel):
    """A session as the API shows it."""

    id: str
    device_id: str
    operator: str
    reason: str
    incident_id: int | None
    origin: str
    services: list[str] | None
    services_used: list[str]
    state: str
    close_reason: str | None = Field(
        description="why a closed session ended: " + ", ".join(get_args(CloseReason))
    )
    detail: str | None
    #: The server process that holds the tunnel.
    instance: str
    created_at: datetime
    expires_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    bytes_to_device: int
    bytes_from_device: int
    has_recording: bool = False
    recording_sha256: str | None = None
    #: Refusals the agent reported (service outside the allowlist, path outside the folders...).
    refusals: list[dict[str, Any]] = Field(default_factory=list)
    #: What the site allows this session to reach, as the agent said when it started.
    allowed_services: list[str] | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    approved_via: str | None = None
    #: The last heartbeat of the operator's client (``None``: not kept alive by one).
    operator_seen_at: datetime | None = None

    @classmethod
    def of(cls, row: RemoteSession) -> RemoteSessionPublic:
        """The public view of a row."""
        data = row.model_dump()
        data["has_recording"] = row.recording_sha256 is not None
        report = row.agent_report or {}
        data["refusals"] = list(report.get("refusals", []))
        started = report.get("started")
        data["allowed_services"] = started.get("services") if isinstance(started, dict) else None
        return cls.model_validate(data)


class RemoteSessionsPublic(SQLModel):
    """A page of sessions."""

    items: list[RemoteSessionPublic]
    count: int


class ExecRequest(SQLModel):
    """The body of ``POST /api/v1/sessions/{id}/exec``."""

    command: str = Field(min_length=1, max_length=8192)
    timeout_s: float = Field(default=30.0, gt=0, le=600)


class ExecResultPublic(SQLModel):
    """What a command run on the device gave back."""

    exit_status: int | None
    stdout: str
    stderr: str


class UserSSHKey(SQLModel, table=True):
    """An operator's public key for the SSH gateway (``fieldlink user add-key``)."""

    __tablename__ = "user_ssh_key"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    name: str = Field(max_length=128)
    public_key: str = Field(max_length=4096)
    fingerprint: str = Field(max_length=128, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=utc_column())
