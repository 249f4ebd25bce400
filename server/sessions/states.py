"""A remote session's state machine: the one place that says which move is allowed.

A session moves through ``requested -> awaiting_consent -> connecting ->
active -> closed`` and only forward: a step may be skipped (a site without
consent goes from ``requested`` to ``connecting``), never taken back. An
agent event that arrives late (``session.approved`` after the tunnel is
already up) therefore cannot move an ``active`` session back to
``connecting``, and nothing leaves ``closed``.

:class:`LiveSession` is what the holding process keeps for one open session;
its :meth:`~LiveSession.move` is the only way its state changes. The
database side follows the same rule: :func:`earlier_than` gives the states a
conditional ``UPDATE`` may move a row from (see
:mod:`server.sessions.repository`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final, get_args

from server.sessions.observers import Audience
from shared import wire
from shared.wire import OPEN_SESSION_STATES as OPEN_STATES
from shared.wire import SESSION_STATES, CloseReason

if TYPE_CHECKING:
    from server.sessions.client import AgentConnection
    from server.sessions.recording import Recording

__all__ = [
    "ACCESS_REVOKED",
    "CLOSE_REASONS",
    "OPEN_STATES",
    "SERVER_RESTART",
    "SESSION_STATES",
    "LiveSession",
    "can_move",
    "earlier_than",
    "move_on_event",
    "refusal_reason",
]

#: Every close reason (docs/protocol.md, session ``close_reason``).
CLOSE_REASONS: Final[tuple[str, ...]] = get_args(CloseReason)
#: The close reason of sessions whose server stopped (or was judged dead).
SERVER_RESTART: Final[CloseReason] = "server_restart"
#: The close reason (and WebSocket close reason) when the operator's access was withdrawn.
ACCESS_REVOKED: Final[CloseReason] = "access_revoked"
#: Command result errors of ``session.open`` that are the site's refusal.
_SITE_REFUSALS: Final = frozenset({"not_allowed", "site_denied", "denied"})

#: Each state's place in the order a session moves through them.
_ORDER: Final[dict[str, int]] = {state: place for place, state in enumerate(SESSION_STATES)}


def can_move(current: str, target: str) -> bool:
    """Whether a session in ``current`` may move to ``target`` (forward only)."""
    return _ORDER[target] > _ORDER[current]


def earlier_than(state: str) -> list[str]:
    """The states a session may move to ``state`` from."""
    return [name for name in SESSION_STATES if _ORDER[name] < _ORDER[state]]


def move_on_event(current: str, event_type: str) -> str | None:
    """Where an agent's ``session.*`` event moves a session in ``current`` (``None``: nowhere).

    ``session.denied`` closes a session that is not active yet (an active one was
    approved already: a late denial is ignored).
    """
    if event_type == wire.SESSION_AWAITING_CONSENT:
        target = "awaiting_consent"
    elif event_type == wire.SESSION_APPROVED:
        target = "connecting"
    elif event_type == wire.SESSION_DENIED:
        return "closed" if current not in ("active", "closed") else None
    else:
        return None
    return target if can_move(current, target) else None


def refusal_reason(error: str) -> str:
    """The close reason of a refused ``session.open`` (the site's refusal, or an error)."""
    return "site_denied" if error in _SITE_REFUSALS else "error"


#: How long after the agent's own limit the server ends a session itself.
CAP_GRACE_S: Final = 5.0


@dataclass(slots=True)
class LiveSession:
    """What the holding process keeps for one open session."""

    session_id: str
    device_id: str
    operator: str
    max_duration_s: float
    expires_at: datetime
    #: The device whose agent runs the session: the device itself, or the site gateway
    #: that watches it (``devices.via``); commands go to it and its events count.
    agent_id: str = ""
    opened: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    connection: AgentConnection | None = None
    state: str = "requested"
    services_used: list[str] = field(default_factory=list)
    recording: Recording | None = None
    #: Observers of the terminal output, and the announcements of their joins and leaves.
    audience: Audience = field(default_factory=Audience)
    shells: int = 0
    #: The close reason once a close was asked for (the row is written later).
    closing: str | None = None
    detail: str | None = None
    #: Set (and replaced) at every move: waiters see each change once.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once the closed row is written.
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The server's own cap while the session is active, and when it became active
    #: (the event loop's clock): :meth:`cap` moves it.
    deadline: asyncio.Timeout | None = None
    active_at: float = 0.0
    #: Whether :meth:`cap` lowered :attr:`max_duration_s` to the agent's limit.
    capped: bool = False

    def __post_init__(self) -> None:
        if not self.agent_id:
            self.agent_id = self.device_id

    def cap(self, seconds: object) -> bool:
        """The agent runs the session for at most ``seconds`` (its policy, or a site's
        approval for a shorter time): the server's own cap follows, :data:`CAP_GRACE_S`
        later, so the agent's close (with its report) comes first. Whether it moved."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return False
        if not 0 < seconds < self.max_duration_s:
            return False
        self.max_duration_s = float(seconds)
        self.capped = True
        if self.deadline is not None:
            self.deadline.reschedule(self.active_at + float(seconds) + CAP_GRACE_S)
        return True

    def cap_s(self) -> float:
        """How long the server lets the session run once active."""
        return self.max_duration_s + (CAP_GRACE_S if self.capped else 0.0)

    def move(self, state: str) -> bool:
        """Move to ``state`` if the state machine allows it; whether it moved.

        Waiters on :attr:`changed` are woken at once, except for ``closed``: they
        are woken (by :meth:`mark_closed`) once the closed row is written, so that
        they read its close reason.
        """
        if not can_move(self.state, state):
            return False
        self.state = state
        if state != "closed":
            self.changed.set()
            self.changed = asyncio.Event()
        return True

    def mark_closed(self) -> None:
        """The closed row is written: wake every waiter."""
        self.changed.set()
        self.closed.set()
