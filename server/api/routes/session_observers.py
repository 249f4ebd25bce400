"""Observing a live session, and letting an observer type.

- ``WS /api/v1/sessions/{id}/observe``: a second pair of eyes, read only: the
  terminal's output as binary frames, and ``{"type": "observer", "event":
  "join"|"leave", "user": ...}`` text frames (also sent to the owner's
  terminal). Keystrokes are refused (``{"type": "error", "detail": "observers
  cannot type"}``) and never reach the device. Only the assignee of an
  incident the session is linked to, or an admin, may observe (4403 otherwise);
  joins and leaves are audited (``session.observe_join``/``session.observe_leave``).
- The session's owner may let an observer type (``POST
  /api/v1/sessions/{id}/observers/{user}/allow-input``; ``DELETE`` revokes):
  while allowed, that observer's keystrokes reach the shell through the
  owner's open terminal. Grants, revokes and the first keystroke after a
  grant are audited (``session.observer_input_allowed``,
  ``session.observer_input_revoked``, ``session.observer_typed``) and
  announced to everyone in the session.

The socket authenticates like the others (:mod:`server.api.routes.session_sockets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, WebSocket, status
from fastapi import Path as PathParam
from pydantic import BaseModel
from sqlmodel import Session
from starlette.websockets import WebSocketState

from server import audit
from server.api.deps import DbDep, OperatorUser, client_address
from server.api.routes.session_sockets import in_scope, send_revoked, watch_access
from server.models import RemoteSession, User, role_at_least
from server.sessions import bridges
from server.sessions.observers import Audience
from server.sessions.repository import may_observe
from server.sessions.service import SessionService
from shared.errors import NotFound
from shared.wire import WS_FORBIDDEN, WS_NORMAL, WS_NOT_FOUND, WS_SESSION_CLOSED, WS_UNAUTHORIZED

logger = logging.getLogger(__name__)

router = APIRouter(tags=["sessions"])


#: An observer's user name in a path (user names are at most 64 characters).
ObserverName = Annotated[str, PathParam(min_length=1, max_length=64)]


class ObserverInput(BaseModel):
    """Who may type in a live session besides its owner."""

    session_id: str
    observer: str
    input_allowed: bool
    observers: list[str]
    typists: list[str]


def _audit_observer(websocket: WebSocket, action: str, row: RemoteSession, user: User) -> None:
    with Session(websocket.app.state.engine) as db:
        audit.record(
            db,
            actor=user.username,
            action=action,
            target=row.device_id,
            details={
                "session_id": row.id,
                "incident_id": row.incident_id,
                "owner": row.operator,
            },
            source_ip=websocket.client.host if websocket.client else None,
        )
        db.commit()


@router.websocket("/sessions/{session_id}/observe")
async def observe(websocket: WebSocket, session_id: str) -> None:
    """A read-only view of a live session's terminal for its incident's specialist or an admin."""
    from server.api.deps import websocket_user

    service: SessionService | None = getattr(websocket.app.state, "sessions", None)
    engine = websocket.app.state.engine

    def lookup() -> tuple[User | None, RemoteSession | None, bool]:
        with Session(engine, expire_on_commit=False) as db:
            user = websocket_user(websocket, db)
            row = in_scope(db, user, db.get(RemoteSession, session_id))
            allowed = user is not None and row is not None and may_observe(db, row, user)
            return user, row, allowed

    user, row, allowed = await asyncio.to_thread(lookup)
    await websocket.accept()
    if user is None:
        await websocket.close(code=WS_UNAUTHORIZED, reason="not authenticated")
        return
    if not role_at_least(user.role, "operator"):
        await websocket.close(code=WS_FORBIDDEN, reason="this needs the operator role")
        return
    if row is None:
        await websocket.close(code=WS_NOT_FOUND, reason="no such session")
        return
    if not allowed:
        await websocket.close(
            code=WS_FORBIDDEN,
            reason="only the assignee of the session's incident or an admin may observe",
        )
        return
    audience = service.audience(session_id) if service is not None else None
    if service is None or audience is None or audience.closed:
        await websocket.close(code=WS_SESSION_CLOSED, reason="the session is not live")
        return
    listener = audience.join(output=True)
    live_audience = audience
    observer = user
    observed = row

    async def type_in(data: bytes) -> bool:
        first = await live_audience.type_in(observer.username, data)
        if first is None:
            return False
        if first:
            await asyncio.to_thread(
                _audit_observer, websocket, "session.observer_typed", observed, observer
            )
        return True

    await asyncio.to_thread(_audit_observer, websocket, "session.observe_join", row, user)
    audience.announce("join", user.username)
    await websocket.send_text(
        json.dumps({"type": "state", "state": "observing", "owner": row.operator})
    )
    logger.info("session %s observed by %s", session_id, user.username)
    try:
        # An observer keeps needing the operator role (its join was checked above).
        with watch_access(websocket, service, session_id, user, needed="operator") as channel:
            end = await bridges.pump_observer(
                websocket, listener, revoked=channel.revoked, type_in=type_in
            )
    finally:
        audience.leave(listener)
        audience.announce("leave", user.username)
        await asyncio.to_thread(_audit_observer, websocket, "session.observe_leave", row, user)
    if end.revoked:
        await send_revoked(websocket, channel.why)
    elif websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(
                code=WS_SESSION_CLOSED if audience.closed else WS_NORMAL,
                reason="the session ended" if audience.closed else "fell behind",
            )


def _owner_audience(
    db: Session, request: Request, session_id: str, user: User
) -> tuple[RemoteSession, Audience]:
    """The session (the caller must own it) and its audience on this server."""
    row = in_scope(db, user, db.get(RemoteSession, session_id))
    if row is None:
        msg = f"no session {session_id!r}"
        raise NotFound(msg)
    if row.operator != user.username:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only the session's owner may let an observer type"
        )
    service: SessionService | None = getattr(request.app.state, "sessions", None)
    audience = service.audience(session_id) if service is not None else None
    if audience is None or audience.closed:
        raise HTTPException(status.HTTP_409_CONFLICT, "the session is not live on this server")
    return row, audience


def _input_grant(
    db: Session, request: Request, session_id: str, username: str, user: User, *, allow: bool
) -> ObserverInput:
    row, audience = _owner_audience(db, request, session_id, user)
    if allow:
        if not audience.allow_input(username, by=user.username):
            raise HTTPException(status.HTTP_409_CONFLICT, f"{username!r} is not observing")
    elif not audience.revoke_input(username, by=user.username):
        raise HTTPException(status.HTTP_409_CONFLICT, f"{username!r} may not type")
    audit.record(
        db,
        actor=user.username,
        action="session.observer_input_allowed" if allow else "session.observer_input_revoked",
        target=row.device_id,
        details={"session_id": row.id, "observer": username, "incident_id": row.incident_id},
        source_ip=client_address(request),
    )
    db.commit()
    return ObserverInput(
        session_id=row.id,
        observer=username,
        input_allowed=allow,
        observers=list(dict.fromkeys(audience.observers)),
        typists=sorted(audience.typists),
    )


@router.post("/sessions/{session_id}/observers/{username}/allow-input")
def allow_observer_input(
    session_id: str, username: ObserverName, db: DbDep, request: Request, user: OperatorUser
) -> ObserverInput:
    """Let an observer of your live session type into its shell (audited, announced)."""
    return _input_grant(db, request, session_id, username, user, allow=True)


@router.delete("/sessions/{session_id}/observers/{username}/allow-input")
def revoke_observer_input(
    session_id: str, username: ObserverName, db: DbDep, request: Request, user: OperatorUser
) -> ObserverInput:
    """Take the keyboard back from an observer (audited, announced)."""
    return _input_grant(db, request, session_id, username, user, allow=False)
