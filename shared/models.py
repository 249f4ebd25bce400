"""Protocol version 1 as pydantic models: what agents and the server exchange over MQTT.

The names, limits and ``Literal`` types come from :mod:`shared.wire` (standard
library only, which the agent uses without pydantic); this module adds the
validation. Payloads are UTF-8 JSON. Unknown extra fields are accepted and ignored, so a
newer agent can talk to an older server. :func:`parse_message` is the one way
in for bytes from the wire: it enforces the size limit and turns every problem
into a :class:`~shared.errors.ProtocolError` with a stable ``reason``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ProtocolError
from shared.wire import (
    DEVICE_ID_PATTERN,
    MAX_BOOT_ID_LENGTH,
    MAX_CLIENT_KEY_LENGTH,
    MAX_CLOSE_DETAIL_LENGTH,
    MAX_COMMAND_ID_LENGTH,
    MAX_COUNTER,
    MAX_FAULT_CODE_LENGTH,
    MAX_FAULT_MESSAGE_LENGTH,
    MAX_METRIC_NAME_LENGTH,
    MAX_OPERATOR_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_REASON_LENGTH,
    MAX_REFUSAL_KIND_LENGTH,
    MAX_REFUSAL_REASON_LENGTH,
    MAX_REFUSAL_TARGET_LENGTH,
    MAX_SERVICE_NAME_LENGTH,
    MAX_SESSION_TOKEN_LENGTH,
    MAX_TYPE_LENGTH,
    MAX_WS_URL_LENGTH,
    MIN_COMMAND_ID_LENGTH,
    MIN_SESSION_TOKEN_LENGTH,
    PROTOCOL_VERSION,
    SERVICE_NAME_PATTERN,
    SESSION_ID_PATTERN,
    TYPE_PATTERN,
    CloseReason,
    HealthStatus,
    Severity,
)
from shared.wire import canonical_json as canonical_json  # the signed form, for the server's audit

#: ``seq`` and the like: a JSON integer (not ``1e3``, not ``5.0``) in ``0..2^63-1``.
UInt63 = Annotated[int, Field(ge=0, le=MAX_COUNTER, strict=True)]

DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        msg = "metric values must be finite numbers"
        raise ValueError(msg)
    return value


MetricValue = Annotated[float, AfterValidator(_finite)]
MetricName = Annotated[str, Field(min_length=1, max_length=MAX_METRIC_NAME_LENGTH)]


class _Message(BaseModel):
    """Base of every wire message: ignore unknown fields, refuse a wrong version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION


class Fault(BaseModel):
    """A fault the device reports, e.g. ``SC-541`` "Fuser thermistor open"."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    code: Annotated[str, Field(min_length=1, max_length=MAX_FAULT_CODE_LENGTH)]
    severity: Severity = "error"
    message: Annotated[str, Field(max_length=MAX_FAULT_MESSAGE_LENGTH)] = ""


class HealthSample(_Message):
    """One health sample from an agent, published on ``.../telemetry``.

    ``seq`` starts at 0 for each ``boot_id`` and rises by one per sample, so the
    server can count samples that never arrived. ``ts`` is when it was
    collected, ``sent_at`` when it was (last) published: the server estimates
    the device's clock offset from ``sent_at``.
    """

    device_id: DeviceId
    boot_id: Annotated[str, Field(min_length=1, max_length=MAX_BOOT_ID_LENGTH)]
    seq: UInt63
    ts: AwareDatetime
    sent_at: AwareDatetime | None = None
    status: HealthStatus
    metrics: dict[MetricName, MetricValue] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list)
    #: Samples the agent's outbox dropped (oldest first) since the last sample.
    outbox_dropped: UInt63 = 0


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
    #: What the agent can do beyond protocol 1 (a birth's): ``shared.wire.VIA_SESSIONS``.
    capabilities: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=16
    )


class ServerState(_Message):
    """The server's retained announcement; agents republish their birth when it changes."""

    online: bool
    ts: AwareDatetime
    instance: str


