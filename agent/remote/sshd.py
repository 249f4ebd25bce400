"""The agent's SSH server for one remote session, served over the tunnel it dialed.

:class:`AgentSession` dials the server's tunnel endpoint (:mod:`agent.remote.tunnel`),
then runs asyncssh as the SSH *server* on that stream (``connect_reverse``):
the server side of fieldlink connects as the SSH client. Authentication is
mutual: the device proves itself with its host key (made at enrollment and
pinned by the server), and the only client key accepted is the one-time key
named in the signed ``session.open`` command, once, until its expiry.

Channels offered, all inside :class:`~agent.remote.policy.SitePolicy`:

- shell, with or without a PTY (the agent user's login shell, or ``policy.shell``;
  with ``policy.shell_helper``, the maintenance account's shell started by the
  privileged helper of :mod:`agent.remote.shellhelper`, outside the agent's sandbox);
- exec (``shell -c COMMAND``), with or without a PTY;
- SFTP and scp, confined to ``policy.sftp_folders`` (symlinks out are refused);
- direct-tcpip to allowlisted services only (see :mod:`agent.remote.policy` for the
  naming rule). Every refusal is reported through ``on_refusal``.

Not offered: remote (``-R``) forwards, agent and X11 forwarding, other subsystems.

The session ends when the server closes it (its disconnect message carries
the close reason), when :meth:`AgentSession.end` is called (``site_ended``),
at ``policy.max_duration_s`` after the tunnel opened (``max_duration``), or
after ``policy.idle_timeout_s`` without a byte either way (``idle_timeout``).
Processes started by the session are hung up and then killed when it ends.

The shell and exec channels are served by :mod:`agent.remote.shells`, SFTP by
:mod:`agent.remote.sftp`; the one-time key ledger is :mod:`agent.remote.client_keys`.

This module imports asyncssh: import it only when a session opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import asyncssh

from agent.remote.client_keys import USED_CLIENT_KEYS, UsedClientKeys
from agent.remote.outcome import Refusal, RefusalKind, SessionOutcome
from agent.remote.policy import SitePolicy
from agent.remote.sftp import ConfinedSFTPServer
from agent.remote.shells import ShellChannels
from agent.remote.tunnel import TunnelRefused, TunnelUnreachable, dial_tunnel
from shared.ids import utcnow
from shared.tunnel import (
    CHANNEL_MAX_PACKET,
    CHANNEL_WINDOW,
    CIPHERS,
    KEEPALIVE_INTERVAL_S,
    LOGIN_TIMEOUT_S,
    SESSION_CLOSED_CODE,
    TunnelConnector,
)
from shared.wire import CLOSE_REASONS, CloseReason

logger = logging.getLogger(__name__)


RefusalCallback = Callable[[Refusal], None]


class AgentSession:
    """One remote session on the device: dial, serve SSH, enforce limits, report.

    Create it once the site has approved the session (consent is the
    caller's step, before :meth:`run`), run it, and keep it to :meth:`end`
    it locally (``fieldlink agent end SESSION``).
    """

    def __init__(
        self,
        ws_url: str,
        *,
        session_id: str,
        session_token: str,
        host_key_path: Path,
        client_public_key: str,
        policy: SitePolicy,
        expires_at: datetime,
        on_refusal: RefusalCallback | None = None,
        proxy: str | Literal[True] | None = True,
        ssl_context: Any = None,
        used_keys: UsedClientKeys = USED_CLIENT_KEYS,
        connect_timeout_s: float = 10.0,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Prepare a session; nothing is dialed until :meth:`run`.

        Args:
            ws_url: The tunnel endpoint named by ``session.open``.
            session_id: The session's id (for logs and the outcome).
            session_token: The token the endpoint checks (never logged).
            host_key_path: The device's SSH host key (``ssh_host_ed25519_key``).
            client_public_key: The one-time client key, OpenSSH format.
            policy: The site policy, already narrowed to this session's services.
            expires_at: When the one-time key stops being accepted (aware UTC).
            on_refusal: Called for each refusal, as it happens.
            proxy: See :func:`agent.remote.tunnel.dial_tunnel`.
            ssl_context: TLS settings for ``wss://``.
            used_keys: The ledger that makes the key single-use.
            connect_timeout_s: Limit on the WebSocket handshake.
            on_ready: Called once the tunnel is open and the server's client
                has authenticated (the session is usable from then on).
        """
        self.session_id = session_id
        self._ws_url = ws_url
        self._token = session_token
        self._host_key_path = host_key_path
        self._client_public_key = client_public_key
        self.policy = policy
        self.expires_at = expires_at
        self._on_refusal = on_refusal
        self._proxy = proxy
        self._ssl_context = ssl_context
        self._used_keys = used_keys
        self._connect_timeout_s = connect_timeout_s
        self._on_ready = on_ready
        self._log = logging.LoggerAdapter(logger, {"session_id": session_id})
        self.refusals: list[Refusal] = []
        self._end_requested: asyncio.Future[None] | None = None
        self._local_reason: CloseReason | None = None
        self._remote_reason: CloseReason | None = None
        self._remote_detail = ""
        self._auth_refused = False
        self._shells = ShellChannels(session_id, policy, self._refuse, self._log)

    def end(self, reason: CloseReason = "site_ended") -> None:
        """End the running session locally; :meth:`run` returns shortly after.

        Args:
            reason: The close reason to report (``site_ended`` by default).
        """
        self._local_reason = self._local_reason or reason
        if self._end_requested is not None and not self._end_requested.done():
            self._end_requested.set_result(None)

    async def run(self) -> SessionOutcome:
        """Dial, serve SSH until the session ends, and say how it ended.

        Returns:
            The outcome; failures (refused token, expired key...) are outcomes
            with ``close_reason`` ``error`` or ``agent_unreachable``, not exceptions.
        """
        self._end_requested = asyncio.get_running_loop().create_future()
        if self._local_reason is not None:
            return self._outcome(self._local_reason, "ended before the tunnel opened")
        if utcnow() >= self.expires_at:
            return self._outcome("error", "session key expired")
        try:
            client_key = asyncssh.import_public_key(self._client_public_key)
        except (asyncssh.KeyImportError, ValueError):
            return self._outcome("error", "malformed client key")
        fingerprint = client_key.get_fingerprint()
        if self._used_keys.is_used(fingerprint):
            self._refuse("auth", fingerprint, "session key already used")
            return self._outcome("error", "session key already used")
        try:
            host_key = await asyncio.to_thread(asyncssh.read_private_key, self._host_key_path)
        except (OSError, asyncssh.KeyImportError) as exc:
            return self._outcome("error", f"cannot read the host key: {exc}")

        try:
            transport = await dial_tunnel(
                self._ws_url,
                session_token=self._token,
                ssl_context=self._ssl_context,
                proxy=self._proxy,
                open_timeout_s=self._connect_timeout_s,
            )
        except TunnelRefused as exc:
            return self._outcome("error", str(exc))
        except TunnelUnreachable as exc:
            return self._outcome("agent_unreachable", str(exc))

        started_at = utcnow()
        self._log.info("tunnel open to %s", self._ws_url.split("?")[0])
        options = asyncssh.SSHServerConnectionOptions(
            server_host_keys=[host_key],
            server_factory=lambda: _DeviceSSHServer(self, client_key, fingerprint),
            process_factory=self._shells.serve,
            sftp_factory=self._make_sftp_server if self.policy.sftp_folders else None,
            allow_scp=bool(self.policy.sftp_folders),
            encryption_algs=list(CIPHERS),
            compression_algs=None,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            # The PTY itself echoes, edits lines and turns Ctrl-C into SIGINT for the
            # foreground job; asyncssh's line editor would do all three itself, and
            # signal only the shell (which ignores SIGINT).
            line_editor=False,
            window=CHANNEL_WINDOW,
            max_pktsize=CHANNEL_MAX_PACKET,
            login_timeout=LOGIN_TIMEOUT_S,
            keepalive_interval=KEEPALIVE_INTERVAL_S,
        )
        connection: asyncssh.SSHServerConnection | None = None
        try:
            connection = await asyncssh.connect_reverse(
                tunnel=TunnelConnector(transport), options=options
            )
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            transport.close()
            await transport.wait_closed()
            detail = (
                "client authentication failed"
                if self._auth_refused
                else f"SSH handshake failed: {_describe(exc)}"
            )
            return self._outcome(
                "error",
                detail,
                transport=transport,
                started_at=started_at,
            )

        if self._on_ready is not None:
            try:
                self._on_ready()
            except Exception:  # a reporting failure must not break the session
                self._log.exception("ready callback failed")
        reason, detail = await self._supervise(connection, transport)
        await self._shells.stop()
        await transport.wait_closed()
        self._log.info("session closed: %s %s", reason, detail)
        return self._outcome(reason, detail, transport=transport, started_at=started_at)

    # supervision
    async def _supervise(
        self, connection: asyncssh.SSHServerConnection, transport: Any
    ) -> tuple[CloseReason, str]:
        assert self._end_requested is not None  # noqa: S101
        closed = asyncio.create_task(connection.wait_closed())
        ended = self._end_requested
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.max_duration_s
        try:
            while True:
                now = loop.time()
                idle_for = time.monotonic() - transport.last_activity
                if now >= deadline:
                    self._local_reason = self._local_reason or "max_duration"
                elif idle_for >= self.policy.idle_timeout_s:
                    self._local_reason = self._local_reason or "idle_timeout"
                if self._local_reason is not None or closed.done():
                    break
                wait_s = min(deadline - now, self.policy.idle_timeout_s - idle_for)
                await asyncio.wait(
                    {closed, ended},
                    timeout=max(wait_s, 0.01) + 0.01,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        except BaseException:
            closed.cancel()
            raise
        if self._local_reason is not None and not closed.done():
            connection.disconnect(SESSION_CLOSED_CODE, self._local_reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closed), 2.0)
            closed.cancel()
            return self._local_reason, _LOCAL_DETAILS.get(self._local_reason, "closed on request")
        await closed
        if self._remote_reason is not None:
            return self._remote_reason, self._remote_detail
        return "operator", "closed by the server"

    def _connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, asyncssh.DisconnectError) and exc.code == SESSION_CLOSED_CODE:
            reason = exc.reason.split(" (error", 1)[0]
            self._remote_reason = reason if reason in CLOSE_REASONS else "operator"
            self._remote_detail = "closed by the server"
        elif exc is not None and self._local_reason is None:
            self._remote_reason = "error"
            self._remote_detail = f"tunnel lost: {_describe(exc)}"

    def _refuse(self, kind: RefusalKind, target: str, reason: str) -> None:
        refusal = Refusal(kind=kind, target=target, reason=reason)
        self.refusals.append(refusal)
        self._log.warning("refused %s %s: %s", kind, target, reason)
        if self._on_refusal is not None:
            try:
                self._on_refusal(refusal)
            except Exception:  # a reporting failure must not break the session
                self._log.exception("refusal callback failed")

    def _outcome(
        self,
        reason: CloseReason,
        detail: str,
        *,
        transport: Any = None,
        started_at: datetime | None = None,
    ) -> SessionOutcome:
        return SessionOutcome(
            session_id=self.session_id,
            close_reason=reason,
            detail=detail,
            bytes_from_server=transport.bytes_received if transport else 0,
            bytes_to_server=transport.bytes_sent if transport else 0,
            started_at=started_at,
            refusals=list(self.refusals),
        )

    def _make_sftp_server(self, channel: asyncssh.SSHServerChannel[bytes]) -> ConfinedSFTPServer:
        return ConfinedSFTPServer(channel, self.policy.sftp_folders, self._refuse)


