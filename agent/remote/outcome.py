"""What a remote session reports: its refusals and how it ended (standard library only).

These are the values the SSH server (:mod:`agent.remote.sshd`, in the session
process) hands to the session controller (:mod:`agent.remote.sessions`, in the
agent), so they live apart from asyncssh: the agent reads them off the session
process's pipe (:mod:`agent.remote.pipe`) without loading the session stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from shared.ids import utcnow
from shared.wire import CloseReason

RefusalKind = Literal["forward", "channel", "auth", "sftp"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Something the session asked for and did not get.

    Attributes:
        kind: ``forward`` (direct-tcpip), ``channel`` (remote forward,
            unknown subsystem...), ``auth`` (a key not accepted), ``sftp``
            (a path outside the confined folders).
        target: What was asked for (``host:port``, a subsystem, a path).
        reason: Why it was refused.
    """

    kind: RefusalKind
    target: str
    reason: str


@dataclass(slots=True)
class SessionOutcome:
    """How a session ended, for the agent's ``session.closed`` event.

    Attributes:
        session_id: The session.
        close_reason: One of docs/protocol.md's close reasons.
        detail: A short human explanation (never a secret).
        bytes_from_server: Tunnel bytes received (SSH stream, encrypted).
        bytes_to_server: Tunnel bytes sent.
        started_at: When the tunnel opened (``None``: it never did).
        ended_at: When the session ended.
        refusals: Everything refused during the session.
    """

    session_id: str
    close_reason: CloseReason
    detail: str = ""
    bytes_from_server: int = 0
    bytes_to_server: int = 0
    started_at: datetime | None = None
    ended_at: datetime = field(default_factory=utcnow)
    refusals: list[Refusal] = field(default_factory=list)
