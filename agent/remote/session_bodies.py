"""The bodies of ``session.open``, ``session.close`` and ``session.decide`` as the agent reads
them, without pydantic.

The server builds them with :class:`shared.models.SessionOpen` and
:class:`shared.models.SessionClose`; the agent checks the same fields against
the same limits of :mod:`shared.wire` with :mod:`shared.fields`, so that serving
a session does not leave pydantic (about 19 MiB) in the agent's memory. Unknown
fields are ignored, as the models ignore them. One difference: a number must be
a JSON number (pydantic's lax mode would also take ``"5"``; the server never
sends one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import fields
from shared.fields import InvalidField
from shared.wire import (
    CLOSE_REASONS,
    DECISION_VIAS,
    DEVICE_ID_PATTERN,
    MAX_APPROVER_LENGTH,
    MAX_CLIENT_KEY_LENGTH,
    MAX_OPERATOR_LENGTH,
    MAX_REASON_LENGTH,
    MAX_SERVICE_NAME_LENGTH,
    MAX_SESSION_TOKEN_LENGTH,
    MAX_WS_URL_LENGTH,
    MIN_SESSION_TOKEN_LENGTH,
    SERVICE_NAME_PATTERN,
    SESSION_ID_PATTERN,
    SESSION_VERDICTS,
    CloseReason,
    DecisionVia,
    SessionVerdict,
)


@dataclass(frozen=True, slots=True)
class SessionOpen:
    """The body of a signed ``session.open`` command (see :class:`shared.models.SessionOpen`).

    Attributes:
        session_id: The session.
        ws_url: The tunnel endpoint to dial (``wss://server/api/v1/tunnel/{session_id}``).
        token: The session token the endpoint checks (a secret: never logged).
        client_key: The server's one-time SSH client key, OpenSSH public format.
        expires_at: Until when the agent may dial and the key is accepted.
        services: Services the session may reach (``None``: what the site allows).
        operator: Who asked (shown to the site when consent is asked).
        reason: Why (shown to the site).
        max_duration_s: The server's cap on the session.
        idle_timeout_s: The server's idle cap.
        device: The watched device the session is for (a site gateway's), else ``None``.
    """

    session_id: str
    ws_url: str
    token: str
    client_key: str
    expires_at: datetime
    services: list[str] | None = None
    operator: str = ""
    reason: str = ""
    max_duration_s: float | None = None
    idle_timeout_s: float | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class SessionClose:
    """The body of a signed ``session.close`` command (ends a session in any state)."""

    session_id: str
    reason: CloseReason = "operator"


@dataclass(frozen=True, slots=True)
class SessionDecide:
    """The body of a signed ``session.decide`` command: a site's decision given on the web.

    Attributes:
        session_id: The session awaiting consent.
        verdict: ``approve`` or ``deny``.
        approver: Who decided (a user name, or an approval link's contact).
        via: ``web`` (the console or the API) or ``link`` (a one-time approval link).
        reason: Why it was denied (shown in the session's record).
        services: An approval's narrower services (``None``: as asked).
        max_duration_s: An approval's shorter maximum duration (``None``: as asked).
    """

    session_id: str
    verdict: SessionVerdict
    approver: str
    via: DecisionVia
    reason: str = ""
    services: list[str] | None = None
    max_duration_s: float | None = None


def parse_open(body: Mapping[str, Any]) -> SessionOpen:
    """Check a ``session.open`` body.

    Raises:
        InvalidField: naming the first field that is wrong (never its value).
    """
    data = dict(body)
    return SessionOpen(
        session_id=fields.string(data, "session_id", pattern=SESSION_ID_PATTERN),
        ws_url=fields.string(
            data, "ws_url", min_length=1, max_length=MAX_WS_URL_LENGTH, pattern=r"(?s)wss?://.*"
        ),
        token=fields.string(
            data,
            "token",
            min_length=MIN_SESSION_TOKEN_LENGTH,
            max_length=MAX_SESSION_TOKEN_LENGTH,
        ),
        client_key=fields.string(
            data, "client_key", min_length=1, max_length=MAX_CLIENT_KEY_LENGTH
        ),
        expires_at=fields.aware_datetime(data, "expires_at"),
        services=_services(data),
        operator=fields.string(data, "operator", default="", max_length=MAX_OPERATOR_LENGTH),
        reason=fields.string(data, "reason", default="", max_length=MAX_REASON_LENGTH),
        max_duration_s=fields.positive_number(data, "max_duration_s"),
        idle_timeout_s=fields.positive_number(data, "idle_timeout_s"),
        device=fields.optional_string(data, "device", pattern=DEVICE_ID_PATTERN),
    )


def parse_close(body: Mapping[str, Any]) -> SessionClose:
    """Check a ``session.close`` body.

    Raises:
        InvalidField: naming the first field that is wrong (never its value).
    """
    data = dict(body)
    session_id = fields.string(data, "session_id", pattern=SESSION_ID_PATTERN)
    reason = fields.string(data, "reason", default="operator")
    for known in CLOSE_REASONS:
        if reason == known:
            return SessionClose(session_id=session_id, reason=known)
    raise InvalidField(where="reason", message="Input should be a known close reason")


def parse_decide(body: Mapping[str, Any]) -> SessionDecide:
    """Check a ``session.decide`` body.

    Raises:
        InvalidField: naming the first field that is wrong (never its value).
    """
    data = dict(body)
    session_id = fields.string(data, "session_id", pattern=SESSION_ID_PATTERN)
    verdict_text = fields.string(data, "verdict")
    via_text = fields.string(data, "via")
    verdict = next((v for v in SESSION_VERDICTS if v == verdict_text), None)
    if verdict is None:
        raise InvalidField(where="verdict", message="Input should be 'approve' or 'deny'")
    # A web decision never claims to be the device's own (local) one.
    via = next((v for v in DECISION_VIAS if v == via_text and v != "local"), None)
    if via is None:
        raise InvalidField(where="via", message="Input should be 'web' or 'link'")
    return SessionDecide(
        session_id=session_id,
        verdict=verdict,
        approver=fields.string(data, "approver", min_length=1, max_length=MAX_APPROVER_LENGTH),
        via=via,
        reason=fields.string(data, "reason", default="", max_length=MAX_REASON_LENGTH),
        services=_services(data),
        max_duration_s=fields.positive_number(data, "max_duration_s"),
    )


def _services(data: dict[str, Any]) -> list[str] | None:
    value = data.get("services")
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidField(where="services", message="Input should be a valid list")
    return [
        fields.checked_string(
            item, f"services.{index}", 1, MAX_SERVICE_NAME_LENGTH, SERVICE_NAME_PATTERN
        )
        for index, item in enumerate(value)
    ]
