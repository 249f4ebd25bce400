"""The life of every remote session on this server: open, follow, use, close.

:class:`SessionService` is what the API routes, the SSH gateway and the
console call. Opening a session:

1. checks the device (registered, not revoked, host key pinned), the
   incident, and the limits (:mod:`server.sessions.limits`);
2. writes the session row (``requested``) and its audit entry in one
   transaction (:mod:`server.sessions.repository`), makes a one-time client
   key and a session token, and tells the
   :class:`~server.sessions.registry.SessionRegistry` to expect the agent;
3. signs and publishes ``session.open`` and returns at once: a background
   task follows the session through ``awaiting_consent`` (the site must
   approve), ``connecting`` and ``active`` (the agent's tunnel and SSH
   handshake are up) to ``closed``, updating the row at each step (the moves
   :mod:`server.sessions.states` allows).

The agent's ``session.*`` events (through ingest's ``on_session_event``)
move the state on the site's side: approval asked, approved, denied, and its
own report at the end (bytes, refusals). A session closes when the operator
closes it, when the agent ends it (idle, max duration, site end; the reason
comes back in the SSH disconnect), when the device is unreachable, the
server's own cap on duration passes, the operator's access is revoked or the
server stops; then the row gets the close reason, bytes each way, the
services used and the recording's SHA-256, and the audit log a
``session.close`` entry.

This module is longer than most (about 790 lines): it is one class whose
methods share the live sessions' table and its locking-free rules (one event
loop); the database work, the limits and the state rules are elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import metrics
from server.config import ServerSettings
from server.crud import InvalidInput
from server.models import OPEN_STATES, RemoteSession
from server.sessions import repository
from server.sessions.access import AccessWatch
from server.sessions.errors import AgentAuthFailed, AgentNotConnected, TunnelError
from server.sessions.keys import generate_one_time_key, hash_session_token, parse_host_key
from server.sessions.observers import Audience
from server.sessions.recording import Recording
from server.sessions.registry import PendingSession, SessionRegistry
from server.sessions.states import (
    SERVER_RESTART,
    LiveSession,
    can_move,
    move_on_event,
    refusal_reason,
)
from shared import models, wire
from shared.errors import Conflict, FieldlinkError, ProtocolError, UnavailableError
from shared.ids import new_id, new_token, utcnow
from shared.tunnel import ws_url

if TYPE_CHECKING:
    from server.commands import CommandPublisher
    from server.sessions.client import AgentConnection
    from server.sessions.liveness import InstanceLiveness
    from shared.models import DeviceEvent

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long the agent has to answer ``session.open`` (its policy check, not consent).
OPEN_RESULT_TIMEOUT_S: Final = 15.0


class SessionClosed(Conflict):
    """The session is closed (or closed while it was being waited for)."""


class SessionService:
    """Opens, follows and closes remote sessions; one per server process.

    Args:
        settings: The server's settings (limits, public URL, recordings folder).
        engine: The database.
        commands: The signed-command publisher (``None`` without a CA: sessions are off).
        registry: Where the tunnel endpoint hands over agents' connections.
        instance: This process's instance id (recorded on each session).
    """

    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        commands: CommandPublisher | None,
        registry: SessionRegistry,
        *,
        instance: str,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.commands = commands
        self.registry = registry
        self.instance = instance
        self.recordings_dir = settings.recordings_dir or settings.state_dir / "recordings"
        self._live: dict[str, LiveSession] = {}
        self._listeners: list[Callable[[str, str], None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        #: The liveness watch (set by the app): tells whether another session's holder is gone.
        self.liveness: InstanceLiveness | None = None
        #: Ends sessions and channels whose user or token lost its access.
        self.access = AccessWatch(self, settings.access_check_interval_s)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to recover here: :class:`~server.sessions.liveness.InstanceLiveness`
        closes what this instance id (or a dead server) left open, and the upkeep's
        ``access`` job runs :attr:`access`'s checks."""

    async def stop(self) -> None:
        """Close every live session (server shutdown) and wait for their tasks."""
        live = list(self._live.values())
        for entry in live:
            await self.close(
                entry.session_id,
                reason=SERVER_RESTART,
                actor="server",
                detail="the server shut down",
            )
        tasks = [entry.task for entry in live if entry.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    async def end_swept(self) -> int:
        """End the tunnels of live sessions whose rows another server closed; how many.

        Another server closes this one's sessions when it judged this one dead (a
        stall longer than ``instance_dead_after_s``): the record says closed, so the
        tunnel must not go on.
        """
        closed = await self._db(repository.closed_among, list(self._live))
        for session_id in closed:
            await self.close(
                session_id,
                reason=SERVER_RESTART,
                actor="server",
                detail="another server judged this one dead and closed the session",
            )
        return len(closed)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def add_listener(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(session_id, state)`` on every state change (for consoles)."""
        self._listeners.append(listener)

    # -- opening --------------------------------------------------------------------------

    async def open(
        self,
        device_id: str,
        *,
        operator: str,
        reason: str,
        incident_id: int | None = None,
        services: list[str] | None = None,
        origin: str = "api",
        source_ip: str | None = None,
        base_url: str | None = None,
    ) -> RemoteSession:
        """Open a session: record it, publish ``session.open``, follow it in the background.

        Args:
            device_id: The device.
            operator: The user opening it (username).
            reason: Why (required, shown to the site, audited).
            incident_id: The incident it serves (linked; marks ``remote_session_used``).
            services: Services it may reach (``None``: what the site allows).
            origin: ``api``, ``gateway``, ``console`` or ``cli``.
            source_ip: The operator's address, for the audit log.
            base_url: This server's URL as the caller reached it, when no
                ``public_url`` is configured (the agent dials ``ws(s)://.../api/v1/tunnel/ID``).

        Returns:
            The session row (``requested``).

        Raises:
            InvalidInput: Empty reason or a malformed service name.
            NotFound: Unknown device or incident.
            Conflict: Revoked device, no pinned host key, or a limit reached.
            UnavailableError: Signed commands are off (no CA) or the broker is down.
        """
        reason = reason.strip()
        if not reason:
            msg = "a session needs a reason"
            raise InvalidInput(msg)
        if services is not None:
            services = sorted(set(services))
            bad = [name for name in services if not is_service_name(name)]
            if bad:
                msg = f"services: {bad[0]!r} is not a service name"
                raise InvalidInput(msg)
        commands = self.commands
        if commands is None:
            msg = "remote sessions need the command key: run `fieldlink ca init` on the server"
            raise UnavailableError(msg)
        session_id = f"ses-{new_id()}"
        key = generate_one_time_key()
        token = new_token()
        now = utcnow()
        expires_at = now + timedelta(seconds=self.settings.session_open_timeout_s)
        row = RemoteSession(
            id=session_id,
            device_id=device_id,
            operator=operator,
            reason=reason,
            incident_id=incident_id,
            origin=origin,
            services=services,
            state="requested",
            instance=self.instance,
            client_key_fingerprint=key.fingerprint,
            created_at=now,
            expires_at=expires_at,
        )
        host_key_text, agent_id = await self._db(
            lambda db: repository.insert_session(
                db,
                row,
                source_ip=source_ip,
                per_device=self.settings.sessions_per_device,
                per_operator=self.settings.sessions_per_operator,
            )
        )
        max_duration_s = self.settings.session_max_duration_s
        live = LiveSession(
            session_id, device_id, operator, max_duration_s, expires_at, agent_id=agent_id
        )
        self._live[session_id] = live
        self._count_states()
        try:
            host_key = parse_host_key(host_key_text)
        except ProtocolError as exc:
            await self._finish(live, "error", str(exc))
            raise
        self.registry.expect(
            PendingSession(
                session_id=session_id,
                token_hash=hash_session_token(token),
                client_key=key.private_key,
                host_key=host_key,
                expires_at=expires_at,
            )
        )
        body = models.SessionOpen(
            session_id=session_id,
            ws_url=self._ws_url(session_id, base_url),
            token=token,
            client_key=key.public_openssh,
            expires_at=expires_at,
            services=services,
            operator=operator,
            reason=reason,
            max_duration_s=max_duration_s,
            idle_timeout_s=self.settings.session_idle_timeout_s,
            # Watched through a site gateway: the command goes to the gateway's agent.
            device=device_id if agent_id != device_id else None,
        ).model_dump(mode="json", exclude_none=True)
        try:
            pending = await commands.send(
                agent_id,
                wire.SESSION_OPEN,
                body,
                ttl=timedelta(seconds=self.settings.session_open_timeout_s),
            )
        except Exception as exc:
            self.registry.discard(session_id)
            await self._finish(live, "agent_unreachable", f"session.open not sent: {exc}")
            raise
        live.task = asyncio.create_task(self._drive(live, pending), name=f"session-{session_id}")
        return row

    def _ws_url(self, session_id: str, base_url: str | None) -> str:
        base = self.settings.tunnel_url or self.settings.public_url or base_url
        if not base:
            base = f"http://{self.settings.http_host}:{self.settings.http_port}"
        return ws_url(base, f"/api/v1/tunnel/{session_id}")

    # -- following ------------------------------------------------------------------------

    async def _drive(self, live: LiveSession, pending: Any) -> None:
        sid = live.session_id
        try:
            try:
                result = await pending.result(OPEN_RESULT_TIMEOUT_S)
            except UnavailableError:
                await self._finish(
                    live, "agent_unreachable", "the device did not answer session.open"
                )
                return
            if live.closing is not None:
                return
            if not result.ok:
                error = result.error or "error"
                detail = f"the device refused the session: {error}"
                if result.body.get("services"):
                    detail += f" (services {', '.join(map(str, result.body['services']))})"
                await self._finish(live, refusal_reason(error), detail)
                return
            state = str(result.body.get("state", "connecting"))
            if live.state == "requested":
                await self._move(
                    live, "awaiting_consent" if state == "awaiting_consent" else "connecting"
                )
                if state == "awaiting_consent":
                    self._spawn(self._preapprove(sid, live.device_id))
            remaining = max(1.0, (live.expires_at - utcnow()).total_seconds())
            try:
                connection = await self.registry.wait_for_agent(sid, remaining)
            except AgentAuthFailed as exc:
                await self._finish(live, "error", str(exc))
                return
            except AgentNotConnected as exc:
                if live.closing is None:
                    await self._finish(live, "agent_unreachable", str(exc))
                return
            except TunnelError as exc:
                await self._finish(live, "error", str(exc))
                return
            live.connection = connection
            if live.closing is not None:
                await connection.close(live.closing)
            else:
                await self._db(repository.mark_active, sid)
                await self._move(live, "active", write=False)
            try:
                async with asyncio.timeout(live.cap_s()) as deadline:
                    live.deadline, live.active_at = deadline, asyncio.get_running_loop().time()
                    reason = await connection.wait_closed()
            except TimeoutError:
                await connection.close("max_duration")
                reason = "max_duration"
            ended = live.detail
            if ended is None and reason == SERVER_RESTART:
                ended = "the server shut down"
            await self._finish(live, live.closing or reason, ended)
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(live, "error", "the server stopped following it"))
            raise
        except Exception:
            logger.exception("session %s failed", sid)
            await self._finish(live, "error", "internal error")

    async def _move(self, live: LiveSession, state: str, *, write: bool = True) -> None:
        """Move a live session on (and its row, unless ``write`` is false), if allowed."""
        if not can_move(live.state, state):
            return
        if write:
            await self._db(repository.advance_state, live.session_id, state)
        if not live.move(state):
            return
        if state == "active":
            metrics.SESSION_SETUP_SECONDS.observe(time.monotonic() - live.opened)
        self._count_states()
        for listener in self._listeners:
            listener(live.session_id, state)

    def _count_states(self) -> None:
        counts = dict.fromkeys(OPEN_STATES, 0)
        for entry in self._live.values():
            if entry.state in counts:
                counts[entry.state] += 1
        for state, count in counts.items():
            metrics.SESSIONS_OPEN.labels(state).set(count)

    async def _finish(self, live: LiveSession, reason: str, detail: str | None) -> None:
        """Close the row, the recording and the audit trail, once."""
        if not live.move("closed"):
            return
        self.registry.discard(live.session_id)
        recording = live.recording
        if recording is not None:
            recording.close()
        connection = live.connection
        ending = repository.Ending(
            services_used=list(live.services_used),
            bytes_to_device=connection.bytes_to_agent if connection is not None else None,
            bytes_from_device=connection.bytes_from_agent if connection is not None else None,
            recording=recording.path if recording is not None else None,
        )
        await self._db(
            lambda db: repository.close_session(
                db, live.session_id, reason=reason, detail=detail, ending=ending
            )
        )
        self._live.pop(live.session_id, None)
        live.audience.close()
        self._count_states()
        metrics.SESSIONS_CLOSED.labels(reason).inc()
        if connection is not None:
            metrics.SESSION_BYTES.labels("to_device").inc(connection.bytes_to_agent)
            metrics.SESSION_BYTES.labels("from_device").inc(connection.bytes_from_agent)
        live.mark_closed()
        for listener in self._listeners:
            listener(live.session_id, "closed")
        logger.info("session %s closed: %s", live.session_id, reason)

    # -- events from the agent ------------------------------------------------------------

    def on_session_event(self, device_id: str, event: DeviceEvent) -> None:
        """Ingest's ``on_session_event``: the agent's side of a session moved."""
        session_id = str(event.body.get("session_id", ""))
        live = self._live.get(session_id)
        if event.type == wire.SESSION_CLOSED:
            self._spawn(self._store_report(device_id, event))
        elif event.type in (wire.SESSION_STARTED, wire.SESSION_REFUSED):
            self._spawn(self._db(repository.note_event, device_id, event.type, dict(event.body)))
        elif event.type in (wire.SESSION_APPROVED, wire.SESSION_DENIED):
            body = dict(event.body)
            self._spawn(self._db(repository.note_site_decision, device_id, event.type, body))
        if live is None or live.agent_id != device_id:
            return
        if event.type == wire.SESSION_STARTED and live.cap(event.body.get("max_duration_s")):
            logger.info(
                "session %s: capped at %.0f s, as the agent runs it",
                session_id,
                live.max_duration_s,
            )
        target = move_on_event(live.state, event.type)
        if target == "closed":
            live.closing = "site_denied"
            self._spawn(self._finish(live, "site_denied", denial_detail(event.body)))
        elif target is not None:
            self._spawn(self._move(live, target))

    async def _store_report(self, device_id: str, event: DeviceEvent) -> None:
        try:
            report = models.SessionClosedReport.model_validate(event.body)
        except ValueError:
            logger.warning("device %s sent a malformed session.closed report", device_id)
            return
        # The server's own close may still be writing the row; the report waits its turn.
        live = self._live.get(report.session_id)
        if live is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.closed.wait(), 5.0)
        await self._db(repository.store_report, device_id, report.model_dump(mode="json"))

    # -- using ----------------------------------------------------------------------------

    async def connection(self, session_id: str, timeout_s: float | None = None) -> AgentConnection:
        """The live connection of an open session, waiting while it is being set up.

        Raises:
            NotFound: Unknown session.
            SessionClosed: The session is (or became) closed.
            AgentNotConnected: It did not become active within ``timeout_s``.
        """
        live = self._live.get(session_id)
        if live is None:
            state = await self._db(repository.holder_text, session_id)
            msg = f"session {session_id} is {state}"
            raise SessionClosed(msg)
        timeout = timeout_s if timeout_s is not None else self.settings.session_open_timeout_s
        try:
            async with asyncio.timeout(timeout):
                while live.connection is None or live.state != "active":
                    if live.state == "closed":
                        msg = f"session {session_id} closed before it was active"
                        raise SessionClosed(msg)
                    await live.changed.wait()
        except TimeoutError as exc:
            msg = f"session {session_id} is still {live.state} after {timeout:g} s"
            raise AgentNotConnected(msg) from exc
        if live.state == "closed" or live.connection.is_closed:
            msg = f"session {session_id} is closed"
            raise SessionClosed(msg)
        return live.connection

    def state(self, session_id: str) -> str | None:
        """The live state of a session this process follows (``None``: not followed)."""
        live = self._live.get(session_id)
        return live.state if live is not None else None

    async def wait_changed(self, session_id: str, timeout_s: float) -> str | None:
        """Wait until the session's state changes (or ``timeout_s``); return the new state."""
        live = self._live.get(session_id)
        if live is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.changed.wait(), timeout_s)
        return live.state

    async def wait_closed(self, session_id: str, timeout_s: float) -> None:
        """Wait until a closing session's row is written (its close reason readable)."""
        live = self._live.get(session_id)
        if live is None:
            return
        ending = live.closing is not None or live.state == "closed"
        if not ending and (live.connection is None or not live.connection.is_closed):
            return  # not closing: nothing to wait for
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.closed.wait(), timeout_s)

    def note_use(self, session_id: str, what: str) -> None:
        """Record that the session used ``what`` (``shell``, ``exec``, ``forward:web``...)."""
        live = self._live.get(session_id)
        if live is not None and what not in live.services_used:
            live.services_used.append(what)

    def audience(self, session_id: str) -> Audience | None:
        """The observers of a session this process holds (``None``: not live here)."""
        live = self._live.get(session_id)
        return live.audience if live is not None else None

    def recording(self, session_id: str, *, cols: int, rows: int, term: str) -> Recording | None:
        """The session's recording, started with the first shell (``None`` if not followed)."""
        live = self._live.get(session_id)
        if live is None:
            return None
        live.shells += 1
        if live.recording is None:
            live.recording = Recording(
                self.recordings_dir / f"{session_id}.cast",
                cols=cols,
                rows=rows,
                term=term,
                title=f"{live.device_id} {session_id}",
            )
        else:
            live.recording.marker(f"shell {live.shells} ({cols}x{rows})")
        return live.recording

    async def run(
        self,
        session_id: str,
        command: str,
        *,
        actor: str,
        timeout_s: float = 30.0,
        source_ip: str | None = None,
    ) -> tuple[int | None, str, str]:
        """Run one command on the device and audit it.

        Raises:
            NotFound, SessionClosed, AgentNotConnected: As :meth:`connection`.
            TunnelError: The command could not run or timed out.
        """
        connection = await self.connection(session_id)
        self.note_use(session_id, "exec")
        result = await connection.run(command, timeout_s=timeout_s)
        await self.audit(
            session_id,
            actor=actor,
            action="session.exec",
            details={"command": command[:1024], "exit_status": result.exit_status},
            source_ip=source_ip,
        )
        return result.exit_status, result.stdout, result.stderr

    async def audit(
        self,
        session_id: str,
        *,
        actor: str,
        action: str,
        details: dict[str, Any],
        source_ip: str | None,
    ) -> None:
        """Audit what ``actor`` did in the session (the entry's target is its device)."""
        await self._db(
            lambda db: repository.record_action(
                db,
                actor=actor,
                action=action,
                session_id=session_id,
                details=details,
                source_ip=source_ip,
            )
        )

    # -- closing --------------------------------------------------------------------------

    async def close(
        self,
        session_id: str,
        *,
        reason: str = "operator",
        actor: str,
        detail: str | None = None,
        source_ip: str | None = None,
    ) -> RemoteSession:
        """Close a session in any state; the tunnel is torn down before this returns.

        Raises:
            NotFound: Unknown session.
        """
        live = self._live.get(session_id)
        if live is None:
            return await self._close_elsewhere(session_id, reason, actor, source_ip)
        if live.closing is None:
            live.closing = reason
            live.detail = detail or (f"closed by {actor}" if reason == "operator" else None)
        if actor != "server":
            await self.audit(
                session_id,
                actor=actor,
                action="session.close.request",
                details={"reason": reason},
                source_ip=source_ip,
            )
        connection = live.connection
        if connection is not None:
            await connection.close(reason)
        else:
            # Not connected yet: tell the agent (it may be waiting for consent) and stop waiting.
            with contextlib.suppress(Exception):
                await self._send_close(live.agent_id, session_id, reason)
            self.registry.discard(session_id)
            await self._finish(live, reason, live.detail)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.closed.wait(), 5.0)
        return await self._db(repository.get_session, session_id)

    async def _send_close(self, device_id: str, session_id: str, reason: str) -> bool:
        """Ask the agent to end a session (``session.close``); whether it was sent."""
        commands = self.commands
        if commands is None:
            return False
        await commands.send(
            device_id,
            wire.SESSION_CLOSE,
            {"session_id": session_id, "reason": reason},
            ttl=timedelta(seconds=60),
        )
        return True

    async def _close_elsewhere(
        self, session_id: str, reason: str, actor: str, source_ip: str | None
    ) -> RemoteSession:
        """Close an open session this process does not follow.

        A session of an earlier run of this instance, or of a server instance
        that is gone, is closed in the database at once (audited). Otherwise
        another live server process holds its tunnel: the agent is told to end
        it, that process records the close, and this waits a few seconds for it.

        Raises:
            NotFound: Unknown session.
            Conflict: Its holder is alive and did not close it in time (the detail says who).
        """
        row = await self._db(repository.get_session, session_id)
        if row.state == "closed":
            return row
        await self.audit(
            session_id,
            actor=actor,
            action="session.close.request",
            details={"reason": reason},
            source_ip=source_ip,
        )
        gone, holder = await self._db(self._holder_state, row.instance)
        if row.instance == self.instance or gone:
            from server.sessions.liveness import close_sessions

            why = (
                f"closed by {actor}"
                if row.instance == self.instance
                else f"closed by {actor}: {holder}"
            )
            await self._db(
                lambda db: close_sessions(
                    db,
                    instance=row.instance,
                    reason=reason if row.instance == self.instance else SERVER_RESTART,
                    detail=why,
                    closed_by=self.instance,
                    session_id=session_id,
                )
            )
            return await self._db(repository.get_session, session_id)
        sent = False
        try:
            agent_id = await self._db(repository.agent_of, row.device_id)
            sent = await self._send_close(agent_id, session_id, reason)
        except Exception as exc:
            logger.warning("session.close for %s not sent: %s", session_id, exc)
        if sent:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                row = await self._db(repository.get_session, session_id)
                if row.state == "closed":
                    return row
                await asyncio.sleep(0.25)
        msg = f"session {session_id} is held by {holder}, which has not closed it" + (
            "; the device was asked to end it: try again shortly" if sent else ""
        )
        raise Conflict(msg)

    def _holder_state(self, db: Session, instance: str) -> tuple[bool, str]:
        if self.liveness is None:
            return False, f"server instance {instance}"
        return self.liveness.holder_state(db, instance)

    async def close_device(self, device_id: str, *, reason: str, actor: str, detail: str) -> int:
        """Close every session of a device this process follows (revocation); how many.

        A site gateway's revocation closes the sessions of the devices it watches too.
        """
        ids = [
            sid for sid, live in self._live.items() if device_id in (live.device_id, live.agent_id)
        ]
        for session_id in ids:
            await self.close(session_id, reason=reason, actor=actor, detail=detail)
        return len(ids)

    def live_operators(self) -> list[tuple[str, str]]:
        """``(session_id, operator)`` of every open session this process follows."""
        return [(sid, live.operator) for sid, live in self._live.items() if live.state != "closed"]

    def operators_by_session(self) -> dict[str, str]:
        """The operator of each open session this process follows."""
        return dict(self.live_operators())

    def device_of(self, session_id: str) -> str | None:
        """The device of a session this process follows."""
        live = self._live.get(session_id)
        return live.device_id if live is not None else None

    async def close_for_user(self, username: str, *, reason: str, detail: str) -> int:
        """Close every session of ``username`` this process follows; how many."""
        ids = [sid for sid, operator in self.live_operators() if operator == username]
        for session_id in ids:
            await self.close(session_id, reason=reason, actor="server", detail=detail)
        return len(ids)

    async def _preapprove(self, session_id: str, device_id: str) -> None:
        """Approve a session awaiting consent when a maintenance window of its device
        pre-approves the sessions in it (the site's consent given in advance); the agent
        still decides whether a web approval counts (``consent = "local"``: it does not)."""
        from server.maintenance.records import preapproving_window
        from server.sessions.approval import Decision, decide

        window = await self._db(preapproving_window, device_id, utcnow())
        if window is None:
            return
        decision = Decision(
            verdict="approve",
            approver=f"maintenance-window:{window.id}",
            audit={"window": window.id, "planned_by": window.created_by},
        )
        try:
            await decide(self, session_id, decision, source_ip=None)
        except FieldlinkError as exc:
            logger.warning("session %s: the window's pre-approval failed: %s", session_id, exc)

    async def _db(self, function: Callable[..., T], *args: Any) -> T:
        def work() -> T:
            with Session(self.engine, expire_on_commit=False) as db:
                return function(db, *args)

        return await asyncio.to_thread(work)


def denial_detail(body: dict[str, Any]) -> str:
    """The closed row's detail of a session the site did not approve."""
    why = str(body.get("why", "denied"))[:64]
    approver = str(body.get("approver", ""))[:128]
    if why != "denied" or not approver:
        return f"the site did not approve: {why}"
    reason = str(body.get("reason", "")).strip()[:512]
    where = "an approval link" if body.get("via") == "link" else "the web"
    return f"the site did not approve: denied by {approver} on {where}" + (
        f": {reason}" if reason else ""
    )


def is_service_name(name: str) -> bool:
    """Whether ``name`` can be a service's name (letters, digits, ``-`` and ``_``; 1-32)."""
    return 0 < len(name) <= 32 and name.replace("-", "").replace("_", "").isalnum()
