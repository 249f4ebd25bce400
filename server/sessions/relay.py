"""The tunnel endpoint: where an agent's WebSocket arrives and becomes an SSH connection.

Mount :meth:`SessionRelay.endpoint` at ``WS /api/v1/tunnel/{session_id}``.
The agent presents its session token as ``Authorization: Bearer``; a wrong
token, an unknown, expired or already-claimed session is refused before the
WebSocket is accepted (HTTP 403). Once accepted, the server runs its SSH
client over the socket (:func:`~server.sessions.client.connect_agent`) and
hands the live connection to the registry; the handler then stays until the
tunnel ends (the WebSocket lives as long as it does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from server.sessions.client import AgentConnection, connect_agent
from server.sessions.registry import SessionRegistry
from shared.errors import FieldlinkError
from shared.tunnel import LOGIN_TIMEOUT_S, SUBPROTOCOL, MessageStreamTransport
from shared.wire import WS_POLICY_VIOLATION, WS_SERVICE_RESTART

logger = logging.getLogger(__name__)


class SessionRelay:
    """The tunnel endpoint, bound to the registry of pending sessions."""

    def __init__(
        self, registry: SessionRegistry, *, login_timeout_s: float = LOGIN_TIMEOUT_S
    ) -> None:
        self.registry = registry
        self._login_timeout_s = login_timeout_s

    async def endpoint(self, websocket: WebSocket) -> None:
        """Accept one agent's tunnel (``WS /api/v1/tunnel/{session_id}``)."""
        session_id = str(websocket.path_params.get("session_id", ""))
        scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
        pending = None
        if scheme.lower() == "bearer" and token:
            pending = self.registry.claim(session_id, token.strip())
        if pending is None:
            await websocket.close(code=WS_POLICY_VIOLATION)
            return
        offered = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        held: list[AgentConnection] = []

        def server_stopping() -> None:
            # Uvicorn closes every socket with 1012 when this server shuts down, before
            # the lifespan closes the sessions: the session ends because of the restart.
            for connection in held:
                if connection.close_reason is None:
                    connection.close_reason = "server_restart"

        transport = _asgi_transport(websocket, server_stopping)
        try:
            connection = await connect_agent(
                transport,
                session_id=session_id,
                client_key=pending.client_key,
                host_key=pending.host_key,
                login_timeout_s=self._login_timeout_s,
            )
        except FieldlinkError as exc:
            logger.warning("tunnel of session %s failed: %s", session_id, exc)
            self.registry.failed(session_id, exc)
            return
        held.append(connection)
        self.registry.connected(session_id, connection)
        logger.info("agent connected for session %s", session_id)
        try:
            await connection.wait_closed()
        finally:
            self.registry.closed(session_id)


def _asgi_transport(
    websocket: WebSocket, server_stopping: Callable[[], None]
) -> MessageStreamTransport:
    closed = False

    async def receive() -> bytes | None:
        nonlocal closed
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            closed = True
            if message.get("code") == WS_SERVICE_RESTART:
                server_stopping()
            return None
        data = message.get("bytes")
        if data is None:
            msg = "text message on a tunnel"
            raise TypeError(msg)
        return bytes(data)

    async def send(data: bytes) -> None:
        try:
            await websocket.send_bytes(data)
        except WebSocketDisconnect as exc:
            msg = "the agent's socket closed"
            raise ConnectionResetError(msg) from exc

    async def close() -> None:
        if not closed:
            await websocket.close()

    client = websocket.client
    return MessageStreamTransport(
        receive=receive,
        send=send,
        close=close,
        extra={
            "peername": (client.host, client.port) if client else ("agent", 0),
            "sockname": ("server", 0),
        },
    )
