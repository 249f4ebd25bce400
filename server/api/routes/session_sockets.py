"""A remote session's WebSockets: the terminal and the forward sockets.

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

The observers' socket is in :mod:`server.api.routes.session_observers`. Sockets
authenticate like the API (bearer header, or the console's cookie from the same
origin); only the session's operator or an admin may use the terminal and
forward sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from sqlmodel import Session
from starlette.websockets import WebSocketState

from server.api.deps import websocket_token
from server.models import RemoteSession, User, role_at_least
from server.scope import Scope
from server.security import hash_token
from server.sessions import bridges
from server.sessions.access import Channel
from server.sessions.errors import AgentNotConnected, TunnelError
from server.sessions.repository import may_operate
from server.sessions.service import SessionClosed, SessionService
from server.sessions.states import ACCESS_REVOKED
from shared.errors import NotFound
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


def in_scope(db: Session, user: User | None, row: RemoteSession | None) -> RemoteSession | None:
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
            return user, in_scope(db, user, db.get(RemoteSession, session_id))

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
    if not may_operate(row, user):
        await websocket.close(code=WS_FORBIDDEN, reason="this session belongs to another operator")
        return None
    if service is None:
        await websocket.close(code=WS_UNAVAILABLE, reason="sessions are not available")
        return None
    return service, row, user


async def _active_socket(
    websocket: WebSocket, session_id: str
) -> tuple[SessionService, RemoteSession, User, Any] | None:
    """:func:`_socket_session`, then :func:`_wait_active`: the session's connection once
    it is active, or ``None`` when the socket was closed instead."""
    found = await _socket_session(websocket, session_id)
    if found is None:
        return None
    service, row, user = found
    connection = await _wait_active(websocket, service, session_id)
    if connection is None:
        return None
    return service, row, user, connection


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


def watch_access(
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


async def send_revoked(websocket: WebSocket, why: str | None) -> None:
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
    found = await _active_socket(websocket, session_id)
    if found is None:
        return
    service, row, user, connection = found
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
    with watch_access(websocket, service, session_id, user) as channel:
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
        await send_revoked(websocket, channel.why)
    elif end.device_ended and websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps({"type": "exit", "exit_status": end.exit_status}))
        state = service.state(session_id)
        if state is None or state == "closed" or connection.is_closed:
            await _send_closed(websocket, service, session_id, "the session closed")
        else:
            with contextlib.suppress(Exception):
                await websocket.close(code=WS_NORMAL, reason="shell exited")


@router.websocket("/sessions/{session_id}/forward/{service_name}")
async def forward(websocket: WebSocket, session_id: str, service_name: str) -> None:
    """A raw byte stream to one of the device's allowlisted services."""
    found = await _active_socket(websocket, session_id)
    if found is None:
        return
    service, _row, user, connection = found
    try:
        reader, writer = await connection.open_forward(service_name)
    except TunnelError as exc:
        with contextlib.suppress(Exception):
            await websocket.close(code=WS_FORBIDDEN, reason=str(exc)[:120])
        return
    service.note_use(session_id, f"forward:{service_name}")
    logger.info("forward to %s in session %s opened by %s", service_name, session_id, user.username)
    await websocket.send_text(json.dumps({"type": "state", "state": "active"}))
    with watch_access(websocket, service, session_id, user) as channel:
        end = await bridges.pump_forward(websocket, reader, writer, revoked=channel.revoked)
    if end.revoked:
        await send_revoked(websocket, channel.why)
    if websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(code=WS_NORMAL)
