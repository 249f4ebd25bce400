"""The wire vocabulary of protocol version 1: names, limits and shapes, standard library only.

Everything an agent and the server must agree on to talk is named here once:
the protocol version, payload and field limits, the ``Literal`` types of
health status, fault severity, session state and close reason, the types of
commands and device events, the WebSocket close codes of the session sockets,
and the JSON shapes of a health sample and a fault as ``TypedDict``\\ s.

The pydantic models (:mod:`shared.models`) are built from these names and
limits; the agent uses them directly, without pydantic (about 20 MB resident
the idle agent does without). An import-linter contract keeps this module free
of every third-party import. docs/protocol.md describes the same contract for
readers.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal, NotRequired, TypedDict, get_args

#: The ``v`` of every message.
PROTOCOL_VERSION: Final = 1

# -- limits -------------------------------------------------------------------------------

#: Larger MQTT payloads are rejected unread (and counted).
MAX_PAYLOAD_BYTES: Final = 64 * 1024
#: Counters on the wire (``seq``, ``outbox_dropped``) are JSON integers in
#: ``0..MAX_COUNTER``: 64-bit signed, what SQL's ``BIGINT`` holds.
MAX_COUNTER: Final = 2**63 - 1
#: Device ids: the certificate's CN and the broker user name.
DEVICE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,62}$"
#: Session ids: ``ses-`` and 32 hex digits.
SESSION_ID_PATTERN: Final = r"^ses-[0-9a-f]{32}$"
#: Command and event types: ``session.open``, ``fault.raised``...
TYPE_PATTERN: Final = r"^[a-z][a-z0-9_.]*$"
MAX_TYPE_LENGTH: Final = 64
#: A command's ``id``: 8 to 64 characters (an agent echoes nothing else back).
MIN_COMMAND_ID_LENGTH: Final = 8
MAX_COMMAND_ID_LENGTH: Final = 64
MAX_BOOT_ID_LENGTH: Final = 64
MAX_METRIC_NAME_LENGTH: Final = 128
MAX_FAULT_CODE_LENGTH: Final = 64
MAX_FAULT_MESSAGE_LENGTH: Final = 1024
#: Services a session may reach: allowlisted names such as ``web`` or ``vnc``.
SERVICE_NAME_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
MAX_SERVICE_NAME_LENGTH: Final = 32
#: Fields of ``session.open``.
MAX_WS_URL_LENGTH: Final = 2048
MIN_SESSION_TOKEN_LENGTH: Final = 16
MAX_SESSION_TOKEN_LENGTH: Final = 256
MAX_CLIENT_KEY_LENGTH: Final = 1024
MAX_OPERATOR_LENGTH: Final = 128
MAX_REASON_LENGTH: Final = 1024
#: Fields of ``session.refused`` and ``session.closed``.
MAX_REFUSAL_KIND_LENGTH: Final = 16
MAX_REFUSAL_TARGET_LENGTH: Final = 512
MAX_REFUSAL_REASON_LENGTH: Final = 256
MAX_CLOSE_DETAIL_LENGTH: Final = 1024

# -- values -------------------------------------------------------------------------------

HealthStatus = Literal["ok", "warning", "fault"]
HEALTH_STATUSES: Final[tuple[HealthStatus, ...]] = get_args(HealthStatus)
Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)

#: A remote session's state, in the order a session moves through them (never back).
SessionState = Literal["requested", "awaiting_consent", "connecting", "active", "closed"]
SESSION_STATES: Final[tuple[SessionState, ...]] = get_args(SessionState)
OPEN_SESSION_STATES: Final[tuple[SessionState, ...]] = SESSION_STATES[:-1]

#: Why a session ended (``close_reason``).
CloseReason = Literal[
    "operator",
    "idle_timeout",
    "max_duration",
    "site_denied",
    "site_ended",
    "agent_unreachable",
    "server_restart",
    "access_revoked",
    "operator_gone",
    "error",
]
CLOSE_REASONS: Final[frozenset[CloseReason]] = frozenset(get_args(CloseReason))
#: The reasons an agent may give when it ends a session's SSH connection itself
#: (``server_restart``, ``access_revoked``, ``operator_gone`` and ``agent_unreachable``
#: are the server's
#: to say: an agent claiming them is not believed).
AGENT_CLOSE_REASONS: Final[frozenset[CloseReason]] = frozenset(
    {"operator", "idle_timeout", "max_duration", "site_denied", "site_ended", "error"}
)

# -- command types (server -> agent, signed) ----------------------------------------------

SESSION_OPEN: Final = "session.open"
SESSION_CLOSE: Final = "session.close"
CONFIG_UPDATE: Final = "config.update"
DIAGNOSTICS_COLLECT: Final = "diagnostics.collect"
#: The server saw a gap in a device's ``seq``: the agent re-publishes the samples of
#: its current connection still in its resend window.
TELEMETRY_RESEND: Final = "telemetry.resend"
#: A site person's decision on a session awaiting consent, given on the web (the console,
#: the API or a one-time approval link): body ``session_id``, ``verdict`` (``approve`` or
#: ``deny``), ``approver``, ``via`` (``web`` or ``link``), and optionally ``reason`` (a
#: denial's), ``services`` and ``max_duration_s`` (an approval that narrows the session).
#: The agent takes it only where its policy says ``consent = "required"``.
SESSION_DECIDE: Final = "session.decide"
SessionVerdict = Literal["approve", "deny"]
SESSION_VERDICTS: Final[tuple[SessionVerdict, ...]] = get_args(SessionVerdict)
#: Where a site's decision was given: the device's own ``fieldlink agent approve|deny``
#: (``local``), the console or API (``web``), a one-time approval link (``link``).
DecisionVia = Literal["local", "web", "link"]
DECISION_VIAS: Final[tuple[DecisionVia, ...]] = get_args(DecisionVia)
MAX_APPROVER_LENGTH: Final = 128

# -- device event types (agent -> server, on ``.../events``) ------------------------------

FAULT_RAISED: Final = "fault.raised"
FAULT_CLEARED: Final = "fault.cleared"
#: A command the agent refused (forged, expired, replayed...): body ``id``, ``reason``.
COMMAND_REFUSED: Final = "command.refused"
#: Every remote-session event's type starts with it; every body has ``session_id``.
SESSION_EVENT_PREFIX: Final = "session."
SESSION_AWAITING_CONSENT: Final = "session.awaiting_consent"  # body: timeout_s
#: body: by ("site" | "policy"), consent; a site's: via (DecisionVia), approver (web, link)
SESSION_APPROVED: Final = "session.approved"
#: body: why ("denied" | "timeout" | "not_allowed"...); a site's denial: via, approver, reason
SESSION_DENIED: Final = "session.denied"
SESSION_STARTED: Final = "session.started"  # body: (tunnel open, SSH served)
SESSION_REFUSED: Final = "session.refused"  # body: kind, target, reason (one refusal)
SESSION_CLOSED: Final = "session.closed"  # body: the SessionClosedReport fields

# -- WebSocket close codes of the session sockets (terminal, forward, tunnel) -------------

WS_NORMAL: Final = 1000
WS_GOING_AWAY: Final = 1001
#: A refused tunnel (before accept the client sees HTTP 403).
WS_POLICY_VIOLATION: Final = 1008
#: What uvicorn sends on every socket when the server shuts down.
WS_SERVICE_RESTART: Final = 1012
#: The 44xx codes mirror HTTP statuses: no or bad credentials, wrong role or a
#: refused service, unknown session; 4410: the session is closed (gone).
WS_UNAUTHORIZED: Final = 4401
WS_FORBIDDEN: Final = 4403
WS_NOT_FOUND: Final = 4404
WS_SESSION_CLOSED: Final = 4410
#: The device's end is not reachable right now.
WS_UNAVAILABLE: Final = 4503

# -- JSON shapes ----------------------------------------------------------------------------


class FaultReport(TypedDict):
    """A fault as it goes on the wire, e.g. ``SC-541`` "Fuser thermistor open"."""

    code: str
    severity: Severity
    message: str


class HealthSampleReport(TypedDict):
    """A health sample as it goes on ``fieldlink/v1/{device_id}/telemetry``.

    ``seq`` starts at 0 for each ``boot_id`` and rises by one per sample; ``ts``
    is when it was collected, ``sent_at`` (added at publish time) when it was sent.
    """

    v: int
    device_id: str
    boot_id: str
    seq: int
    ts: str
    sent_at: NotRequired[str]
    status: HealthStatus
    metrics: dict[str, float]
    faults: list[FaultReport]
    outbox_dropped: int


# -- the signed form ------------------------------------------------------------------------


def canonical_json(data: dict[str, Any]) -> bytes:
    """Canonical JSON for signing: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


#: A birth's capability (``capabilities``): a gateway agent that runs sessions to the
#: devices it watches (``session.open``'s ``device``); an older one opened them on itself.
VIA_SESSIONS = "via-sessions"
