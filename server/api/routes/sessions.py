"""Remote sessions: open, list, read, close, exec, recording, the terminal and forward sockets.

HTTP routes follow docs/protocol.md. The two WebSockets:

- ``WS /api/v1/sessions/{id}/terminal``: an interactive PTY shell. Binary
  frames carry terminal bytes both ways (UTF-8 from most shells); a text
  frame from the client is a JSON control message
  (``{"type": "resize", "cols": 120, "rows": 40}``); the server sends text
  frames ``{"type": "state", "state": ..., "close_reason": ...}`` while the
  session is set up and when it ends, and ``{"type": "exit", "exit_status": N}``
  when the shell exits. Query ``cols``, ``rows`` and ``term`` set the PTY.
  The output is recorded (asciicast v2).
- ``WS /api/v1/sessions/{id}/forward/{service}``: a raw byte stream to one of
  the device's allowlisted services (``fieldlink connect``): binary frames
  both ways; the text frame ``{"type": "eof"}`` from the client half-closes
  (the service's answer still comes back, then the socket closes). A refused
  service closes the socket with code 4403 and the agent's reason.

- ``WS /api/v1/sessions/{id}/observe``: a second pair of eyes, read only: the
  terminal's output as binary frames, and ``{"type": "observer", "event":
  "join"|"leave", "user": ...}`` text frames (also sent to the owner's
  terminal). Keystrokes are refused (``{"type": "error", "detail": "observers
  cannot type"}``) and never reach the device. Only the assignee of an
  incident the session is linked to, or an admin, may observe (4403 otherwise);
  joins and leaves are audited (``session.observe_join``/``session.observe_leave``).
  The session's owner may let an observer type (``POST
  /api/v1/sessions/{id}/observers/{user}/allow-input``; ``DELETE`` revokes):
  while allowed, that observer's keystrokes reach the shell through the
  owner's open terminal. Grants, revokes and the first keystroke after a
  grant are audited (``session.observer_input_allowed``,
  ``session.observer_input_revoked``, ``session.observer_typed``) and
  announced to everyone in the session.

Sockets authenticate like the API (bearer header, or the console's cookie
from the same origin); only the session's operator or an admin may use the
terminal and forward sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlmodel import Session, col, func, select
from starlette.websockets import WebSocketState

from server import audit
from server.api.deps import (
    DbDep,
    OperatorUser,
    ScopeDep,
    SiteUser,
    client_address,
    websocket_token,
)
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
    role_at_least,
)
from server.scope import Scope
from server.security import hash_token
from server.sessions import bridges
from server.sessions.access import Channel
from server.sessions.errors import AgentNotConnected, TunnelError
from server.sessions.observers import Audience
from server.sessions.recording import CONTENT_TYPE
from server.sessions.repository import may_observe, recording_file
from server.sessions.service import SessionClosed, SessionService
from server.sessions.states import ACCESS_REVOKED
from shared.errors import NotFound
from shared.ids import utcnow
from shared.wire import (
    WS_FORBIDDEN,
    WS_NORMAL,
    WS_NOT_FOUND,
    WS_SESSION_CLOSED,
    WS_UNAUTHORIZED,
    WS_UNAVAILABLE,
)

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
    if row.operator != user.username and not role_at_least(user.role, "admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this session belongs to another operator")
    return row


def _public(row: RemoteSession, service: SessionService | None) -> RemoteSessionPublic:
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
    return _public(row, service)


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
    return RemoteSessionsPublic(items=[_public(row, service) for row in rows], count=total)


@router.get("/sessions/{session_id}")
async def get_session(
    session_id: str,
    db: DbDep,
    request: Request,
    user: SiteUser,
    scope: ScopeDep,
    wait_s: Annotated[float, Query(ge=0, le=60)] = 0,
    since: str | None = None,
) -> RemoteSessionPublic:
    """One session; with ``wait_s``, first waits that long for its state to leave ``since``."""
    row = _owned(db, session_id, user, scope)
    service = getattr(request.app.state, "sessions", None)
    if wait_s and service is not None and since is not None:
        state = service.state(session_id)
        if state == since:
            await service.wait_changed(session_id, wait_s)
        db.expire_all()
        row = _owned(db, session_id, user, scope)
    return _public(row, service)


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
    return _public(row, service)


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


# -- WebSockets ---------------------------------------------------------------------------


def _in_scope(db: Session, user: User | None, row: RemoteSession | None) -> RemoteSession | None:
    """``row`` if its device is in ``user``'s scope, else ``None`` (a socket's "not found")."""
    if row is None or user is None:
        return row
    scope = Scope.of(user)
    return row if scope.unrestricted or scope.sees_device(db, row.device_id) else None


async def _socket_session(
    websocket: WebSocket, session_id: str
) -> tuple[SessionService, RemoteSession, User] | None:
    """Accept a socket, authenticate it, find its session; close it and return ``None`` if not."""
    from server.api.deps import websocket_user

    service: SessionService | None = getattr(websocket.app.state, "sessions", None)
    engine = websocket.app.state.engine

    def lookup() -> tuple[User | None, RemoteSession | None]:
        with Session(engine, expire_on_commit=False) as db:
            user = websocket_user(websocket, db)
            return user, _in_scope(db, user, db.get(RemoteSession, session_id))

    user, row = await asyncio.to_thread(lookup)
    # Accepted first, so that a browser sees the close code and reason (a refused
    # handshake is only "1006" to a page's script).
    await websocket.accept()
    if user is None:
        await websocket.close(code=WS_UNAUTHORIZED, reason="not authenticated")
        return None
    if not role_at_least(user.role, "operator"):
        await websocket.close(code=WS_FORBIDDEN, reason="this needs the operator role")
        return None
    if row is None:
        await websocket.close(code=WS_NOT_FOUND, reason="no such session")
        return None
    if row.operator != user.username and not role_at_least(user.role, "admin"):
        await websocket.close(code=WS_FORBIDDEN, reason="this session belongs to another operator")
        return None
    if service is None:
        await websocket.close(code=WS_UNAVAILABLE, reason="sessions are not available")
        return None
    return service, row, user


async def _wait_active(
    websocket: WebSocket, service: SessionService, session_id: str
) -> Any | None:
    """Report the state while the session is set up; the connection once active, else ``None``."""
    waiter = asyncio.create_task(service.connection(session_id))
    try:
        last = None
        while not waiter.done():
            state = service.state(session_id)
            # "active" is sent by the caller, once its own channel is open.
            if state is not None and state != last and state != "active":
                last = state
                await websocket.send_text(json.dumps({"type": "state", "state": state}))
            await asyncio.wait({waiter}, timeout=0.25)
        return waiter.result()
    except (SessionClosed, AgentNotConnected, NotFound) as exc:
        await _send_closed(websocket, service, session_id, str(exc))
        return None
    finally:
        if not waiter.done():
            waiter.cancel()


async def _send_closed(
    websocket: WebSocket, service: SessionService, session_id: str, detail: str
) -> None:
    reason = None
    engine = websocket.app.state.engine
    # The tunnel may end a moment before the close reason is written: wait for it.
    await service.wait_closed(session_id, 5.0)

    def read() -> RemoteSession | None:
        with Session(engine) as db:
            return db.get(RemoteSession, session_id)

    row = await asyncio.to_thread(read)
    if row is not None:
        reason = row.close_reason
        detail = row.detail or detail
    with contextlib.suppress(Exception):
        await websocket.send_text(
            json.dumps(
                {"type": "state", "state": "closed", "close_reason": reason, "detail": detail}
            )
        )
        await websocket.close(code=WS_SESSION_CLOSED, reason=(reason or "closed")[:120])


def _watch(
    websocket: WebSocket,
    service: SessionService,
    session_id: str,
    user: User,
    needed: str | None = None,
) -> contextlib.AbstractContextManager[Channel]:
    """Follow this socket's access: its user, role and token (see :mod:`server.sessions.access`)."""
    token = websocket_token(websocket)
    return service.access.channel(
        session_id,
        username=user.username,
        token_hash=hash_token(token) if token else None,
        source_ip=websocket.client.host if websocket.client else None,
        needed=needed,
    )


