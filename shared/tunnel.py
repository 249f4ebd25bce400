"""The session tunnel both ends share: its transport, its SSH parameters, its URL rule.

The agent dials the tunnel endpoint (``server.sessions.relay``) and serves
SSH on it; the server runs asyncssh as the SSH client over the same socket.
:class:`MessageStreamTransport` makes the WebSocket look like a TCP
connection to asyncssh: writes become binary messages (coalesced while one is
in flight, at most :data:`MAX_MESSAGE_BYTES`), received messages are fed to
the SSH protocol. :class:`TunnelConnector` is what asyncssh's ``tunnel=``
argument needs to attach a connection to it.

The SSH connection over the tunnel is configured the same on both ends
(:data:`CIPHERS`, :data:`CHANNEL_WINDOW`, :data:`CHANNEL_MAX_PACKET`, no SSH
keepalive), and a session closed with a reason says so with
:data:`SESSION_CLOSED_CODE`. :func:`ws_url` is the one http->ws rule for the
server's socket URLs.

Both ends use it: the agent (:mod:`agent.remote.tunnel`, :mod:`agent.remote.sshd`) and the
server (:mod:`server.sessions`). It is plain asyncio and the standard library
(an import-linter contract keeps it so): websockets and asyncssh are imported
by the modules that use it, only when a session opens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

logger = logging.getLogger(__name__)

#: Largest WebSocket message either side sends or accepts on a tunnel.
MAX_MESSAGE_BYTES: Final = 1 << 20
#: Largest piece of a received message handed to SSH at once. asyncssh keeps its
#: input in one ``bytes`` and slices the rest off after each SSH packet, so a
#: whole 1 MiB message fed at once is copied about once per packet (quadratic:
#: 32 copies of up to 1 MiB for 32 KiB packets); pieces near the packet size keep
#: it to a copy or two per byte.
FEED_BYTES: Final = 64 * 1024
#: How long a closing transport may spend flushing what is queued.
CLOSE_FLUSH_TIMEOUT_S: Final = 2.0
#: WebSocket subprotocol naming the tunnel framing (SSH bytes in binary messages).
SUBPROTOCOL: Final = "fieldlink-ssh.v1"

#: SSH ciphers of the tunnel, both ends: AES-GCM first (AES-NI makes it the fastest),
#: chacha20 for devices whose CPUs lack it.
CIPHERS: Final = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)
#: Receive window and largest SSH packet each end accepts on a channel. asyncssh's
#: 32 KiB default packets cost per-packet Python work (framing, one AES-GCM call, a
#: slice of the input buffer) that 128 KiB packets divide by four; the window covers
#: the WebSocket's extra latency.
CHANNEL_WINDOW: Final = 8 * 1024 * 1024
CHANNEL_MAX_PACKET: Final = 128 * 1024
#: SSH keepalive on the tunnel: off. The server watches the tunnel's activity and the
#: agent its idle timeout; a keepalive would only keep an idle session from ending.
KEEPALIVE_INTERVAL_S: Final = 0
#: Time the SSH handshake and authentication may take once the tunnel is open.
LOGIN_TIMEOUT_S: Final = 15.0
#: SSH disconnect code of a session closed with a reason (RFC 4250 private-use range;
#: asyncssh treats the standard "by application" code as a silent close, which would
#: lose the reason). The disconnect's text is the close reason.
SESSION_CLOSED_CODE: Final = 0xFE000001


def ws_url(base_url: str, path: str) -> str:
    """The WebSocket URL of ``path`` on a server known by its HTTP(S) URL.

    ``https://`` becomes ``wss://`` and ``http://`` becomes ``ws://``; a URL that is
    already ``ws(s)://`` is kept. One trailing ``/`` of ``base_url`` is dropped.

    Args:
        base_url: The server's URL, e.g. ``https://center.example:8443``.
        path: The path from the server's root, e.g. ``/api/v1/tunnel/ses-...``.

    Returns:
        e.g. ``wss://center.example:8443/api/v1/tunnel/ses-...``.

    Raises:
        ValueError: when ``base_url`` is not an http(s):// or ws(s):// URL.
    """
    base = base_url.rstrip("/")
    scheme, sep, rest = base.partition("://")
    schemes = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}
    if not sep or scheme.lower() not in schemes or not rest:
        msg = f"not an http(s):// URL: {base_url!r}"
        raise ValueError(msg)
    return f"{schemes[scheme.lower()]}://{rest}{path}"


Receive = Callable[[], Awaitable[bytes | None]]
Send = Callable[[bytes], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


class MessageStreamTransport(asyncio.Transport):
    """An asyncio transport over a message stream (a WebSocket), for asyncssh.

    The stream is given as three coroutines: ``receive`` (the next message,
    ``None`` at a clean end), ``send`` (one message) and ``close``. The same
    class serves both ends of the tunnel; only the three callables differ.

    Attributes:
        bytes_received: Payload bytes received so far (SSH bytes, encrypted).
        bytes_sent: Payload bytes sent so far.
        last_activity: ``time.monotonic()`` of the last byte either way.
    """

    def __init__(
        self,
        *,
        receive: Receive,
        send: Send,
        close: Close,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(extra)
        self._receive = receive
        self._send = send
        self._close_stream = close
        self._protocol: asyncio.Protocol | None = None
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._lost = False
        self._tasks: list[asyncio.Task[None]] = []
        self._done = asyncio.Event()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.last_activity = time.monotonic()

    def start(self, protocol: asyncio.Protocol) -> None:
        """Attach ``protocol`` and start moving bytes.

        Args:
            protocol: The protocol (an asyncssh connection) that owns this transport.
        """
        self._protocol = protocol
        protocol.connection_made(self)
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="tunnel-read"),
            asyncio.create_task(self._write_loop(), name="tunnel-write"),
        ]

    async def wait_closed(self) -> None:
        """Return once the stream is closed and both loops have ended."""
        await self._done.wait()

    # asyncio.Transport
    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None  # noqa: S101
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)  # noqa: S101
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return not self._closing

    def pause_reading(self) -> None:
        # SSH has its own per-channel windows; asyncssh never asks for this.
        pass

    def resume_reading(self) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        chunk = bytes(data)
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self._wakeup.set()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return self._pending_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, MAX_MESSAGE_BYTES)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def close(self) -> None:
        """Flush what is queued, then close the stream."""
        if not self._closing:
            self._closing = True
            self._wakeup.set()

    def abort(self) -> None:
        """Close without waiting for the peer.

        What is already queued (typically asyncssh's disconnect message,
        which carries the close reason) is still flushed, within
        :data:`CLOSE_FLUSH_TIMEOUT_S`.
        """
        self.close()

    # the loops
    async def _read_loop(self) -> None:
        error: Exception | None = None
        try:
            while True:
                data = await self._receive()
                if data is None:
                    break
                self.bytes_received += len(data)
                self.last_activity = time.monotonic()
                assert self._protocol is not None  # noqa: S101
                if len(data) <= FEED_BYTES:
                    self._protocol.data_received(data)
                    continue
                for start in range(0, len(data), FEED_BYTES):
                    self._protocol.data_received(data[start : start + FEED_BYTES])
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the stream failed: tell SSH, which reports it
            error = exc
        self._connection_lost(error)

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    payload = self._take(MAX_MESSAGE_BYTES)
                    if self._closing:
                        await asyncio.wait_for(self._send(payload), CLOSE_FLUSH_TIMEOUT_S)
                    else:
                        await self._send(payload)
                    self.bytes_sent += len(payload)
                    self.last_activity = time.monotonic()
                if self._closing:
                    break
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # the stream failed while sending
            logger.debug("tunnel send failed: %s", exc)
            self._connection_lost(exc)
        finally:
            self._closing = True
            self._pending.clear()
            self._pending_bytes = 0
            try:
                await asyncio.wait_for(self._close_stream(), CLOSE_FLUSH_TIMEOUT_S)
            except Exception as exc:  # already closed by the peer, or gone
                logger.debug("tunnel close: %s", exc)
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            self._connection_lost(None)
            self._done.set()

    def _take(self, limit: int) -> bytes:
        """The next message: whole queued chunks up to ``limit`` bytes, joined once.

        Only what goes out is copied; the rest stays queued as it is (joining the
        whole queue and slicing off the rest copied it again for every message).
        """
        pending = self._pending
        first = pending.popleft()
        if len(first) > limit:  # one chunk larger than a message (asyncssh writes packets)
            pending.appendleft(first[limit:])
            first = first[:limit]
        parts = [first]
        size = len(first)
        while pending and size + len(pending[0]) <= limit:
            chunk = pending.popleft()
            parts.append(chunk)
            size += len(chunk)
        self._pending_bytes -= size
        return first if len(parts) == 1 else b"".join(parts)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._wakeup.set()
        if self._protocol is not None:
            self._protocol.connection_lost(exc)


@dataclass(slots=True)
class TunnelConnector:
    """What asyncssh's ``tunnel=`` argument needs: one ``create_connection``.

    asyncssh calls :meth:`create_connection` with the factory of its
    connection object; the connector attaches that object to the already-open
    stream instead of opening a TCP connection.

    Attributes:
        transport: The transport over the open WebSocket.
    """

    transport: MessageStreamTransport

    async def create_connection(
        self, session_factory: Callable[[], Any], remote_host: str, remote_port: int
    ) -> tuple[MessageStreamTransport, Any]:
        """Attach a new asyncssh connection to the stream.

        Args:
            session_factory: asyncssh's connection factory.
            remote_host: Ignored (the stream is already connected).
            remote_port: Ignored.

        Returns:
            The transport and the connection.
        """
        del remote_host, remote_port
        connection = session_factory()
        self.transport.start(connection)
        return self.transport, connection

    def close(self) -> None:
        """Close the stream."""
        self.transport.close()

    async def wait_closed(self) -> None:
        """Wait until the stream is closed."""
        await self.transport.wait_closed()
