"""Remote sessions over HTTP: open, list, read, close, exec, recording.

The routes follow docs/protocol.md. The sessions' WebSockets (the terminal and
forward sockets) are in :mod:`server.api.routes.session_sockets`; observing a
session and letting an observer type, in :mod:`server.api.routes.session_observers`;
the site's approval, in :mod:`server.api.routes.approvals`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import FileResponse
from sqlmodel import Session, col, func, select

from server.api.deps import DbDep, OperatorUser, ScopeDep, SiteUser, client_address
from server.api.responses import DB_INT_MAX
from server.models import (
    BOUND_ROLES,
    ExecRequest,
    ExecResultPublic,
    RemoteSession,
    RemoteSessionCreate,
    RemoteSessionPublic,
    RemoteSessionsPublic,
    User,
)
from server.scope import Scope
from server.sessions.errors import AgentNotConnected, TunnelError
from server.sessions.recording import CONTENT_TYPE
from server.sessions.repository import may_operate, recording_file
from server.sessions.service import SessionService
from shared.errors import NotFound
from shared.ids import utcnow

router = APIRouter(tags=["sessions"])


def get_service(request: Request) -> SessionService:
    """The process's session service (503 while sessions are off)."""
    service: SessionService | None = getattr(request.app.state, "sessions", None)
    if service is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "sessions are not available")
    return service


