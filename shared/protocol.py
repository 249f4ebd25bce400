"""Protocol version 1 as pydantic models: what agents and the server exchange over MQTT.

Payloads are UTF-8 JSON. Unknown extra fields are accepted and ignored, so a
newer agent can talk to an older server. :func:`parse_message` is the one way
in for bytes from the wire: it enforces the size limit and turns every problem
into a :class:`~shared.errors.ProtocolError` with a stable ``reason``.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ProtocolError
from shared.ids import DEVICE_ID_PATTERN

PROTOCOL_VERSION: Final = 1
#: Larger payloads are rejected unread.
MAX_PAYLOAD_BYTES: Final = 64 * 1024

DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
HealthStatus = Literal["ok", "warning", "fault"]
Severity = Literal["info", "warning", "error", "critical"]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        msg = "metric values must be finite numbers"
        raise ValueError(msg)
    return value


MetricValue = Annotated[float, AfterValidator(_finite)]
MetricName = Annotated[str, Field(min_length=1, max_length=128)]


class _Message(BaseModel):
    """Base of every wire message: ignore unknown fields, refuse a wrong version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION


class Fault(BaseModel):
    """A fault the device reports, e.g. ``SC-541`` "Fuser thermistor open"."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    code: Annotated[str, Field(min_length=1, max_length=64)]
    severity: Severity = "error"
    message: Annotated[str, Field(max_length=1024)] = ""


class HealthSample(_Message):
    """One health sample from an agent, published on ``.../telemetry``.

    ``seq`` starts at 0 for each ``boot_id`` and rises by one per sample, so the
    server can count samples that never arrived. ``ts`` is when it was
    collected, ``sent_at`` when it was (last) published: the server estimates
    the device's clock offset from ``sent_at``.
    """

    device_id: DeviceId
    boot_id: Annotated[str, Field(min_length=1, max_length=64)]
    seq: Annotated[int, Field(ge=0)]
    ts: AwareDatetime
    sent_at: AwareDatetime | None = None
    status: HealthStatus
    metrics: dict[MetricName, MetricValue] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list)
    #: Samples the agent's outbox dropped (oldest first) since the last sample.
    outbox_dropped: Annotated[int, Field(ge=0)] = 0


class DeviceState(_Message):
    """Retained online state: the agent's birth, or the broker's last will.

    ``reason`` says why a device went offline: ``shutdown`` (the agent stopped
    cleanly), ``connection_lost`` (the broker published the last will).
    """

    online: bool
    ts: AwareDatetime | None = None
    boot_id: str | None = None
    agent_version: str | None = None
    reason: str | None = None


class ServerState(_Message):
    """The server's retained announcement; agents republish their birth when it changes."""

    online: bool
    ts: AwareDatetime
    instance: str


EventType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.]*$")]


class DeviceEvent(_Message):
    """A device event on ``.../events``: ``fault.raised``, ``fault.cleared``, ``session.*``..."""

    device_id: DeviceId
    ts: AwareDatetime
    type: EventType
    body: dict[str, Any] = Field(default_factory=dict)


CommandType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.]*$")]


class Command(_Message):
    """A command from the server, signed with its Ed25519 key over every field but ``sig``."""

    id: Annotated[str, Field(min_length=8, max_length=64)]
    type: CommandType
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    device_id: DeviceId | None = None
    body: dict[str, Any] = Field(default_factory=dict)
    sig: str = ""


class CommandResult(_Message):
    """The agent's answer to a command on ``.../cmd/result``."""

    id: str
    ok: bool
    ts: AwareDatetime
    error: str | None = None
    body: dict[str, Any] = Field(default_factory=dict)


M = TypeVar("M", bound=BaseModel)


def parse_message(model: type[M], payload: bytes | bytearray | str) -> M:
    """Validate one wire payload as ``model``.

    Raises:
        ProtocolError: ``oversize`` past :data:`MAX_PAYLOAD_BYTES`, ``bad_json``
            when it is not UTF-8 JSON, ``bad_shape`` when it is JSON of the wrong shape.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        msg = f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} byte limit"
        raise ProtocolError(msg, reason="oversize")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] in ("json_invalid", "json_type"):
            msg = "payload is not valid UTF-8 JSON"
            raise ProtocolError(msg, reason="bad_json") from exc
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        msg = f"{where}: {first['msg']}"
        raise ProtocolError(msg, reason="bad_shape") from exc


def dump_message(message: BaseModel) -> bytes:
    """Serialize a message for the wire (compact JSON, UTF-8, no ``None`` fields)."""
    return message.model_dump_json(exclude_none=True).encode()


def canonical_json(data: dict[str, Any]) -> bytes:
    """Canonical JSON for signing: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
