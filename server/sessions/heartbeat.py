"""The operator's heartbeat: a session whose client vanished is closed, not left holding a slot.

``fieldlink exec|connect|ssh`` open their session with ``keepalive`` and then
beat (``POST /api/v1/sessions/{id}/heartbeat``) every third of
``operator_heartbeat_timeout_s`` while they use it. A client killed with
``kill -9``, or whose machine lost the network, stops beating: the
``operator-heartbeat`` upkeep job of the process that holds the session closes
it with reason ``operator_gone`` (audited as ``session.close``, like every
close) once no beat came for the timeout. A session no client keeps alive (the
console's, ``fieldlink session open``'s: ``operator_seen_at`` is ``NULL``) is
never closed for this.

The beat is a column of the row (``remote_session.operator_seen_at``), not
memory: it may reach any server process behind a balancer, while only the
holder (``remote_session.instance``) closes the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.models import OPEN_STATES, RemoteSession
from shared.ids import utcnow

if TYPE_CHECKING:
    from server.sessions.service import SessionService

logger = logging.getLogger(__name__)

#: The close reason of a session whose operator's client stopped beating.
OPERATOR_GONE: Final = "operator_gone"
#: The upkeep job's name.
HEARTBEAT_JOB: Final = "operator-heartbeat"


def beat(db: Session, session_id: str, now: datetime) -> bool:
    """Record a heartbeat of the session's client; whether the session is still open."""
    result = db.execute(
        sa.update(RemoteSession)
        .where(col(RemoteSession.id) == session_id, col(RemoteSession.state).in_(OPEN_STATES))
        .values(operator_seen_at=now)
    )
    db.commit()
    return bool(getattr(result, "rowcount", 0))


def keep_alive(db: Session, session_id: str, now: datetime) -> None:
    """Mark a session just opened as kept alive by its client (its first beat)."""
    beat(db, session_id, now)


def abandoned(db: Session, instance: str, timeout_s: float, now: datetime) -> list[tuple[str, str]]:
    """``(session id, operator)`` of the open sessions ``instance`` holds whose client
    has not beaten for ``timeout_s``."""
    cutoff = now - timedelta(seconds=timeout_s)
    rows = db.exec(
        select(RemoteSession.id, RemoteSession.operator).where(
            col(RemoteSession.instance) == instance,
            col(RemoteSession.state).in_(OPEN_STATES),
            col(RemoteSession.operator_seen_at).is_not(None),
            col(RemoteSession.operator_seen_at) < cutoff,
        )
    ).all()
    return [(session_id, operator) for session_id, operator in rows]


class OperatorHeartbeat:
    """The ``operator-heartbeat`` job of one server process.

    Args:
        service: The process's sessions (what it holds, and how to close them).
        timeout_s: ``operator_heartbeat_timeout_s``.
        clock: The current time (tests move it).
    """

    def __init__(
        self, service: SessionService, timeout_s: float, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.service = service
        self.timeout_s = timeout_s
        self.clock = clock

    @property
    def interval_s(self) -> float:
        """How often the job looks: a third of the timeout, at most 15 s."""
        return min(self.timeout_s / 3, 15.0)

    async def sweep(self) -> list[str]:
        """Close the sessions whose client stopped beating; the ids closed."""
        engine = self.service.engine
        instance = self.service.instance

        def find() -> list[tuple[str, str]]:
            with Session(engine) as db:
                return abandoned(db, instance, self.timeout_s, self.clock())

        closed: list[str] = []
        for session_id, operator in await asyncio.to_thread(find):
            detail = (
                f"no heartbeat from {operator}'s client for {self.timeout_s:g} s "
                "(killed, or its network is gone)"
            )
            logger.info("session %s: %s", session_id, detail)
            await self.service.close(
                session_id, reason=OPERATOR_GONE, actor="server", detail=detail
            )
            closed.append(session_id)
        return closed
