"""The server's SSH client of one agent, over the agent's tunnel.

Once the agent's WebSocket arrives (:mod:`server.sessions.relay`), the server
connects asyncssh over it as the SSH *client*, authenticating with the
session's one-time key and accepting only the device's pinned host key.
:class:`AgentConnection` is the live result: run a command, open a PTY shell
(the browser terminal), open a forward to an allowlisted service
(``fieldlink connect``, ``ssh -L`` through the gateway), start SFTP, close
with a reason. The close reason travels to the agent in the SSH disconnect
message; a reason the agent gives (``idle_timeout``, ``max_duration``,
``site_ended``) comes back the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final, NamedTuple

import asyncssh

from server.sessions.errors import AgentAuthFailed, TunnelError
from shared.tunnel import (
    CHANNEL_MAX_PACKET,
    CHANNEL_WINDOW,
    CIPHERS,
    KEEPALIVE_INTERVAL_S,
    SESSION_CLOSED_CODE,
    MessageStreamTransport,
    TunnelConnector,
)
from shared.wire import AGENT_CLOSE_REASONS

logger = logging.getLogger(__name__)

#: The user name the server presents (the agent ignores it; the key decides).
SSH_USERNAME: Final = "fieldlink"


class ExecResult(NamedTuple):
    """What one command run on the device gave back."""

    exit_status: int | None
    stdout: str
    stderr: str


class _AgentSSHClient(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class AgentConnection:
    """A live SSH connection to one agent, through its tunnel.

    Attributes:
        session_id: The session it belongs to.
        close_reason: ``None`` while open; then why it closed (``operator``,
            ``idle_timeout``, ``max_duration``, ``site_ended``, ``error``...).
    """

    def __init__(
        self,
        session_id: str,
        connection: asyncssh.SSHClientConnection,
        transport: MessageStreamTransport,
        client: _AgentSSHClient,
    ) -> None:
        self.session_id = session_id
        self._connection = connection
        self._transport = transport
        self._client = client
        self.close_reason: str | None = None
        self._log = logging.LoggerAdapter(logger, {"session_id": session_id})
        client.lost.add_done_callback(self._on_lost)

    @property
    def bytes_to_agent(self) -> int:
        """Tunnel bytes sent to the agent (the SSH stream, encrypted)."""
        return self._transport.bytes_sent

    @property
    def bytes_from_agent(self) -> int:
        """Tunnel bytes received from the agent."""
        return self._transport.bytes_received

    @property
    def is_closed(self) -> bool:
        """Whether the connection has ended."""
        return self._client.lost.done()

    @property
    def ssh(self) -> asyncssh.SSHClientConnection:
        """The underlying asyncssh connection (for bridges such as the SSH gateway)."""
        return self._connection

    def _on_lost(self, future: asyncio.Future[Exception | None]) -> None:
        if self.close_reason is not None:
            return
        exc = future.result()
        reason = ""
        if isinstance(exc, asyncssh.DisconnectError) and exc.code == SESSION_CLOSED_CODE:
            reason = exc.reason.split(" (error", 1)[0]
        if reason in AGENT_CLOSE_REASONS:
            self.close_reason = reason
        elif exc is None:
            self.close_reason = "operator"
        else:
            self.close_reason = "error"
        self._log.info("agent connection closed: %s", self.close_reason)

    async def run(self, command: str, timeout_s: float = 30.0) -> ExecResult:
        """Run one command on the device (``shell -c``), without a PTY.

        Args:
            command: The command line.
            timeout_s: Limit on the whole run.

        Returns:
            Exit status (``None`` if it died by a signal), stdout and stderr as text.

        Raises:
            TunnelError: The tunnel is closed or the command timed out.
        """
        try:
            result = await self._connection.run(
                command, check=False, timeout=timeout_s, encoding="utf-8", errors="replace"
            )
        except asyncssh.TimeoutError as exc:
            msg = f"the command did not finish within {timeout_s:g} s"
            raise TunnelError(msg) from exc
        except (asyncssh.Error, OSError) as exc:
            msg = f"cannot run the command: {exc}"
            raise TunnelError(msg) from exc
        return ExecResult(
            exit_status=result.exit_status,
            stdout=str(result.stdout or ""),
            stderr=str(result.stderr or ""),
        )

    async def open_shell(
        self, term: str = "xterm-256color", cols: int = 80, rows: int = 24
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Open an interactive login shell in a PTY.

        The process's ``stdin``/``stdout`` carry raw bytes (UTF-8 from most
        shells); ``change_terminal_size(cols, rows)`` resizes; writing
        ``b"\\x03"`` is Ctrl-C.

        Raises:
            TunnelError: The channel could not be opened.
        """
        try:
            return await self._connection.create_process(
                term_type=term, term_size=(cols, rows), encoding=None
            )
        except (asyncssh.Error, OSError) as exc:
            msg = f"cannot open a shell: {exc}"
            raise TunnelError(msg) from exc

    async def open_forward(
        self, service: str, port: int = 0
    ) -> tuple[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]]:
        """Open a byte stream to one of the device's allowlisted services.

        Args:
            service: The service name (``web``); the agent maps it to its target.
            port: 0 (the service's own port) or that exact port.

        Returns:
            A reader and a writer (``write_eof()`` half-closes).

        Raises:
            TunnelError: The agent refused (not allowlisted) or the service is down.
        """
        try:
            return await self._connection.open_connection(
                service, port, window=CHANNEL_WINDOW, max_pktsize=CHANNEL_MAX_PACKET
            )
        except asyncssh.ChannelOpenError as exc:
            msg = f"the device refused a forward to {service!r}: {exc.reason}"
            raise TunnelError(msg) from exc
        except (asyncssh.Error, OSError) as exc:
            msg = f"cannot open a forward to {service!r}: {exc}"
            raise TunnelError(msg) from exc

    async def start_sftp(self) -> asyncssh.SFTPClient:
        """Start an SFTP client (confined by the agent to its configured folders).

        Raises:
            TunnelError: The agent does not offer SFTP.
        """
        try:
            return await self._connection.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            msg = f"cannot start SFTP: {exc}"
            raise TunnelError(msg) from exc

    async def close(self, reason: str = "operator", timeout_s: float = 2.0) -> None:
        """Close the connection, telling the agent why, and wait for the tunnel to end.

        Args:
            reason: The close reason (it reaches the agent's outcome).
            timeout_s: How long to wait for the agent to hang up.
        """
        if self.close_reason is None:
            self.close_reason = reason
            self._connection.disconnect(SESSION_CLOSED_CODE, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_closed(), timeout_s)

    async def wait_closed(self) -> str:
        """Wait until the connection and its tunnel have ended; return the close reason."""
        await asyncio.shield(self._client.lost)
        await self._transport.wait_closed()
        return self.close_reason or "error"


