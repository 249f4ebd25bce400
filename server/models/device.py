"""The device registry: identity, contract data, and the latest known health."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import field_validator, model_validator
from sqlmodel import Field, SQLModel

from server.models.base import BIGINT, JSONType, utc_column
from shared.errors import InvalidDeviceId
from shared.ids import check_device_id, utcnow

DeviceType = Literal["mfp", "imaging", "server"]
DEVICE_TYPES: tuple[str, ...] = ("mfp", "imaging", "server")


class DeviceBase(SQLModel):
    """What an administrator registers about a device."""

    serial: str = Field(min_length=1, max_length=128, index=True)
    model: str = Field(min_length=1, max_length=128)
    type: str = Field(max_length=16, index=True)
    customer: str = Field(min_length=1, max_length=256, index=True)
    site: str | None = Field(default=None, max_length=256)
    region: str | None = Field(default=None, max_length=128, index=True)
    contact_phone: str | None = Field(default=None, max_length=64, index=True)
    # The site gateway that watches this device over the network (SNMP...): its device
    # id. ``None`` for a device with its own agent. Checked by the registry (a gateway
    # must be registered and not itself watched through another gateway).
    via: str | None = Field(default=None, max_length=63, index=True)

    @field_validator("via")
    @classmethod
    def _valid_via(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_device_id(value)
        except InvalidDeviceId as exc:
            msg = f"via: the gateway's device id: {exc}"
            raise ValueError(msg) from exc

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in DEVICE_TYPES:
            msg = f"type must be one of {', '.join(DEVICE_TYPES)}"
            raise ValueError(msg)
        return value


class DeviceCreate(DeviceBase):
    """Body of ``POST /api/v1/devices``; ``id`` is derived from type and serial when absent.

    The customer is named by ``customer_number`` (its ``customer`` name then comes
    from the customer record) or, as before customers had records, by its name in
    ``customer``: an unknown name becomes a new customer with the next free number.
    """

    id: str | None = Field(default=None, max_length=63)
    customer: str = Field(default="", max_length=256)
    customer_number: str | None = Field(
        default=None, max_length=32, schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$"}
    )

    @model_validator(mode="after")
    def _names_a_customer(self) -> DeviceCreate:
        if not self.customer.strip() and not self.customer_number:
            msg = "customer_number (or a customer name) is required"
            raise ValueError(msg)
        return self

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str | None) -> str | None:
        return check_device_id(value) if value is not None else None


class Device(DeviceBase, table=True):
    """A registered device and what the server last learned about it."""

    id: str = Field(primary_key=True, max_length=63)
    created_at: datetime = Field(default_factory=utcnow, sa_column=utc_column(nullable=False))
    #: The customer record (``device.customer`` keeps its name).
    customer_number: str | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.String(32),
            sa.ForeignKey("customer.number", name="fk_device_customer_number"),
            index=True,
        ),
    )
    #: ``contact_phone`` in E.164 when it reads as a valid number (what a call's ANI matches).
    contact_phone_e164: str | None = Field(default=None, max_length=16, index=True)

    # Online state and why it last changed: birth, shutdown, connection_lost, silent.
    online: bool = Field(default=False, index=True)
    online_reason: str | None = Field(default=None, max_length=32)
    online_changed_at: datetime | None = Field(default=None, sa_column=utc_column())
    last_seen: datetime | None = Field(default=None, sa_column=utc_column(index=True))
    agent_version: str | None = Field(default=None, max_length=64)
    #: What the agent's newest own birth announced (``DeviceState.capabilities``), sorted,
    #: comma-separated (``via-sessions``); ``None``: nothing (an older agent).
    capabilities: str | None = Field(default=None, max_length=256)

    # Latest health sample.
    boot_id: str | None = Field(default=None, max_length=64)
    last_seq: int | None = Field(default=None, sa_type=BIGINT)
    status: str | None = Field(default=None, max_length=16, index=True)
    health: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONType))
    health_ts: datetime | None = Field(default=None, sa_column=utc_column())
    # What the equipment reports about itself (a watched device's sysDescr, serial,
    # model, firmware), as reported: see :mod:`server.ingest.inventory`.
    inventory: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(JSONType))

    # The device clock's offset from the server's (device minus server), in seconds.
    clock_offset_s: float | None = None
    clock_skewed: bool = False

    # Identity: one-time enrollment token (hash only), certificate, revocation.
    enrollment_token_hash: str | None = Field(default=None, max_length=128)
    enrollment_expires_at: datetime | None = Field(default=None, sa_column=utc_column())
    enrolled_at: datetime | None = Field(default=None, sa_column=utc_column())
    cert_serial: str | None = Field(default=None, max_length=64)
    cert_not_after: datetime | None = Field(default=None, sa_column=utc_column())
    ssh_host_key: str | None = Field(default=None, max_length=1024)
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column())

    # Ingest accounting.
    # 64-bit: ``seq`` is a 64-bit counter on the wire, and these add up for years.
    telemetry_received: int = Field(default=0, sa_type=BIGINT)
    telemetry_missing: int = Field(default=0, sa_type=BIGINT)
    telemetry_rejected: int = Field(default=0, sa_type=BIGINT)


class DevicePublic(DeviceBase):
    """A device as the API shows it."""

    id: str
    created_at: datetime
    customer_number: str | None = None
    contact_phone_e164: str | None = None
    online: bool
    online_reason: str | None
    online_changed_at: datetime | None
    last_seen: datetime | None
    agent_version: str | None
    status: str | None
    health: dict[str, Any] | None
    health_ts: datetime | None
    inventory: dict[str, Any] | None = None
    clock_offset_s: float | None
    clock_skewed: bool
    enrolled_at: datetime | None
    cert_serial: str | None
    cert_not_after: datetime | None
    revoked_at: datetime | None


class DevicesPublic(SQLModel):
    """A page of devices."""

    items: list[DevicePublic]
    count: int
