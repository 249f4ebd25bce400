"""The pipe between the agent and a session process: one JSON object a line, standard library only.

A remote session's SSH stack (asyncssh, websockets, cryptography's SSH parts)
runs in a process of its own (:mod:`agent.remote.session_main`), started by the
agent as the agent's user and gone when the session ends, so that an agent
that served a session returns to its idle footprint. The agent keeps the site
policy, consent, the control socket and the MQTT link; the pipe carries the
rest.

Agent to session process (its stdin)::

    {"type": "start", "session": {...}}   once, first: see :class:`StartSession`
    {"type": "end", "reason": "site_ended"}   end it (any close reason)

End of file on stdin means the agent has gone: the session ends (``site_ended``).

Session process to agent (its stdout; the process's own prints go to stderr)::

    {"type": "refusal", "kind": "forward", "target": "db:5432", "reason": "..."}
    {"type": "ready"}                                   the server's client is in
    {"type": "claimed", "fingerprint": "SHA256:...", "expires_at": "..."}
    {"type": "outcome", "close_reason": "...", "detail": "...", "bytes_from_server": 0,
     "bytes_to_server": 0, "started_at": "..." | null, "ended_at": "...", "refusals": [...]}

``claimed`` records that the session's one-time client key authenticated: the
agent's :class:`KeyLedger` keeps it until it expires, so a replayed
``session.open`` naming the same key is refused in the next session process.
A line is at most :data:`MAX_LINE` bytes; anything else on the pipe is a
protocol error, and the session ends with ``error``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, cast, get_args

from agent.remote.outcome import Refusal, RefusalKind, SessionOutcome
from agent.remote.policy import ServiceTarget, SitePolicy
from shared.ids import utcnow
from shared.wire import CLOSE_REASONS, CloseReason

#: The longest line either side writes (an outcome with its 50 refusals fits many times).
MAX_LINE: Final = 1024 * 1024
#: Refusals carried in an outcome (``session.closed`` lists at most this many).
MAX_OUTCOME_REFUSALS: Final = 50
_REFUSAL_KINDS: Final = frozenset(get_args(RefusalKind))


class PipeError(ValueError):
    """A line on the pipe that is not part of the protocol."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as its line (JSON, newline-terminated)."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line as its message.

    Raises:
        PipeError: Not a JSON object with a string ``type``.
    """
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        msg = "not a line of JSON"
        raise PipeError(msg) from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        msg = "not a message"
        raise PipeError(msg)
    return message


# the session's parameters ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartSession:
    """What the session process needs to dial and serve one session.

    Attributes:
        session_id: The session.
        ws_url: The tunnel endpoint (``session.open``'s ``ws_url``).
        token: The session token (a secret: it crosses the pipe, never argv or a log).
        client_key: The one-time client key, OpenSSH format.
        expires_at: When the key stops being accepted.
        policy: The site policy, narrowed and limited for this session.
        host_key_path: The device's SSH host key.
        proxy: ``True`` (the environment's), a proxy URL, or ``None`` (direct).
        ca_file: Extra CA certificates for ``wss://`` (the device CA).
        connect_timeout_s: Limit on the tunnel's handshakes.
        used_keys: Fingerprints of client keys already used, with their expiry.
    """

    session_id: str
    ws_url: str
    token: str = field(repr=False)
    client_key: str
    expires_at: datetime
    policy: SitePolicy
    host_key_path: Path
    proxy: str | Literal[True] | None = True
    ca_file: Path | None = None
    connect_timeout_s: float = 10.0
    used_keys: dict[str, datetime] = field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        """The ``start`` message."""
        return {
            "type": "start",
            "session": {
                "session_id": self.session_id,
                "ws_url": self.ws_url,
                "token": self.token,
                "client_key": self.client_key,
                "expires_at": self.expires_at.isoformat(),
                "policy": policy_to_wire(self.policy),
                "host_key_path": str(self.host_key_path),
                "proxy": self.proxy,
                "ca_file": None if self.ca_file is None else str(self.ca_file),
                "connect_timeout_s": self.connect_timeout_s,
                "used_keys": {fp: at.isoformat() for fp, at in self.used_keys.items()},
            },
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> StartSession:
        """Read a ``start`` message.

        Raises:
            PipeError: It is not one.
        """
        body = message.get("session")
        if message.get("type") != "start" or not isinstance(body, dict):
            msg = "the first message must be start"
            raise PipeError(msg)
        try:
            proxy = body["proxy"]
            if proxy is not True and proxy is not None and not isinstance(proxy, str):
                msg = "bad proxy"
                raise PipeError(msg)
            return cls(
                session_id=str(body["session_id"]),
                ws_url=str(body["ws_url"]),
                token=str(body["token"]),
                client_key=str(body["client_key"]),
                expires_at=read_time(body["expires_at"]),
                policy=policy_from_wire(body["policy"]),
                host_key_path=Path(body["host_key_path"]),
                proxy=proxy,
                ca_file=None if body["ca_file"] is None else Path(body["ca_file"]),
                connect_timeout_s=float(body["connect_timeout_s"]),
                used_keys={str(fp): read_time(at) for fp, at in body["used_keys"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"malformed start message: {exc.__class__.__name__}"
            raise PipeError(msg) from exc


def policy_to_wire(policy: SitePolicy) -> dict[str, Any]:
    """A site policy as JSON values."""
    return {
        "services": {name: [t.host, t.port] for name, t in policy.services.items()},
        "allowed_services": (
            None if policy.allowed_services is None else sorted(policy.allowed_services)
        ),
        "consent": policy.consent,
        "approval_timeout_s": policy.approval_timeout_s,
        "max_duration_s": policy.max_duration_s,
        "idle_timeout_s": policy.idle_timeout_s,
        "sftp_folders": {name: str(path) for name, path in policy.sftp_folders.items()},
        "login_shell": policy.login_shell,
        "max_sessions": policy.max_sessions,
        "shell_helper": None if policy.shell_helper is None else str(policy.shell_helper),
        "shell_user": policy.shell_user,
        "allow_shell": policy.allow_shell,
    }


def policy_from_wire(data: dict[str, Any]) -> SitePolicy:
    """The site policy :func:`policy_to_wire` wrote."""
    allowed = data["allowed_services"]
    return SitePolicy(
        services={
            str(name): ServiceTarget(str(name), str(host), int(port))
            for name, (host, port) in data["services"].items()
        },
        allowed_services=None if allowed is None else frozenset(str(n) for n in allowed),
        consent=data["consent"],
        approval_timeout_s=float(data["approval_timeout_s"]),
        max_duration_s=float(data["max_duration_s"]),
        idle_timeout_s=float(data["idle_timeout_s"]),
        sftp_folders={str(k): Path(v) for k, v in data["sftp_folders"].items()},
        login_shell=data["login_shell"],
        max_sessions=int(data["max_sessions"]),
        shell_helper=None if data["shell_helper"] is None else Path(data["shell_helper"]),
        shell_user=str(data["shell_user"]),
        # Absent from an older agent's message: never more than a shell-less policy allows.
        allow_shell=data.get("allow_shell") is True,
    )


# the session's reports -------------------------------------------------------------------


def refusal_message(refusal: Refusal) -> dict[str, Any]:
    """A ``refusal`` message."""
    return {
        "type": "refusal",
        "kind": refusal.kind,
        "target": refusal.target,
        "reason": refusal.reason,
    }


def read_refusal(message: dict[str, Any]) -> Refusal:
    """The refusal of a ``refusal`` message (or of an outcome's list).

    Raises:
        PipeError: Not a refusal.
    """
    kind, target, reason = message.get("kind"), message.get("target"), message.get("reason")
    if kind not in _REFUSAL_KINDS or not isinstance(target, str) or not isinstance(reason, str):
        msg = "malformed refusal"
        raise PipeError(msg)
    return Refusal(kind=cast("RefusalKind", kind), target=target, reason=reason)


def outcome_message(outcome: SessionOutcome) -> dict[str, Any]:
    """An ``outcome`` message (at most :data:`MAX_OUTCOME_REFUSALS` refusals)."""
    return {
        "type": "outcome",
        "close_reason": outcome.close_reason,
        "detail": outcome.detail,
        "bytes_from_server": outcome.bytes_from_server,
        "bytes_to_server": outcome.bytes_to_server,
        "started_at": None if outcome.started_at is None else outcome.started_at.isoformat(),
        "ended_at": outcome.ended_at.isoformat(),
        "refusals": [refusal_message(r) for r in outcome.refusals[:MAX_OUTCOME_REFUSALS]],
    }


def read_outcome(session_id: str, message: dict[str, Any]) -> SessionOutcome:
    """The outcome of an ``outcome`` message.

    Raises:
        PipeError: Not an outcome.
    """
    try:
        reason = message["close_reason"]
        if reason not in CLOSE_REASONS:
            msg = "unknown close reason"
            raise PipeError(msg)
        started = message["started_at"]
        return SessionOutcome(
            session_id=session_id,
            close_reason=cast("CloseReason", reason),
            detail=str(message["detail"]),
            bytes_from_server=int(message["bytes_from_server"]),
            bytes_to_server=int(message["bytes_to_server"]),
            started_at=None if started is None else read_time(started),
            ended_at=read_time(message["ended_at"]),
            refusals=[read_refusal(r) for r in message["refusals"][:MAX_OUTCOME_REFUSALS]],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, PipeError):
            raise
        msg = f"malformed outcome: {exc.__class__.__name__}"
        raise PipeError(msg) from exc


def read_time(value: Any) -> datetime:
    """An aware time as ``datetime.isoformat`` wrote it (full precision, with its offset)."""
    if not isinstance(value, str):
        msg = "a time is an ISO 8601 string"
        raise PipeError(msg)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        msg = "a time must carry its offset"
        raise PipeError(msg)
    return parsed


# single use of the one-time client keys, across session processes ---------------------


def key_fingerprint(openssh_key: str) -> str | None:
    """The SHA256 fingerprint of an OpenSSH public key, as OpenSSH and asyncssh print it.

    Returns:
        ``SHA256:<base64, unpadded>`` of the key blob, or ``None`` for a malformed key
        (the session process then refuses it with its own words).
    """
    parts = openssh_key.split()
    if len(parts) < 2:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


class KeyLedger:
    """The agent's record of one-time client keys: used (until expiry) or held by a live session.

    A key is *held* from the moment a session process is started with it until
    that process ends; *used* once the process reports it ``claimed``. A second
    session naming a held or used key is started with that key marked used, so
    its SSH server refuses it (``session key already used``), as the single
    in-process ledger did before sessions ran in processes of their own.
    """

    def __init__(self) -> None:
        self._used: dict[str, datetime] = {}
        self._held: dict[str, int] = {}

    def reserve(self, fingerprint: str | None, expires_at: datetime) -> dict[str, datetime]:
        """Hold ``fingerprint`` for a new session; the keys it must treat as used."""
        self._prune()
        if fingerprint is None:
            return {}
        taken = fingerprint in self._used or fingerprint in self._held
        self._held[fingerprint] = self._held.get(fingerprint, 0) + 1
        return {fingerprint: expires_at} if taken else {}

    def claim(self, fingerprint: str, expires_at: datetime) -> None:
        """Record that ``fingerprint`` authenticated a session."""
        self._used[fingerprint] = max(expires_at, self._used.get(fingerprint, expires_at))

    def release(self, fingerprint: str | None) -> None:
        """The session holding ``fingerprint`` has ended."""
        if fingerprint is None or fingerprint not in self._held:
            return
        self._held[fingerprint] -= 1
        if self._held[fingerprint] <= 0:
            del self._held[fingerprint]

    def is_used(self, fingerprint: str) -> bool:
        """Whether ``fingerprint`` has authenticated a session that has not expired."""
        self._prune()
        return fingerprint in self._used

    def _prune(self) -> None:
        now = utcnow()
        for fingerprint in [fp for fp, at in self._used.items() if at <= now]:
            del self._used[fingerprint]


#: The agent process's ledger.
KEY_LEDGER: Final = KeyLedger()