async def _send_revoked(websocket: WebSocket, why: str | None) -> None:
    """End a socket whose user or token lost its access (``access_revoked``)."""
    with contextlib.suppress(Exception):
        await websocket.send_text(
            json.dumps(
                {"type": "state", "state": "closed", "close_reason": ACCESS_REVOKED, "detail": why}
            )
        )
        await websocket.close(code=WS_FORBIDDEN, reason=ACCESS_REVOKED)


def _int_param(websocket: WebSocket, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(websocket.query_params.get(name, default))
    except ValueError:
        return default
    return max(low, min(high, value))


@router.websocket("/sessions/{session_id}/terminal")
async def terminal(websocket: WebSocket, session_id: str) -> None:
    """The browser terminal: an interactive PTY shell on the device, recorded."""
    found = await _socket_session(websocket, session_id)
    if found is None:
        return
    service, row, user = found
    connection = await _wait_active(websocket, service, session_id)
    if connection is None:
        return
    cols = _int_param(websocket, "cols", 80, *bridges.COLS)
    rows = _int_param(websocket, "rows", 24, *bridges.ROWS)
    term = websocket.query_params.get("term", "xterm-256color")[:64]
    try:
        process = await connection.open_shell(term=term, cols=cols, rows=rows)
    except TunnelError as exc:
        await _send_closed(websocket, service, session_id, str(exc))
        return
    service.note_use(session_id, "shell")
    recording = service.recording(session_id, cols=cols, rows=rows, term=term)
    await websocket.send_text(json.dumps({"type": "state", "state": "active"}))
    logger.info("terminal of session %s opened by %s", session_id, user.username)
    with _watch(websocket, service, session_id, user) as channel:
        end = await bridges.pump_terminal(
            websocket,
            process,
            recording=recording,
            size=(cols, rows),
            revoked=channel.revoked,
            audience=service.audience(session_id),
            owner=row.operator == user.username,
        )
    if end.revoked:
        await _send_revoked(websocket, channel.why)
    elif end.device_ended and websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps({"type": "exit", "exit_status": end.exit_status}))
        state = service.state(session_id)
        if state is None or state == "closed" or connection.is_closed:
            await _send_closed(websocket, service, session_id, "the session closed")
        else:
            with contextlib.suppress(Exception):
                await websocket.close(code=WS_NORMAL, reason="shell exited")


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
            row = _in_scope(db, user, db.get(RemoteSession, session_id))
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
        with _watch(websocket, service, session_id, user, needed="operator") as channel:
            end = await bridges.pump_observer(
                websocket, listener, revoked=channel.revoked, type_in=type_in
            )
    finally:
        audience.leave(listener)
        audience.announce("leave", user.username)
        await asyncio.to_thread(_audit_observer, websocket, "session.observe_leave", row, user)
    if end.revoked:
        await _send_revoked(websocket, channel.why)
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
    row = _in_scope(db, user, db.get(RemoteSession, session_id))
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


@router.websocket("/sessions/{session_id}/forward/{service_name}")
async def forward(websocket: WebSocket, session_id: str, service_name: str) -> None:
    """A raw byte stream to one of the device's allowlisted services."""
    found = await _socket_session(websocket, session_id)
    if found is None:
        return
    service, _row, user = found
    connection = await _wait_active(websocket, service, session_id)
    if connection is None:
        return
    try:
        reader, writer = await connection.open_forward(service_name)
    except TunnelError as exc:
        with contextlib.suppress(Exception):
            await websocket.close(code=WS_FORBIDDEN, reason=str(exc)[:120])
        return
    service.note_use(session_id, f"forward:{service_name}")
    logger.info("forward to %s in session %s opened by %s", service_name, session_id, user.username)
    await websocket.send_text(json.dumps({"type": "state", "state": "active"}))
    with _watch(websocket, service, session_id, user) as channel:
        end = await bridges.pump_forward(websocket, reader, writer, revoked=channel.revoked)
    if end.revoked:
        await _send_revoked(websocket, channel.why)
    if websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(code=WS_NORMAL)
