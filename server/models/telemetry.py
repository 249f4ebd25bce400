"""Telemetry history, its hourly rollups, and the alerts health raises."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.models.base import BIGINT, JSONType, utc_column


class TelemetrySample(SQLModel, table=True):
    """One health sample as received (raw history, kept for ``telemetry_retention_days``)."""

    __tablename__ = "telemetry_sample"
    __table_args__ = (
        sa.Index("ix_telemetry_sample_device_ts", "device_id", "ts"),
        # A QoS 1 redelivery carries the same boot and sequence number: stored once.
        sa.UniqueConstraint("device_id", "boot_id", "seq", name="uq_telemetry_sample_boot_seq"),
    )

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    device_id: str = Field(max_length=63, foreign_key="device.id")
    boot_id: str = Field(max_length=64)
    #: 64-bit (``seq`` on the wire is ``0..2^63-1``).
    seq: int = Field(sa_column=sa.Column(BIGINT, nullable=False))
    ts: datetime = Field(sa_column=utc_column(nullable=False))
    received_at: datetime = Field(sa_column=utc_column(nullable=False, index=True))
    #: The device's ``ts`` was implausibly far from the server's clock (a year ahead,
    #: 1970): ``ts`` holds the server's receive time instead, and this flag says so.
    ts_untrusted: bool = Field(
        default=False,
        sa_column=sa.Column(sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    status: str = Field(max_length=16)
    metrics: dict[str, float] = Field(
        default_factory=dict, sa_column=sa.Column(JSONType, nullable=False)
    )
    faults: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=sa.Column(JSONType, nullable=False)
    )


class TelemetryRollup(SQLModel, table=True):
    """Hourly aggregates of one metric of one device, for long chart ranges."""

    __tablename__ = "telemetry_rollup"

    device_id: str = Field(primary_key=True, max_length=63, foreign_key="device.id")
    metric: str = Field(primary_key=True, max_length=128)
    bucket: datetime = Field(sa_column=utc_column(nullable=False, primary_key=True))
    count: int
    min: float
    max: float
    sum: float


class Alert(SQLModel, table=True):
    """A fault the device reports, or a threshold rule that fired; open until cleared.

    A rule's alert names the ``metric`` that crossed the bound (a prefix rule such
    as ``disk_percent:*`` opens one alert per disk).
    """

    __table_args__ = (sa.Index("ix_alert_device_open", "device_id", "open"),)

    id: int | None = Field(default=None, primary_key=True)
    device_id: str = Field(max_length=63, foreign_key="device.id")
    source: str = Field(max_length=16)  # "device" (a reported fault) or "rule"
    code: str = Field(max_length=128)
    severity: str = Field(max_length=16)
    message: str = Field(default="", max_length=1024)
    metric: str | None = Field(default=None, max_length=128)
    raised_at: datetime = Field(sa_column=utc_column(nullable=False))
    cleared_at: datetime | None = Field(default=None, sa_column=utc_column())
    open: bool = True


class AlertPublic(SQLModel):
    """An alert as the API shows it."""

    id: int
    source: str
    code: str
    metric: str | None
    severity: str
    message: str
    raised_at: datetime
    cleared_at: datetime | None
    open: bool


class DeviceEventRecord(SQLModel, table=True):
    """A device's history: events it published, and its online state changes.

    ``type`` is the event's type (``fault.raised``, ``session.opened``...) or
    ``online`` / ``offline`` for state changes, whose ``body`` holds the ``reason``.
    """

    __tablename__ = "device_event"
    __table_args__ = (sa.Index("ix_device_event_device_ts", "device_id", "ts"),)

    id: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    device_id: str = Field(max_length=63, foreign_key="device.id")
    type: str = Field(max_length=64)
    #: When it happened (the device's clock for events, the server's for state changes).
    ts: datetime = Field(sa_column=utc_column(nullable=False))
    received_at: datetime = Field(sa_column=utc_column(nullable=False))
    body: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column(JSONType, nullable=False)
    )


class DeviceEventPublic(SQLModel):
    """A history entry as the API shows it."""

    id: int
    type: str
    ts: datetime
    received_at: datetime
    body: dict[str, Any]
