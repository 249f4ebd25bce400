"""The life of every remote session on this server: open, drive, use, close, record, audit.

:class:`SessionManager` is what the API routes, the SSH gateway and the
console call. Opening a session:

1. checks the device (registered, not revoked, host key pinned), the
   incident, and the limits (sessions per device and per operator);
2. writes the session row (``requested``) and its audit entry in one
   transaction, makes a one-time client key and a session token, and tells
   the :class:`~server.sessions.registry.SessionRegistry` to expect the agent;
3. signs and publishes ``session.open`` and returns at once: a background
   task follows the session through ``awaiting_consent`` (the site must
   approve), ``connecting`` and ``active`` (the agent's tunnel and SSH
   handshake are up) to ``closed``, updating the row at each step.

The agent's ``session.*`` events (through ingest's ``on_session_event``)
move the state on the site's side: approval asked, approved, denied, and its
own report at the end (bytes, refusals). A session closes when the operator
closes it, when the agent ends it (idle, max duration, site end; the reason
comes back in the SSH disconnect), when the device is unreachable or the
server's own cap on duration passes; then the row gets the close reason,
bytes each way, the services used and the recording's SHA-256, and the
audit log a ``session.close`` entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from server import audit, metrics
from server.config import ServerSettings
from server.crud import InvalidInput
from server.incidents.records import get_incident, link_session
from server.models import OPEN_STATES, Device, RemoteSession
from server.sessions.access import AccessWatch
from server.sessions.errors import AgentAuthFailed, AgentNotConnected, TunnelError
from server.sessions.keys import generate_one_time_key, hash_session_token, parse_host_key
from server.sessions.recording import Recording, file_digest
from server.sessions.registry import PendingSession, SessionRegistry
from shared import models, wire
from shared.errors import Conflict, NotFound, ProtocolError, UnavailableError
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
#: Command result errors of ``session.open`` that are the site's refusal.
_SITE_REFUSALS: Final = frozenset({"not_allowed", "site_denied", "denied"})


#: Session states in the order a session moves through them (never backwards).
_STATE_ORDER: Final[dict[str, int]] = {
    state: rank for rank, state in enumerate(wire.SESSION_STATES)
}


class SessionClosed(Conflict):
    """The session is closed (or closed while it was being waited for)."""


@dataclass(slots=True)
class _Live:
    """What this process holds for one open session."""

    session_id: str
    device_id: str
    operator: str
    max_duration_s: float
    expires_at: datetime
    opened: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    connection: AgentConnection | None = None
    state: str = "requested"
    services_used: list[str] = field(default_factory=list)
    recording: Recording | None = None
    shells: int = 0
    closing: str | None = None
    detail: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def set_state(self, state: str) -> None:
        self.state = state
        self.changed.set()
        self.changed = asyncio.Event()


class SessionManager:
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
        self._live: dict[str, _Live] = {}
        self._listeners: list[Callable[[str, str], None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        #: The liveness watch (set by the app): tells whether another session's holder is gone.
        self.liveness: InstanceLiveness | None = None
        #: Ends sessions and channels whose user or token lost its access.
        self.access = AccessWatch(self, settings.access_check_interval_s)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to recover here: :class:`~server.sessions.liveness.InstanceLiveness`
        closes what this instance id (or a dead server) left open."""
        self.access.start()

    async def stop(self) -> None:
        """Close every live session (server shutdown) and wait for their tasks."""
        await self.access.stop()
        live = list(self._live.values())
        for entry in live:
            await self.close(
                entry.session_id,
                reason="server_restart",
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
        ids = list(self._live)
        closed = await self._db(self._closed_ids, ids)
        for session_id in closed:
            await self.close(
                session_id,
                reason="server_restart",
                actor="server",
                detail="another server judged this one dead and closed the session",
            )
        return len(closed)

    def _closed_ids(self, db: Session, ids: list[str]) -> list[str]:
        if not ids:
            return []
        rows = db.exec(
            select(RemoteSession.id).where(
                col(RemoteSession.id).in_(ids), RemoteSession.state == "closed"
            )
        ).all()
        return list(rows)

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
            bad = [name for name in services if not _is_service_name(name)]
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
        host_key_text = await self._db(self._insert, row, source_ip)
        max_duration_s = self.settings.session_max_duration_s
        live = _Live(session_id, device_id, operator, max_duration_s, expires_at)
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
        ).model_dump(mode="json", exclude_none=True)
        try:
            pending = await commands.send(
                device_id,
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

    def _insert(self, db: Session, row: RemoteSession, source_ip: str | None) -> str:
        device = db.get(Device, row.device_id)
        if device is None:
            msg = f"no device {row.device_id!r}"
            raise NotFound(msg)
        if device.revoked_at is not None:
            msg = f"device {row.device_id} is revoked"
            raise Conflict(msg)
        if not device.ssh_host_key:
            msg = f"device {row.device_id} has no pinned SSH host key: enroll it again"
            raise Conflict(msg)
        if row.incident_id is not None:
            get_incident(db, incident_id=row.incident_id)
        open_states = col(RemoteSession.state).in_(OPEN_STATES)
        per_device = db.exec(
            select(func.count())
            .select_from(RemoteSession)
            .where(RemoteSession.device_id == row.device_id, open_states)
        ).one()
        if per_device >= self.settings.sessions_per_device:
            msg = (
                f"device {row.device_id} already has {per_device} open session(s) "
                f"(limit {self.settings.sessions_per_device})"
            )
            raise Conflict(msg)
        per_operator = db.exec(
            select(func.count())
            .select_from(RemoteSession)
            .where(RemoteSession.operator == row.operator, open_states)
        ).one()
        if per_operator >= self.settings.sessions_per_operator:
            msg = (
                f"{row.operator} already has {per_operator} open session(s) "
                f"(limit {self.settings.sessions_per_operator})"
            )
            raise Conflict(msg)
        db.add(row)
        db.flush()
        audit.record(
            db,
            actor=row.operator,
            action="session.open",
            target=row.device_id,
            details={
                "session_id": row.id,
                "reason": row.reason,
                "incident_id": row.incident_id,
                "services": row.services,
                "origin": row.origin,
                "client_key": row.client_key_fingerprint,
            },
            source_ip=source_ip,
        )
        db.commit()
        if row.incident_id is not None:
            link_session(db, row.incident_id, row.id)
        return device.ssh_host_key

    # -- following ------------------------------------------------------------------------

    async def _drive(self, live: _Live, pending: Any) -> None:
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
                reason = "site_denied" if error in _SITE_REFUSALS else "error"
                detail = f"the device refused the session: {error}"
                if result.body.get("services"):
                    detail += f" (services {', '.join(map(str, result.body['services']))})"
                await self._finish(live, reason, detail)
                return
            state = str(result.body.get("state", "connecting"))
            if live.state == "requested":
                await self._set_state(
                    live, "awaiting_consent" if state == "awaiting_consent" else "connecting"
                )
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
                await self._db(self._mark_active, sid)
                await self._set_state(live, "active", write=False)
            try:
                async with asyncio.timeout(live.max_duration_s):
                    reason = await connection.wait_closed()
            except TimeoutError:
                await connection.close("max_duration")
                reason = "max_duration"
            ended = live.detail
            if ended is None and reason == "server_restart":
                ended = "the server shut down"
            await self._finish(live, live.closing or reason, ended)
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(live, "error", "the server stopped following it"))
            raise
        except Exception:
            logger.exception("session %s failed", sid)
            await self._finish(live, "error", "internal error")

    def _mark_active(self, db: Session, session_id: str) -> None:
        row = db.get(RemoteSession, session_id)
        if row is not None and row.state != "closed":
            row.state = "active"
            row.started_at = utcnow()
            db.add(row)
            db.commit()

    async def _set_state(self, live: _Live, state: str, *, write: bool = True) -> None:
        # States only move forward: an agent event that arrives late (approved after the
        # tunnel is already up) must not move an active session back to "connecting".
        if _STATE_ORDER[state] <= _STATE_ORDER[live.state]:
            return
        if write:
            await self._db(self._write_state, live.session_id, state)
            if _STATE_ORDER[state] <= _STATE_ORDER[live.state]:
                return
        live.set_state(state)
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

    def _write_state(self, db: Session, session_id: str, state: str) -> None:
        earlier = [name for name, order in _STATE_ORDER.items() if order < _STATE_ORDER[state]]
        db.execute(
            sa.update(RemoteSession)
            .where(col(RemoteSession.id) == session_id, col(RemoteSession.state).in_(earlier))
            .values(state=state)
        )
        db.commit()

    async def _finish(self, live: _Live, reason: str, detail: str | None) -> None:
        """Close the row, the recording and the audit trail, once."""
        if live.state == "closed":
            return
        live.state = "closed"
        self.registry.discard(live.session_id)
        recording = live.recording
        if recording is not None:
            recording.close()
        connection = live.connection
        await self._db(self._write_closed, live, reason, detail, connection)
        self._live.pop(live.session_id, None)
        self._count_states()
        metrics.SESSIONS_CLOSED.labels(reason).inc()
        if connection is not None:
            metrics.SESSION_BYTES.labels("to_device").inc(connection.bytes_to_agent)
            metrics.SESSION_BYTES.labels("from_device").inc(connection.bytes_from_agent)
        live.changed.set()
        live.closed.set()
        for listener in self._listeners:
            listener(live.session_id, "closed")
        logger.info("session %s closed: %s", live.session_id, reason)

    def _write_closed(
        self,
        db: Session,
        live: _Live,
        reason: str,
        detail: str | None,
        connection: AgentConnection | None,
    ) -> None:
        row = db.get(RemoteSession, live.session_id)
        if row is None or row.state == "closed":
            # Closed already (another server judged this one dead): one close, one entry.
            return
        row.state = "closed"
        row.close_reason = reason
        row.detail = (detail or "")[:1024] or None
        row.ended_at = utcnow()
        row.services_used = list(live.services_used)
        if connection is not None:
            row.bytes_to_device = connection.bytes_to_agent
            row.bytes_from_device = connection.bytes_from_agent
        recording = live.recording
        if recording is not None and recording.path.exists():
            digest, size = file_digest(recording.path)
            row.recording_path = str(recording.path)
            row.recording_sha256 = digest
            row.recording_bytes = size
        db.add(row)
        db.flush()
        audit.record(
            db,
            actor=row.operator,
            action="session.close",
            target=row.device_id,
            details={
                "session_id": row.id,
                "close_reason": reason,
                "detail": row.detail,
                "services_used": row.services_used,
                "bytes_to_device": row.bytes_to_device,
                "bytes_from_device": row.bytes_from_device,
                "recording_sha256": row.recording_sha256,
            },
        )
        db.commit()

    # -- events from the agent ------------------------------------------------------------

    def on_session_event(self, device_id: str, event: DeviceEvent) -> None:
        """Ingest's ``on_session_event``: the agent's side of a session moved."""
        session_id = str(event.body.get("session_id", ""))
        live = self._live.get(session_id)
        if event.type == wire.SESSION_CLOSED:
            self._spawn(self._store_report(device_id, event))
        elif event.type in (wire.SESSION_STARTED, wire.SESSION_REFUSED):
            self._spawn(self._db(self._note_event, device_id, event.type, dict(event.body)))
        if live is None or live.device_id != device_id:
            return
        if event.type == wire.SESSION_AWAITING_CONSENT and live.state in (
            "requested",
            "connecting",
        ):
            self._spawn(self._set_state(live, "awaiting_consent"))
        elif event.type == wire.SESSION_APPROVED and live.state in (
            "requested",
            "awaiting_consent",
        ):
            self._spawn(self._set_state(live, "connecting"))
        elif event.type == wire.SESSION_DENIED and live.state != "active":
            why = str(event.body.get("why", "denied"))
            live.closing = "site_denied"
            self._spawn(self._finish(live, "site_denied", f"the site did not approve: {why}"))

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
        await self._db(self._write_report, device_id, report.model_dump(mode="json"))

    def _write_report(self, db: Session, device_id: str, report: dict[str, Any]) -> None:
        row = db.get(RemoteSession, report["session_id"])
        if row is None or row.device_id != device_id:
            return
        # The closing report lists the refusals again: it replaces the live ones.
        row.agent_report = {**(row.agent_report or {}), **report}
        db.add(row)
        db.commit()

    def _note_event(self, db: Session, device_id: str, kind: str, body: dict[str, Any]) -> None:
        """Keep what the agent said while the session ran: its limits, each refusal."""
        row = db.get(RemoteSession, str(body.get("session_id", "")))
        if row is None or row.device_id != device_id:
            return
        report = dict(row.agent_report or {})
        if kind == wire.SESSION_STARTED:
            report["started"] = {
                "services": [str(name) for name in body.get("services", [])][:64],
                "max_duration_s": body.get("max_duration_s"),
                "idle_timeout_s": body.get("idle_timeout_s"),
            }
        else:
            refusal = {key: str(body.get(key, ""))[:512] for key in ("kind", "target", "reason")}
            report["refusals"] = [*report.get("refusals", []), refusal][-50:]
        row.agent_report = report
        db.add(row)
        db.commit()

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
            state = await self._db(self._state_of, session_id)
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

    def _state_of(self, db: Session, session_id: str) -> str:
        row = db.get(RemoteSession, session_id)
        if row is None:
            msg = f"no session {session_id!r}"
            raise NotFound(msg)
        return "closed" if row.state == "closed" else f"held by another server ({row.instance})"

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
        await self._db(
            self._audit,
            actor,
            "session.exec",
            session_id,
            {"command": command[:1024], "exit_status": result.exit_status},
            source_ip,
        )
        return result.exit_status, result.stdout, result.stderr

    def _audit(
        self,
        db: Session,
        actor: str,
        action: str,
        session_id: str,
        details: dict[str, Any],
        source_ip: str | None,
    ) -> None:
        row = db.get(RemoteSession, session_id)
        audit.record(
            db,
            actor=actor,
            action=action,
            target=row.device_id if row is not None else None,
            details={"session_id": session_id, **details},
            source_ip=source_ip,
        )
        db.commit()

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
            await self._db(
                self._audit,
                actor,
                "session.close.request",
                session_id,
                {"reason": reason},
                source_ip,
            )
        connection = live.connection
        if connection is not None:
            await connection.close(reason)
        else:
            # Not connected yet: tell the agent (it may be waiting for consent) and stop waiting.
            commands = self.commands
            if commands is not None:
                with contextlib.suppress(Exception):
                    await commands.send(
                        live.device_id,
                        wire.SESSION_CLOSE,
                        {"session_id": session_id, "reason": reason},
                        ttl=timedelta(seconds=60),
                    )
            self.registry.discard(session_id)
            await self._finish(live, reason, live.detail)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.closed.wait(), 5.0)
        return await self._db(self._get, session_id)

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
        row = await self._db(self._get, session_id)
        if row.state == "closed":
            return row
        await self._db(
            self._audit, actor, "session.close.request", session_id, {"reason": reason}, source_ip
        )
        gone, holder = await self._db(self._holder_state, row.instance)
        if row.instance == self.instance or gone:
            from server.sessions.liveness import SERVER_RESTART, close_sessions

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
            return await self._db(self._get, session_id)
        commands = self.commands
        sent = False
        if commands is not None:
            try:
                await commands.send(
                    row.device_id,
                    wire.SESSION_CLOSE,
                    {"session_id": session_id, "reason": reason},
                    ttl=timedelta(seconds=60),
                )
                sent = True
            except Exception as exc:
                logger.warning("session.close for %s not sent: %s", session_id, exc)
        if sent:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                row = await self._db(self._get, session_id)
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
        """Close every session of a device this process follows (revocation); how many."""
        ids = [sid for sid, live in self._live.items() if live.device_id == device_id]
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

    def _get(self, db: Session, session_id: str) -> RemoteSession:
        row = db.get(RemoteSession, session_id)
        if row is None:
            msg = f"no session {session_id!r}"
            raise NotFound(msg)
        return row

    async def _db(self, function: Callable[..., T], *args: Any) -> T:
        def work() -> T:
            with Session(self.engine, expire_on_commit=False) as db:
                return function(db, *args)

        return await asyncio.to_thread(work)


def _is_service_name(name: str) -> bool:
    return 0 < len(name) <= 32 and name.replace("-", "").replace("_", "").isalnum()


def recording_file(row: RemoteSession) -> Path | None:
    """The recording of a closed session, if it has one on disk."""
    if row.recording_path is None:
        return None
    path = Path(row.recording_path)
    return path if path.is_file() else None
