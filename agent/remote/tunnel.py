"""The agent's end of a session tunnel: an outbound WebSocket that carries one SSH connection.

The agent dials the server (``wss://`` in production, through an HTTP(S)
proxy when one is configured), presents the session token as
``Authorization: Bearer``, and hands the socket to asyncssh as if it were a
TCP connection: :class:`MessageStreamTransport` is an :class:`asyncio.Transport`
whose writes become binary WebSocket messages and whose received messages are
fed to the SSH protocol. No extra socket, no copy through a socketpair.

Writes are coalesced: everything asyncssh writes while a message is in flight
goes out as the next message (at most :data:`MAX_MESSAGE_BYTES`). Compression
is always off: the SSH stream is encrypted and would not shrink.

websockets is imported only when a tunnel is dialed; the idle agent never
loads it.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any, Literal

from shared.errors import AuthError, UnavailableError
from shared.tunnel import (
    MAX_MESSAGE_BYTES,
    SUBPROTOCOL,
    MessageStreamTransport,
)

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

logger = logging.getLogger(__name__)


class TunnelRefused(AuthError):
    """The server refused the tunnel (unknown session or wrong session token)."""


class TunnelUnreachable(UnavailableError):
    """The server (or the proxy in front of it) could not be reached."""


async def dial_tunnel(
    ws_url: str,
    *,
    session_token: str,
    ssl_context: ssl.SSLContext | None = None,
    proxy: str | Literal[True] | None = True,
    open_timeout_s: float = 10.0,
) -> MessageStreamTransport:
    """Dial the server's tunnel endpoint and return a transport over it.

    Args:
        ws_url: ``wss://server/api/v1/tunnel/{session_id}`` (``ws://`` in tests).
        session_token: The session's token, sent as ``Authorization: Bearer``.
        ssl_context: TLS settings for ``wss://`` (the default context otherwise).
        proxy: ``True`` to use the proxy of the environment (``https_proxy``...),
            a proxy URL (``http://proxy:3128``), or ``None`` for a direct connection.
        open_timeout_s: Limit on the TCP, TLS, proxy and WebSocket handshakes.

    Returns:
        A transport not yet attached to a protocol (see :class:`TunnelConnector`).

    Raises:
        TunnelRefused: The server answered 401/403/404 (bad token, unknown session).
        TunnelUnreachable: The server or proxy could not be reached.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    kwargs: dict[str, Any] = {}
    if ws_url.startswith("wss:") and ssl_context is not None:
        kwargs["ssl"] = ssl_context
    try:
        websocket = await connect(
            ws_url,
            additional_headers={"Authorization": f"Bearer {session_token}"},
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            compression=None,
            proxy=proxy,
            open_timeout=open_timeout_s,
            max_size=MAX_MESSAGE_BYTES,
            max_queue=64,
            write_limit=MAX_MESSAGE_BYTES,
            **kwargs,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403, 404):
            msg = f"the server refused the tunnel (HTTP {status})"
            raise TunnelRefused(msg) from exc
        msg = f"the server answered the tunnel with HTTP {status}"
        raise TunnelUnreachable(msg) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        msg = f"cannot reach the tunnel endpoint: {exc}"
        raise TunnelUnreachable(msg) from exc
    return _websocket_transport(websocket)


def _websocket_transport(websocket: ClientConnection) -> MessageStreamTransport:
    from websockets.exceptions import ConnectionClosedOK

    async def receive() -> bytes | None:
        try:
            message = await websocket.recv()
        except ConnectionClosedOK:
            return None
        if isinstance(message, str):
            msg = "text message on a tunnel"
            raise TypeError(msg)
        return message

    async def close() -> None:
        await websocket.close()

    peer = websocket.remote_address
    local = websocket.local_address
    return MessageStreamTransport(
        receive=receive,
        send=websocket.send,
        close=close,
        extra={
            "peername": tuple(peer[:2]) if peer else ("server", 0),
            "sockname": tuple(local[:2]) if local else ("agent", 0),
        },
    )
