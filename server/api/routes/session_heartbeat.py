"""``POST /api/v1/sessions/{id}/heartbeat``: the operator's client still uses its session.

Kept apart from :mod:`server.api.routes.sessions` (one concern a module); the rule is
:mod:`server.sessions.heartbeat`'s. Only the session's own operator beats for it
(an admin who may close another's session does not keep it alive).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel
from sqlmodel import Session

from server.api.deps import DbDep, OperatorUser, SettingsDep
from server.models import RemoteSession
from server.sessions.heartbeat import beat
from shared.errors import NotFound
from shared.ids import utcnow

router = APIRouter(tags=["sessions"])


class Heartbeat(BaseModel):
    """The answer to a heartbeat: whether the session is still open, and the timeout."""

    session_id: str
    open: bool
    #: Without a beat for this long the server closes the session (``operator_gone``);
    #: clients beat every third of it.
    timeout_s: float


@router.post("/sessions/{session_id}/heartbeat")
async def heartbeat(
    session_id: str, db: DbDep, settings: SettingsDep, user: OperatorUser
) -> Heartbeat:
    """Keep a session alive: its client (``fieldlink exec|connect|ssh``) still runs."""
    row = db.get(RemoteSession, session_id)
    if row is None:
        msg = f"no session {session_id!r}"
        raise NotFound(msg)
    if row.operator != user.username:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this session belongs to another operator")
    bind = db.get_bind()

    def write() -> bool:
        with Session(bind) as own:
            return beat(own, session_id, utcnow())

    still_open = await asyncio.to_thread(write)
    return Heartbeat(
        session_id=session_id, open=still_open, timeout_s=settings.operator_heartbeat_timeout_s
    )