def _owned(db: Session, session_id: str, user: User, scope: Scope) -> RemoteSession:
    """The session, when the user may act on it: 404 outside their scope (as if there were
    none); a site user may act on every session on their devices, an operator on their own."""
    row = db.get(RemoteSession, session_id)
    if row is None or not (scope.unrestricted or scope.sees_device(db, row.device_id)):
        msg = f"no session {session_id!r}"
        raise NotFound(msg)
    if user.role in BOUND_ROLES:
        return row
    if not may_operate(row, user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this session belongs to another operator")
    return row


#: How long ``GET`` of a session may first wait for its state to change, seconds.
WaitQuery = Annotated[float, Query(ge=0, le=60)]


async def followed(
    db: Session,
    request: Request,
    read: Callable[[], RemoteSession],
    *,
    wait_s: float,
    since: str | None,
) -> RemoteSessionPublic:
    """The session ``read`` gives, shown by :func:`live_public`; with ``wait_s`` and
    ``since``, read again once its live state left ``since`` (or ``wait_s`` passed)."""
    row = read()
    service: SessionService | None = getattr(request.app.state, "sessions", None)
    if wait_s and service is not None and since is not None and service.state(row.id) == since:
        db.commit()  # no connection held while waiting
        await service.wait_changed(row.id, wait_s)
        db.expire_all()
        row = read()
    return live_public(row, service)


def live_public(row: RemoteSession, service: SessionService | None) -> RemoteSessionPublic:
    """The session as the API shows it, with its live state while this server holds it."""
    public = RemoteSessionPublic.of(row)
    live_state = service.state(row.id) if service is not None else None
    if live_state is not None and row.state != "closed":
        public.state = live_state
    return public


@router.post("/devices/{device_id}/sessions", status_code=201)
async def open_session(
    device_id: str,
    body: RemoteSessionCreate,
    request: Request,
    user: OperatorUser,
    scope: ScopeDep,
    db: DbDep,
) -> RemoteSessionPublic:
    """Open a remote session to a device (reason required; 404 outside the user's scope)."""
    scope.check_device(db, device_id)
    db.commit()  # no connection held while the session is set up
    service = get_service(request)
    row = await service.open(
        device_id,
        operator=user.username,
        reason=body.reason,
        incident_id=body.incident_id,
        services=body.services,
        origin=request.headers.get("x-fieldlink-origin", "api")[:16],
        source_ip=client_address(request),
        base_url=str(request.base_url),
    )
    if body.keepalive:
        # Its client beats from now on; without a beat it is closed (operator_gone).
        await asyncio.to_thread(_keep_alive, request, row)
    return live_public(row, service)


def _keep_alive(request: Request, row: RemoteSession) -> None:
    from server.sessions.heartbeat import keep_alive

    engine = request.app.state.engine
    with Session(engine) as db:
        keep_alive(db, row.id, utcnow())
    row.operator_seen_at = utcnow()


@router.get("/sessions")
def list_sessions(
    db: DbDep,
    request: Request,
    _user: SiteUser,
    scope: ScopeDep,
    device_id: str | None = None,
    state: str | None = None,
    operator: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> RemoteSessionsPublic:
    """Sessions, newest first, filtered by device, state or operator (those on the user's
    scope's devices only)."""
    query = select(RemoteSession).where(scope.where_device(col(RemoteSession.device_id)))
    if device_id:
        query = query.where(RemoteSession.device_id == device_id)
    if state == "open":
        query = query.where(RemoteSession.state != "closed")
    elif state:
        query = query.where(RemoteSession.state == state)
    if operator:
        query = query.where(RemoteSession.operator == operator)
    total = db.exec(select(func.count()).select_from(query.subquery())).one()
    rows = db.exec(
        query.order_by(col(RemoteSession.created_at).desc()).offset(offset).limit(limit)
    ).all()
    service = getattr(request.app.state, "sessions", None)
    return RemoteSessionsPublic(items=[live_public(row, service) for row in rows], count=total)


@router.get("/sessions/{session_id}")
async def get_session(
    session_id: str,
    db: DbDep,
    request: Request,
    user: SiteUser,
    scope: ScopeDep,
    wait_s: WaitQuery = 0,
    since: str | None = None,
) -> RemoteSessionPublic:
    """One session; with ``wait_s``, first waits that long for its state to leave ``since``."""
    return await followed(
        db, request, lambda: _owned(db, session_id, user, scope), wait_s=wait_s, since=since
    )


@router.delete("/sessions/{session_id}")
async def close_session(
    session_id: str, db: DbDep, request: Request, user: SiteUser, scope: ScopeDep
) -> RemoteSessionPublic:
    """Close a session (the tunnel is torn down before this answers); a site user may end
    any session on their devices."""
    _owned(db, session_id, user, scope)
    service = get_service(request)
    row = await service.close(
        session_id, reason="operator", actor=user.username, source_ip=client_address(request)
    )
    return live_public(row, service)


@router.post("/sessions/{session_id}/exec")
async def exec_command(
    session_id: str,
    body: ExecRequest,
    db: DbDep,
    request: Request,
    user: OperatorUser,
    scope: ScopeDep,
) -> ExecResultPublic:
    """Run one command on the device (no PTY) and return its output."""
    _owned(db, session_id, user, scope)
    service = get_service(request)
    try:
        exit_status, stdout, stderr = await service.run(
            session_id,
            body.command,
            actor=user.username,
            timeout_s=body.timeout_s,
            source_ip=client_address(request),
        )
    except AgentNotConnected as exc:
        raise HTTPException(status.HTTP_504_GATEWAY_TIMEOUT, str(exc)) from exc
    except TunnelError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from exc
    return ExecResultPublic(exit_status=exit_status, stdout=stdout, stderr=stderr)


@router.get(
    "/sessions/{session_id}/recording",
    response_class=FileResponse,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
def get_recording(session_id: str, db: DbDep, user: SiteUser, scope: ScopeDep) -> FileResponse:
    """The session's shell recording (asciicast v2), once the session is closed."""
    row = _owned(db, session_id, user, scope)
    path = recording_file(row)
    if path is None:
        detail = (
            "the recording is ready when the session closes"
            if row.state != "closed"
            else "this session has no shell recording"
        )
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail)
    return FileResponse(
        path,
        media_type=CONTENT_TYPE,
        filename=f"{session_id}.cast",
        headers={"X-Content-SHA256": row.recording_sha256 or ""},
    )