EventType = Annotated[str, Field(min_length=1, max_length=MAX_TYPE_LENGTH, pattern=TYPE_PATTERN)]


class DeviceEvent(_Message):
    """A device event on ``.../events``: ``fault.raised``, ``fault.cleared``, ``session.*``..."""

    device_id: DeviceId
    ts: AwareDatetime
    type: EventType
    body: dict[str, Any] = Field(default_factory=dict)


CommandType = EventType


class Command(_Message):
    """A command from the server, signed with its Ed25519 key over every field but ``sig``."""

    id: Annotated[str, Field(min_length=MIN_COMMAND_ID_LENGTH, max_length=MAX_COMMAND_ID_LENGTH)]
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


SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]
ServiceName = Annotated[
    str, Field(min_length=1, max_length=MAX_SERVICE_NAME_LENGTH, pattern=SERVICE_NAME_PATTERN)
]


class SessionOpen(BaseModel):
    """The body of a signed ``session.open`` command.

    Attributes:
        session_id: The session.
        ws_url: The tunnel endpoint to dial (``wss://server/api/v1/tunnel/{session_id}``).
        token: The session token the endpoint checks (a secret: never logged).
        client_key: The server's one-time SSH client key, OpenSSH public format.
        expires_at: Until when the agent may dial and the key is accepted.
        services: Services the session may reach (``None``: what the site allows).
        operator: Who asked (shown to the site when consent is asked).
        reason: Why (shown to the site).
        max_duration_s: The server's cap on the session (the agent applies the
            smaller of this and its own policy).
        idle_timeout_s: The server's idle cap, likewise.
        device: The device the session is for when it is not the agent's own: one the
            agent watches as a site gateway (``[[agent.devices]]``). The session then
            reaches that device's web page only, never the gateway's own services or shell.
    """

    model_config = ConfigDict(extra="ignore")

    session_id: SessionId
    ws_url: Annotated[str, Field(min_length=1, max_length=MAX_WS_URL_LENGTH, pattern=r"^wss?://")]
    token: Annotated[
        str, Field(min_length=MIN_SESSION_TOKEN_LENGTH, max_length=MAX_SESSION_TOKEN_LENGTH)
    ]
    client_key: Annotated[str, Field(min_length=1, max_length=MAX_CLIENT_KEY_LENGTH)]
    expires_at: AwareDatetime
    services: list[ServiceName] | None = None
    operator: Annotated[str, Field(max_length=MAX_OPERATOR_LENGTH)] = ""
    reason: Annotated[str, Field(max_length=MAX_REASON_LENGTH)] = ""
    max_duration_s: Annotated[float, Field(gt=0)] | None = None
    idle_timeout_s: Annotated[float, Field(gt=0)] | None = None
    device: DeviceId | None = None


class SessionClose(BaseModel):
    """The body of a signed ``session.close`` command (ends a session in any state)."""

    model_config = ConfigDict(extra="ignore")

    session_id: SessionId
    reason: CloseReason = "operator"


class SessionRefusal(BaseModel):
    """Something a session asked the device for and did not get."""

    kind: Annotated[str, Field(max_length=MAX_REFUSAL_KIND_LENGTH)]
    target: Annotated[str, Field(max_length=MAX_REFUSAL_TARGET_LENGTH)]
    reason: Annotated[str, Field(max_length=MAX_REFUSAL_REASON_LENGTH)]


class SessionClosedReport(BaseModel):
    """The body of the agent's ``session.closed`` event: its side of the session."""

    model_config = ConfigDict(extra="ignore")

    session_id: SessionId
    close_reason: CloseReason
    detail: Annotated[str, Field(max_length=MAX_CLOSE_DETAIL_LENGTH)] = ""
    bytes_from_server: Annotated[int, Field(ge=0)] = 0
    bytes_to_server: Annotated[int, Field(ge=0)] = 0
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    refusals: list[SessionRefusal] = Field(default_factory=list)


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