async def connect_agent(
    transport: MessageStreamTransport,
    *,
    session_id: str,
    client_key: asyncssh.SSHKey,
    host_key: asyncssh.SSHKey,
    login_timeout_s: float = 15.0,
) -> AgentConnection:
    """Run the SSH client over an agent's tunnel.

    Args:
        transport: The transport over the agent's WebSocket, not yet started.
        session_id: The session (for logs).
        client_key: The session's one-time private key.
        host_key: The device's pinned host key (public).
        login_timeout_s: Limit on the SSH handshake and authentication.

    Returns:
        The live connection.

    Raises:
        AgentAuthFailed: The host key is not the pinned one, or the agent refused the key.
        TunnelError: The handshake failed otherwise.
    """
    client: _AgentSSHClient | None = None

    def make_client() -> _AgentSSHClient:
        nonlocal client
        client = _AgentSSHClient()
        return client

    options: dict[str, Any] = {
        "username": SSH_USERNAME,
        "client_factory": make_client,
        "client_keys": [client_key],
        "known_hosts": ([host_key], [], []),
        "preferred_auth": "publickey",
        "agent_path": None,
        "encryption_algs": list(CIPHERS),
        "compression_algs": None,
        "gss_auth": False,
        "gss_kex": False,
        "connect_timeout": login_timeout_s,
        "login_timeout": login_timeout_s,
        "keepalive_interval": KEEPALIVE_INTERVAL_S,
        "window": CHANNEL_WINDOW,
        "max_pktsize": CHANNEL_MAX_PACKET,
    }
    try:
        connection = await asyncssh.connect(
            session_id, 22, tunnel=TunnelConnector(transport), config=None, **options
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        await _abandon(transport)
        msg = "the device's host key is not the one pinned at enrollment"
        raise AgentAuthFailed(msg) from exc
    except asyncssh.PermissionDenied as exc:
        await _abandon(transport)
        msg = "the device refused the session key"
        raise AgentAuthFailed(msg) from exc
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        await _abandon(transport)
        msg = f"SSH handshake with the device failed: {exc or type(exc).__name__}"
        raise TunnelError(msg) from exc
    assert client is not None  # noqa: S101
    return AgentConnection(session_id, connection, transport, client)


async def _abandon(transport: MessageStreamTransport) -> None:
    transport.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(transport.wait_closed(), 2.0)
