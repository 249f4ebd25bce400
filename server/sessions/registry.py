"""Sessions waiting for their agent's tunnel, and the live connections to agents.

The session API (the lead's ``POST /api/v1/devices/{id}/sessions``) fills the
registry with :meth:`SessionRegistry.expect` before it publishes
``session.open``; the tunnel endpoint claims the entry when the agent's
WebSocket arrives (once: a second socket with the same token is refused) and
hands back the live :class:`~server.sessions.client.AgentConnection` to
whoever waits in :meth:`SessionRegistry.wait_for_agent`.

The registry lives in one server process: the agent dials the instance named
in ``session.open`` (docs/operations.md, "Scaling out").
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from server.sessions.errors import AgentNotConnected
from server.sessions.keys import hash_session_token, session_token_matches
from shared.errors import Conflict
from shared.ids import utcnow

if TYPE_CHECKING:
    import asyncssh

    from server.sessions.client import AgentConnection

logger = logging.getLogger(__name__)

# Compared against when the session id is unknown, so timing does not tell.
_UNKNOWN_TOKEN_HASH = hash_session_token("no such session")


@dataclass(frozen=True, slots=True)
class PendingSession:
    """What the tunnel endpoint needs to accept one agent's tunnel.

    Attributes:
        session_id: The session.
        token_hash: SHA-256 of the session token (:func:`~server.sessions.keys.hash_session_token`).
        client_key: The one-time private key (:func:`~server.sessions.keys.generate_one_time_key`).
        host_key: The device's pinned host key (:func:`~server.sessions.keys.parse_host_key`).
        expires_at: When the tunnel may no longer be opened (aware UTC).
    """

    session_id: str
    token_hash: str
    client_key: asyncssh.SSHKey
    host_key: asyncssh.SSHKey
    expires_at: datetime


class SessionRegistry:
    """Pending sessions by id, their waiters, and the live agent connections."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingSession] = {}
        self._waiters: dict[str, asyncio.Future[AgentConnection]] = {}
        self._live: dict[str, AgentConnection] = {}

    def expect(self, pending: PendingSession) -> None:
        """Register a session whose agent is about to dial.

        Raises:
            Conflict: The session id is already pending or live.
        """
        sid = pending.session_id
        if sid in self._pending or sid in self._live:
            msg = f"session {sid} is already registered"
            raise Conflict(msg)
        self._pending[sid] = pending
        self._waiters[sid] = asyncio.get_running_loop().create_future()

    def claim(self, session_id: str, token: str) -> PendingSession | None:
        """Take the pending session if ``token`` is its token and it has not expired.

        A session can be claimed once. The token is compared in constant time,
        also when the session id is unknown.

        Returns:
            The pending session, or ``None`` (unknown, wrong token, expired, claimed).
        """
        pending = self._pending.get(session_id)
        expected = pending.token_hash if pending is not None else _UNKNOWN_TOKEN_HASH
        if not session_token_matches(token, expected) or pending is None:
            logger.warning("tunnel refused for session %s: unknown or wrong token", session_id)
            return None
        if utcnow() >= pending.expires_at:
            logger.warning("tunnel refused for session %s: expired", session_id)
            self._fail(session_id, AgentNotConnected("the session expired before the agent dialed"))
            return None
        del self._pending[session_id]
        return pending

    async def wait_for_agent(self, session_id: str, timeout_s: float) -> AgentConnection:
        """Wait for the agent's tunnel and SSH handshake.

        Raises:
            NotFound-like :class:`AgentNotConnected`: unknown session or timeout.
            AgentAuthFailed: Host key mismatch or key refused.
            TunnelError: The handshake failed otherwise.
        """
        waiter = self._waiters.get(session_id)
        if waiter is None:
            live = self._live.get(session_id)
            if live is not None:
                return live
            msg = f"session {session_id} is not waiting for an agent"
            raise AgentNotConnected(msg)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError as exc:
            msg = f"the device did not open its tunnel within {timeout_s:g} s"
            raise AgentNotConnected(msg) from exc

    def get(self, session_id: str) -> AgentConnection | None:
        """The live connection of a session, if any."""
        return self._live.get(session_id)

    def live_sessions(self) -> list[str]:
        """Ids of sessions with a live agent connection."""
        return list(self._live)

    def discard(self, session_id: str) -> None:
        """Forget a session that will not be opened (closed before the agent dialed)."""
        self._pending.pop(session_id, None)
        self._fail(session_id, AgentNotConnected("the session was closed"))

    # called by the tunnel endpoint
    def connected(self, session_id: str, connection: AgentConnection) -> None:
        """Record a live connection and wake its waiter."""
        self._live[session_id] = connection
        waiter = self._waiters.pop(session_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(connection)

    def failed(self, session_id: str, error: Exception) -> None:
        """Record a tunnel whose handshake failed; its waiter gets ``error``."""
        self._fail(session_id, error)

    def closed(self, session_id: str) -> None:
        """Forget a connection that has ended."""
        self._live.pop(session_id, None)

    def _fail(self, session_id: str, error: Exception) -> None:
        self._pending.pop(session_id, None)
        waiter = self._waiters.pop(session_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            # Nobody may be waiting; do not warn about an unretrieved exception.
            waiter.add_done_callback(lambda f: f.exception())