_LOCAL_DETAILS: Final[Mapping[str, str]] = {
    "site_ended": "ended on the device",
    "max_duration": "maximum duration reached",
    "idle_timeout": "idle for too long",
}


class _DeviceSSHServer(asyncssh.SSHServer):
    """The policy hooks of one SSH connection (asyncssh calls these)."""

    def __init__(
        self, session: AgentSession, client_key: asyncssh.SSHKey, fingerprint: str
    ) -> None:
        self._session = session
        self._client_key = client_key
        self._fingerprint = fingerprint
        self._connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connection = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self._session._connection_lost(exc)

    def begin_auth(self, username: str) -> bool:
        del username  # the key alone identifies the server's client
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        del username
        session = self._session
        if key.public_data != self._client_key.public_data:
            session._auth_refused = True
            session._refuse("auth", key.get_fingerprint(), "not this session's key")
            return False
        if utcnow() >= session.expires_at:
            session._auth_refused = True
            session._refuse("auth", self._fingerprint, "session key expired")
            return False
        if session._used_keys.is_used(self._fingerprint):
            session._auth_refused = True
            session._refuse("auth", self._fingerprint, "session key already used")
            return False
        return True

    def auth_completed(self) -> None:
        session = self._session
        if not session._used_keys.claim(self._fingerprint, session.expires_at):
            # Two connections raced with the same key: only the first may live.
            session._refuse("auth", self._fingerprint, "session key already used")
            if self._connection is not None:
                self._connection.disconnect(SESSION_CLOSED_CODE, "error")

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        del orig_host, orig_port
        target = self._session.policy.resolve_forward(dest_host, dest_port)
        if target is None:
            self._session._refuse("forward", f"{dest_host}:{dest_port}", "not in the allowlist")
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not an allowlisted service"
            )
        assert self._connection is not None  # noqa: S101
        self._session._log.info("forward to service %s", target.name)
        # asyncssh ignores the connection's window options for direct-tcpip channels.
        channel = self._connection.create_tcp_channel(
            window=CHANNEL_WINDOW, max_pktsize=CHANNEL_MAX_PACKET
        )
        return channel, self._connection.forward_connection(target.host, target.port)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self._session._refuse("channel", f"-R {listen_host}:{listen_port}", "not offered")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._session._refuse("channel", f"unix {dest_path}", "not offered")
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        self._session._refuse("channel", f"unix -R {listen_path}", "not offered")
        return False


