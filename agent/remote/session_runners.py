"""How a session the controller has let through is run: in a session process, or in this one.

:class:`agent.remote.sessions.SessionController` decides whether and when a
session dials (policy, consent, limits); a :data:`SessionFactory` makes the
:class:`RunnableSession` that does. :class:`SessionLauncher` holds what every
session needs to dial (the host key, the proxy, the CA file) and makes either
a :class:`agent.remote.session_process.SessionProcess` (the default: the SSH
stack lives in a process of its own, gone with the session) or an in-process
:class:`agent.remote.sshd.AgentSession` (``fieldlink simulate``, and the
baseline bench/agent_footprint.py measures against). Nothing here imports
asyncssh, websockets or pydantic at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from shared.wire import CloseReason

if TYPE_CHECKING:
    from agent.remote.outcome import Refusal, SessionOutcome
    from agent.remote.policy import SitePolicy
    from agent.remote.session_bodies import SessionOpen
    from agent.remote.session_process import SpareProcess


class RunnableSession(Protocol):
    """What the controller needs of a session (a session process, or an in-process session)."""

    def end(self, reason: CloseReason = "site_ended") -> None:
        """End the session (before or while it runs); :meth:`run` returns soon after."""
        ...

    async def run(self) -> SessionOutcome:
        """Dial, serve until the session ends, and say how it ended."""
        ...


@dataclass(frozen=True, slots=True)
class SessionHooks:
    """What a session reports to the controller while it runs.

    Attributes:
        on_refusal: Called for each refusal.
        on_ready: Called once the server's SSH client has authenticated.
    """

    on_refusal: Callable[[Refusal], None]
    on_ready: Callable[[], None]


#: Makes the session that dials: the body of ``session.open``, the policy it
#: runs under (narrowed and limited), its hooks. The default builds an
#: :class:`agent.remote.session_process.SessionProcess`.
SessionFactory = Callable[["SessionOpen", "SitePolicy", SessionHooks], RunnableSession]


class SessionLauncher:
    """Makes the sessions of one device, in session processes or in this process.

    Args:
        host_key_path: The SSH host key the server pinned at enrollment.
        proxy: How to reach the server: ``True`` for the environment's proxy,
            a proxy URL, or ``None`` for a direct connection.
        ca_file: Extra CA certificates trusted for ``wss://`` (the device CA),
            on top of the system's.
        connect_timeout_s: Limit on the tunnel's handshakes.
        spare_linger_s: After a session, keep a spare session process this long for
            the next one (0: none). Whoever sets it calls :meth:`close`.
    """

    def __init__(
        self,
        *,
        host_key_path: Path,
        proxy: str | Literal[True] | None,
        ca_file: Path | None,
        connect_timeout_s: float,
        spare_linger_s: float,
    ) -> None:
        self.host_key_path = host_key_path
        self._proxy = proxy
        self._ca_file = ca_file
        self._connect_timeout_s = connect_timeout_s
        self._spare: SpareProcess | None = None
        self._spare_linger_s = spare_linger_s

    def spare_process(self) -> int | None:
        """The id of the session process started ahead of the next session, if one waits."""
        return None if self._spare is None else self._spare.pid

    def stop_sparing(self) -> None:
        """Start no spare after the next session ends (the agent is stopping)."""
        if self._spare is not None:
            self._spare.linger_s = 0

    async def close(self) -> None:
        """Retire the spare session process, if one waits."""
        if self._spare is not None:
            await self._spare.close()

    def session_process(
        self, spec: SessionOpen, policy: SitePolicy, hooks: SessionHooks
    ) -> RunnableSession:
        """The session in a session process of its own (the default)."""
        from agent.remote.pipe import StartSession
        from agent.remote.session_process import SessionProcess, SpareProcess

        start = StartSession(
            session_id=spec.session_id,
            ws_url=spec.ws_url,
            token=spec.token,
            client_key=spec.client_key,
            expires_at=spec.expires_at,
            policy=policy,
            host_key_path=self.host_key_path,
            proxy=self._proxy,
            ca_file=self._ca_file,
            connect_timeout_s=self._connect_timeout_s,
        )
        if self._spare is None:
            self._spare = SpareProcess(self._spare_linger_s)
        return SessionProcess(
            start, on_refusal=hooks.on_refusal, on_ready=hooks.on_ready, spare=self._spare
        )

    def in_process_session(
        self, spec: SessionOpen, policy: SitePolicy, hooks: SessionHooks
    ) -> RunnableSession:
        """The session in the agent's own process (which then keeps asyncssh loaded).

        What the agent did before session processes, and what ``fieldlink simulate``
        does (one process, many devices); bench/agent_footprint.py measures against it.
        """
        import ssl

        from agent.remote.sshd import AgentSession

        context = None
        if spec.ws_url.startswith("wss:"):
            context = ssl.create_default_context()
            if self._ca_file is not None:
                context.load_verify_locations(cafile=str(self._ca_file))
        return AgentSession(
            spec.ws_url,
            session_id=spec.session_id,
            session_token=spec.token,
            host_key_path=self.host_key_path,
            client_public_key=spec.client_key,
            policy=policy,
            expires_at=spec.expires_at,
            on_refusal=hooks.on_refusal,
            on_ready=hooks.on_ready,
            proxy=self._proxy,
            ssl_context=context,
            connect_timeout_s=self._connect_timeout_s,
        )