async def serve_session(
    ws_url: str,
    *,
    session_id: str,
    session_token: str,
    host_key_path: Path,
    client_public_key: str,
    policy: SitePolicy,
    expires_at: datetime,
    on_refusal: RefusalCallback | None = None,
    on_started: Callable[[AgentSession], None] | None = None,
    proxy: str | Literal[True] | None = True,
    ssl_context: Any = None,
) -> SessionOutcome:
    """Serve one remote session and return how it ended.

    A convenience over :class:`AgentSession`; ``on_started`` receives the
    session object (keep it to call :meth:`AgentSession.end`).

    Args:
        ws_url: The tunnel endpoint named by ``session.open``.
        session_id: The session's id.
        session_token: The token the endpoint checks.
        host_key_path: The device's SSH host key file.
        client_public_key: The one-time client key (OpenSSH public format).
        policy: The site policy for this session.
        expires_at: When the one-time key stops being accepted.
        on_refusal: Called for each refusal.
        on_started: Called with the :class:`AgentSession` before dialing.
        proxy: See :func:`agent.remote.tunnel.dial_tunnel`.
        ssl_context: TLS settings for ``wss://``.

    Returns:
        The session's outcome.
    """
    session = AgentSession(
        ws_url,
        session_id=session_id,
        session_token=session_token,
        host_key_path=host_key_path,
        client_public_key=client_public_key,
        policy=policy,
        expires_at=expires_at,
        on_refusal=on_refusal,
        proxy=proxy,
        ssl_context=ssl_context,
    )
    if on_started is not None:
        on_started(session)
    return await session.run()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
