"""The SSH gateway: native OpenSSH clients reach devices through audited sessions.

``ssh -p 2222 DEVICE@server`` (a shell), ``ssh ... DEVICE@server CMD`` (a
command), ``scp``/``sftp`` (the device's confined folders) and
``ssh -L 8080:web:80 ...`` (an allowlisted service) all work: the SSH user
name is the device id, and the operator authenticates with a public key
registered for them (:mod:`server.gateway.keys`).

Each SSH connection is one remote session (origin ``gateway``), opened by
:class:`~server.sessions.manager.SessionManager` when the first channel
asks for something, with the reason the client sent in ``FIELDLINK_REASON``
(``SetEnv``/``SendEnv``; ``ssh gateway`` otherwise) and optionally an
incident in ``FIELDLINK_INCIDENT``. While the session is set up (the site
may have to approve it) the client waits, and is told so. Every channel is
joined to a twin channel on the server's SSH connection to the agent
(:mod:`server.gateway.bridge`); the agent enforces its own policy (folders,
allowlist), and its refusals reach the client as SSH refusals with the
reason. Shells in a PTY are recorded. When the client disconnects, the
session is closed (``operator``); when the session ends on the device's
side (idle, maximum duration, the site ended it), the client is told why
and disconnected.

Not offered: passwords, remote (``-R``) forwards, agent and X11
forwarding, subsystems other than ``sftp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import asyncssh
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit
from server.config import ServerSettings
from server.gateway.bridge import (
    ChannelEnd,
    DeviceProcessSession,
    DeviceTCPSession,
    OperatorTCPSession,
    link,
)
from server.gateway.hostkey import load_or_create_host_key
from server.gateway.keys import KeyOwner, key_owner, record_login, record_refused_login
from server.models import RemoteSession
from shared.errors import FieldlinkError, InvalidDeviceId
from shared.ids import check_device_id
from shared.tunnel import SESSION_CLOSED_CODE
from shared.wire import MAX_SERVICE_NAME_LENGTH

if TYPE_CHECKING:
    from server.sessions.client import AgentConnection
    from server.sessions.manager import SessionManager
    from server.sessions.recording import Recording

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The client's environment variables the gateway reads (``SetEnv`` or ``SendEnv``).
REASON_ENV: Final = "FIELDLINK_REASON"
INCIDENT_ENV: Final = "FIELDLINK_INCIDENT"
#: The session's reason when the client sends none.
DEFAULT_REASON: Final = "ssh gateway"
#: Keys a client may offer on one connection before it is disconnected.
MAX_KEY_ATTEMPTS: Final = 8
#: AES-GCM only: OpenSSH clients prefer chacha20 and then AES-CTR with a MAC when
#: offered, both markedly slower in asyncssh than AES-GCM (AES-NI, one pass).
CIPHERS: Final = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: How long a channel the device closed without an exit status waits for the session's end.
SESSION_END_GRACE_S: Final = 0.25
#: How the client is told a session ended, by close reason.
_ENDED: Final[Mapping[str, str]] = {
    "idle_timeout": "was closed after being idle too long (idle_timeout)",
    "max_duration": "reached its maximum duration (max_duration)",
    "site_ended": "was ended by the site (site_ended)",
    "site_denied": "was not approved by the site (site_denied)",
    "operator": "was closed by an operator (operator)",
    "agent_unreachable": "lost the device (agent_unreachable)",
    "server_restart": "was closed because its server stopped (server_restart)",
    "access_revoked": "was ended because your access was revoked (access_revoked)",
    "error": "ended with an error (error)",
}


class GatewayRefusal(FieldlinkError):
    """The connection's session could not be opened, or has ended (the text is for the client)."""


def _ended_text(reason: str) -> str:
    return _ENDED.get(reason, f"ended ({reason})")


def describe_loss(exc: BaseException | None) -> str:
    """What to tell the client when the agent's connection ended under a channel."""
    if isinstance(exc, asyncssh.DisconnectError) and exc.code == SESSION_CLOSED_CODE:
        reason = exc.reason.split(" (error", 1)[0]
        return f"the session {_ended_text(reason)}"
    return "the connection to the device was lost"


def _is_service_name(host: str) -> bool:
    return (
        0 < len(host) <= MAX_SERVICE_NAME_LENGTH
        and host.replace("-", "").replace("_", "").isalnum()
    )


class Gateway:
    """The gateway's listener, its connections and their background work.

    Args:
        sessions: The server's session manager.
        settings: The server's settings.
        engine: The database.
        host_key: The gateway's host key.
    """

    def __init__(
        self,
        sessions: SessionManager,
        settings: ServerSettings,
        engine: Engine,
        host_key: asyncssh.SSHKey,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.engine = engine
        self.host_key = host_key
        self.fingerprint: str = host_key.get_fingerprint()
        self.host = ""
        self.port: int | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[_GatewayConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def public_host_key(self) -> str:
        """The host key's OpenSSH public line (for ``known_hosts``)."""
        return self.host_key.export_public_key("openssh").decode().strip()

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0: a free port; :attr:`port` has the one taken).

        Raises:
            OSError: The address cannot be listened on.
        """
        self._acceptor = await asyncssh.create_server(
            partial(_GatewayConnection, self),
            host,
            port,
            server_host_keys=[self.host_key],
            encoding=None,
            line_editor=False,
            allow_pty=True,
            agent_forwarding=False,
            x11_forwarding=False,
            encryption_algs=list(CIPHERS),
            compression_algs=None,
            gss_host=None,
            login_timeout=30.0,
            keepalive_interval=30.0,
            keepalive_count_max=4,
        )
        self.host = host
        self.port = self._acceptor.get_port()

    async def stop(self) -> None:
        """Stop listening, disconnect every client (their sessions close), finish the rest."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
            await acceptor.wait_closed()
        for connection in list(self._connections):
            connection.disconnect("the server is shutting down")
        # Their connection_lost (soon) starts the tasks that close their sessions.
        for _ in range(100):
            if not self._connections:
                break
            await asyncio.sleep(0.01)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10.0)

    def spawn(self, coroutine: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run background work the gateway waits for when it stops."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, FieldlinkError):
            logger.error("SSH gateway task %s failed", task.get_name(), exc_info=exc)

    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function(session, *args, **kwargs)`` on a database session in a thread."""

        def work() -> T:
            with Session(self.engine, expire_on_commit=False) as session:
                return function(session, *args, **kwargs)

        return await asyncio.to_thread(work)


class _GatewayConnection(asyncssh.SSHServer):
    """One client's SSH connection: its authentication, its session, its channels."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._conn: asyncssh.SSHServerConnection | None = None
        self.device_id = ""
        self.source_ip: str | None = None
        self.owner: KeyOwner | None = None
        self._candidate: KeyOwner | None = None
        self._owner_refused = False
        self._refused_keys: list[str] = []
        self._opening: asyncio.Task[AgentConnection] | None = None
        self.session_id: str | None = None
        self._channels: set[_OperatorSession] = set()
        self._lost = False
        self._closing = False
        self._session_closed = False
        self._log: logging.LoggerAdapter[logging.Logger] = logging.LoggerAdapter(logger, {})

    # -- connection and authentication -----------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self.source_ip = str(peer[0]) if peer else None
        self._gateway._connections.add(self)

    def begin_auth(self, username: str) -> bool:
        self.device_id = username[:128]
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        del username
        fingerprint = key.get_fingerprint()
        owner = await self._gateway.db(key_owner, fingerprint)
        if owner is None:
            if fingerprint not in self._refused_keys:
                self._refused_keys.append(fingerprint)
            if len(self._refused_keys) > MAX_KEY_ATTEMPTS:
                msg = "too many keys offered"
                raise asyncssh.PermissionDenied(msg)
            return False
        # Only a candidate: asyncssh checks the client's signature before auth completes.
        self._candidate = owner
        return True

    def auth_completed(self) -> None:
        owner = self._candidate
        if owner is None:  # pragma: no cover  (public keys are the only method)
            self.disconnect("not authenticated", asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE)
            return
        refusal = owner.refusal()
        if refusal is not None:
            self._owner_refused = True
            self._log.warning(
                "SSH gateway login refused for %s (key %s) to %s: %s",
                owner.username,
                owner.fingerprint,
                self.device_id,
                refusal,
            )
            self._gateway.spawn(
                self._gateway.db(
                    record_refused_login,
                    username=owner.username,
                    device_id=self.device_id,
                    fingerprint=owner.fingerprint,
                    why=refusal,
                    source_ip=self.source_ip,
                ),
                name="gateway-audit",
            )
            self.disconnect(
                f"{refusal}: the SSH gateway is for operators",
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
            )
            return
        self.owner = owner
        self._log = logging.LoggerAdapter(
            logger, {"operator": owner.username, "device_id": self.device_id}
        )
        self._log.info(
            "SSH gateway login: %s to %s from %s (key %s)",
            owner.username,
            self.device_id,
            self.source_ip,
            owner.fingerprint,
        )
        self._gateway.spawn(
            self._gateway.db(
                record_login, owner, device_id=self.device_id, source_ip=self.source_ip
            ),
            name="gateway-audit",
        )

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        self._lost = True
        self._gateway._connections.discard(self)
        if self.owner is None:
            self._audit_failed_login()
        if self.session_id is not None:
            self._gateway.spawn(self._close_session(), name=f"gateway-close-{self.session_id}")
        # A session still being opened is closed by _open once the manager returns it.

    def _audit_failed_login(self) -> None:
        """A connection that never logged in: audit the keys it offered (if any)."""
        refusals: list[tuple[str | None, str, str]] = []
        if self._refused_keys:
            refusals.append((None, ", ".join(self._refused_keys), "unknown key"))
        candidate = self._candidate
        if candidate is not None and not self._owner_refused:
            # A registered key offered without the signature that proves its private half.
            refusals.append((candidate.username, candidate.fingerprint, "key not proven"))
        for username, fingerprints, why in refusals:
            self._gateway.spawn(
                self._gateway.db(
                    record_refused_login,
                    username=username,
                    device_id=self.device_id,
                    fingerprint=fingerprints,
                    why=why,
                    source_ip=self.source_ip,
                ),
                name="gateway-audit",
            )

    def disconnect(self, text: str, code: int = asyncssh.DISC_BY_APPLICATION) -> None:
        """Disconnect the client, telling it why (``Received disconnect ...: fieldlink: TEXT``).

        Args:
            text: Why, for the operator.
            code: The SSH disconnect code: "by application" for a session's
                normal end, another for a refusal (clients such as asyncssh
                report those as errors, and a normal end as a plain close).
        """
        self._closing = True
        if self._conn is None or self._lost:
            return
        # OpenSSH may exit on its channel's close before it reads the disconnect: say it there.
        for channel in list(self._channels):
            channel.end_with(text)
        self._conn.disconnect(code, f"fieldlink: {text}")

    # -- channels --------------------------------------------------------------------------

    def session_requested(self) -> asyncssh.SSHServerSession[bytes] | bool:
        if self.owner is None:
            return False
        channel = _OperatorSession(self)
        self._channels.add(channel)
        return channel

    def forget(self, channel: _OperatorSession) -> None:
        """A session channel closed."""
        self._channels.discard(channel)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Coroutine[Any, Any, OperatorTCPSession]:
        del orig_host, orig_port
        return self._forward_safely(dest_host, dest_port)

    async def _forward_safely(self, host: str, port: int) -> OperatorTCPSession:
        try:
            return await self._forward(host, port)
        except asyncssh.ChannelOpenError:
            raise
        except Exception:
            self._log.exception("SSH gateway: a forward to %s failed", host)
            msg = "internal error (see the server's log)"
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, msg) from None

    async def _forward(self, host: str, port: int) -> OperatorTCPSession:
        if self.owner is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not authenticated"
            )
        try:
            agent = await self.agent_connection(None)
        except GatewayRefusal as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        # OpenSSH needs a port in -L; with a service name the agent picks the service's own.
        service_port = 0 if _is_service_name(host) else port
        try:
            _, opened = await agent.ssh.create_connection(DeviceTCPSession, host, service_port)
        except asyncssh.ChannelOpenError as exc:
            self._log.info("the device refused a forward to %s:%d: %s", host, port, exc.reason)
            raise asyncssh.ChannelOpenError(
                exc.code, f"the device refused {host}: {exc.reason}"
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, f"cannot reach {host} on the device: {exc}"
            ) from None
        device = cast(DeviceTCPSession, opened)
        if self._lost:
            device.end.close()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "disconnected")
        if self.session_id is not None:
            self._gateway.sessions.note_use(self.session_id, f"forward:{host}")
        self._log.info("forward to %s in session %s", host, self.session_id)
        return OperatorTCPSession(device.end)

    # -- the session -----------------------------------------------------------------------

    async def agent_connection(self, env: Mapping[str, str] | None) -> AgentConnection:
        """The session's connection to the agent, opening the session on first use.

        Args:
            env: The environment the first channel's client sent (the reason, the incident).

        Raises:
            GatewayRefusal: The session could not be opened or has ended (the
                waiting channels have been told, and the client disconnected).
        """
        if self._opening is None:
            reason, incident_id = _session_details(env or {})
            self._opening = self._gateway.spawn(
                self._open(reason, incident_id), name=f"gateway-open-{self.device_id}"
            )
        return await asyncio.shield(self._opening)

    async def _open(self, reason: str, incident_id: int | None) -> AgentConnection:
        try:
            return await self._open_session(reason, incident_id)
        except GatewayRefusal:
            raise
        except Exception:
            self._log.exception("SSH gateway: opening a session to %s failed", self.device_id)
            if self.session_id is not None:
                await self._close_session()
            msg = "internal error (see the server's log)"
            raise self._refuse(msg) from None

    async def _open_session(self, reason: str, incident_id: int | None) -> AgentConnection:
        owner = self.owner
        assert owner is not None  # noqa: S101  (channels exist only after auth)
        manager = self._gateway.sessions
        try:
            check_device_id(self.device_id)
        except InvalidDeviceId:
            msg = f"{self.device_id!r} is not a device id: connect as DEVICE@server"
            raise self._refuse(msg) from None
        try:
            row = await manager.open(
                self.device_id,
                operator=owner.username,
                reason=reason,
                incident_id=incident_id,
                origin="gateway",
                source_ip=self.source_ip,
            )
        except FieldlinkError as exc:
            msg = f"no session to {self.device_id}: {exc}"
            raise self._refuse(msg) from None
        self.session_id = row.id
        self._log.info("session %s opened for %s: %s", row.id, self.device_id, reason)
        if self._lost:
            await self._close_session()
            msg = "disconnected"
            raise GatewayRefusal(msg)
        announcer = self._gateway.spawn(self._announce(row.id), name=f"gateway-notice-{row.id}")
        try:
            connection = await manager.connection(row.id)
        except FieldlinkError as exc:
            text = await self._failure_text(row.id, exc)
            raise self._refuse(text) from None
        finally:
            announcer.cancel()
        self._gateway.spawn(self._follow(connection), name=f"gateway-follow-{row.id}")
        return connection

    def _refuse(self, text: str) -> GatewayRefusal:
        """Tell waiting channels and the client why there is no session; disconnect."""
        if not self._lost:
            self._log.info("SSH gateway: %s", text)
        for channel in list(self._channels):
            channel.fail(text)
        self.disconnect(text, asyncssh.DISC_SERVICE_NOT_AVAILABLE)
        return GatewayRefusal(text)

    async def _failure_text(self, session_id: str, exc: FieldlinkError) -> str:
        row = await self._gateway.db(_session_row, session_id)
        if row is None or row.state != "closed":
            return f"session {session_id} did not start: {exc}"
        text = f"session {session_id} {_ended_text(row.close_reason or 'error')}"
        return f"{text}: {row.detail}" if row.detail else text

    async def _announce(self, session_id: str) -> None:
        """Tell the waiting client when the site has to approve the session."""
        manager = self._gateway.sessions
        state = manager.state(session_id)
        while state in ("requested", "connecting"):
            state = await manager.wait_changed(session_id, 60.0)
        if state == "awaiting_consent":
            for channel in list(self._channels):
                channel.notice("waiting for the site to approve the session...")

    async def _follow(self, connection: AgentConnection) -> None:
        """Disconnect the client, saying why, when the session ends on the device's side."""
        reason = await connection.wait_closed()
        if self._lost or self._closing:
            return
        self._log.info("session %s ended: %s", self.session_id, reason)
        self.disconnect(f"the session {_ended_text(reason)}")

    async def _close_session(self) -> None:
        session_id = self.session_id
        owner = self.owner
        if session_id is None or owner is None or self._session_closed:
            return
        self._session_closed = True
        await self._gateway.sessions.close(
            session_id,
            reason="operator",
            actor=owner.username,
            detail="the operator's SSH client disconnected",
            source_ip=self.source_ip,
        )

    async def audit_exec(self, command: str) -> None:
        """Audit a command the client runs on the device (``session.exec``)."""
        owner = self.owner
        if owner is None or self.session_id is None:
            return
        await self._gateway.db(
            _record_exec,
            actor=owner.username,
            device_id=self.device_id,
            session_id=self.session_id,
            command=command,
            source_ip=self.source_ip,
        )

    def recording(self, *, cols: int, rows: int, term: str) -> Recording | None:
        """The session's recording, for a PTY channel."""
        if self.session_id is None:
            return None
        return self._gateway.sessions.recording(self.session_id, cols=cols, rows=rows, term=term)

    def note_use(self, what: str) -> None:
        """Record what the session used."""
        if self.session_id is not None:
            self._gateway.sessions.note_use(self.session_id, what)

    def spawn(self, coroutine: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Background work of this connection (the gateway waits for it when it stops)."""
        return self._gateway.spawn(coroutine, name)


def _session_details(env: Mapping[str, str]) -> tuple[str, int | None]:
    reason = env.get(REASON_ENV, "").strip()[:1024] or DEFAULT_REASON
    incident = env.get(INCIDENT_ENV, "").strip()
    incident_id: int | None = None
    if incident:
        if not incident.isdigit():
            msg = f"{INCIDENT_ENV} must be an incident number, not {incident[:40]!r}"
            raise GatewayRefusal(msg)
        incident_id = int(incident)
    return reason, incident_id


def _session_row(session: Session, session_id: str) -> RemoteSession | None:
    return session.get(RemoteSession, session_id)


def _record_exec(
    session: Session,
    *,
    actor: str,
    device_id: str,
    session_id: str,
    command: str,
    source_ip: str | None,
) -> None:
    audit.record(
        session,
        actor=actor,
        action="session.exec",
        target=device_id,
        details={"session_id": session_id, "command": command[:1024], "origin": "gateway"},
        source_ip=source_ip,
    )
    session.commit()


class _OperatorSession(asyncssh.SSHServerSession[bytes]):
    """A session channel the client opened (shell, exec, sftp), joined to its device twin."""

    def __init__(self, connection: _GatewayConnection) -> None:
        self._connection = connection
        self.end = ChannelEnd("operator")
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._term_type: str | None = None
        self._term_size: tuple[int, int, int, int] = (80, 24, 0, 0)
        self._term_modes: Mapping[int, int] = {}
        self._command: str | None = None
        self._subsystem: str | None = None
        self._device_chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._agent: AgentConnection | None = None
        self._recording: Recording | None = None

    @property
    def kind(self) -> str:
        """``shell``, ``exec``, ``scp`` or ``sftp``."""
        if self._subsystem is not None:
            return self._subsystem
        if self._command is None:
            return "shell"
        return "scp" if self._command.startswith("scp ") else "exec"

    def _newline(self) -> str:
        return "\r\n" if self._term_type else "\n"

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        self.end.attach(chan)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self._term_type = term_type or "xterm"
        self._term_size = term_size
        self._term_modes = dict(term_modes)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self._subsystem = subsystem
        return True

    def session_started(self) -> None:
        self._connection.spawn(self._bridge_safely(), name=f"gateway-{self.kind}")

    async def _bridge_safely(self) -> None:
        try:
            await self._bridge()
        except Exception:
            logger.exception("SSH gateway: bridging a %s channel failed", self.kind)
            self.fail("internal error (see the server's log)")

    async def _bridge(self) -> None:
        chan = self._chan
        assert chan is not None  # noqa: S101  (started after connection_made)
        try:
            agent = await self._connection.agent_connection(chan.get_environment())
        except GatewayRefusal as exc:
            self.fail(str(exc))
            return
        if self.end.closed:
            return
        self._agent = agent
        cols, rows = self._term_size[0] or 80, self._term_size[1] or 24
        try:
            device_chan, opened = await agent.ssh.create_session(
                partial(DeviceProcessSession, self._device_ended),
                command=self._command,
                subsystem=self._subsystem,
                request_pty=True,
                term_type=self._term_type,
                term_size=(cols, rows, self._term_size[2], self._term_size[3]),
                term_modes=self._term_modes,
                encoding=None,
            )
        except (asyncssh.Error, OSError) as exc:
            reason = exc.reason if isinstance(exc, asyncssh.ChannelOpenError) else str(exc)
            self.fail(f"the device refused the {self.kind}: {reason}", status=1)
            return
        device = cast(DeviceProcessSession, opened)
        if self.end.closed:
            device_chan.close()
            return
        self._device_chan = device_chan
        kind = self.kind
        self._connection.note_use(kind)
        if self._term_type is not None and kind in ("shell", "exec"):
            self._recording = self._connection.recording(cols=cols, rows=rows, term=self._term_type)
            if self._recording is not None:
                device.end.tap = self._recording.output
        if self._command is not None:
            self._connection.spawn(
                self._connection.audit_exec(self._command), name="gateway-audit-exec"
            )
        link(self.end, device.end)

    def _device_ended(
        self, status: int | None, signal: tuple[str, bool, str] | None, exc: Any
    ) -> None:
        if self._recording is not None:
            self._recording.flush()
        chan = self._chan
        if chan is None or self.end.closed:
            return
        agent = self._agent
        ended_by = agent.close_reason if agent is not None else None
        if signal is not None:
            name, core_dumped, message = signal
            chan.exit_with_signal(name, core_dumped, message)
            self.end.closed = True
        elif status is not None:
            chan.exit(status)
            self.end.closed = True
        elif exc is not None:
            self.notice(describe_loss(exc))
            self.end.close()
        elif ended_by is not None:
            self.notice(f"the session {_ended_text(ended_by)}")
            self.end.close()
        else:
            # An agent ending the session closes its channels just before it disconnects.
            self._connection.spawn(self._end_quietly(), name="gateway-channel-end")

    async def _end_quietly(self) -> None:
        """The device closed the channel without an exit status: say why if the session ended."""
        agent = self._agent
        reason: str | None = None
        if agent is not None:
            with contextlib.suppress(TimeoutError):
                reason = await asyncio.wait_for(agent.wait_closed(), SESSION_END_GRACE_S)
        chan = self._chan
        if chan is None or self.end.closed:
            return
        if reason is not None:
            self.notice(f"the session {_ended_text(reason)}")
            self.end.close()
        elif self._subsystem == "sftp":
            # asyncssh's SFTP server ends without an exit status; OpenSSH's says 0 (scp checks).
            chan.exit(0)
            self.end.closed = True
        else:
            self.end.close()

    def notice(self, text: str) -> None:
        """Show the operator a line from the gateway (on stderr)."""
        chan = self._chan
        if chan is None or self.end.closed:
            return
        newline = self._newline()
        lead = newline if self.end.linked else ""
        with contextlib.suppress(OSError):
            chan.write_stderr(f"{lead}fieldlink: {text}{newline}".encode())

    def end_with(self, text: str) -> None:
        """End the channel, telling the operator why."""
        if self._chan is None or self.end.closed:
            return
        self.notice(text)
        self.end.close()

    def fail(self, text: str, status: int = 255) -> None:
        """The channel cannot be served: say why and end it."""
        chan = self._chan
        if chan is None or self.end.closed:
            return
        self.notice(text)
        with contextlib.suppress(OSError):
            chan.exit(status)
        self.end.closed = True

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.end.receive(data, datatype)

    def eof_received(self) -> bool:
        return self.end.receive_eof()

    def pause_writing(self) -> None:
        self.end.pause_peer()

    def resume_writing(self) -> None:
        self.end.resume_peer()

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._term_size = (width, height, pixwidth, pixheight)
        device_chan = self._device_chan
        if device_chan is not None and not self.end.closed:
            with contextlib.suppress(OSError):
                device_chan.change_terminal_size(width, height, pixwidth, pixheight)
        if self._recording is not None:
            self._recording.resize(width, height)

    def signal_received(self, signal: str) -> None:
        device_chan = self._device_chan
        if device_chan is not None:
            with contextlib.suppress(OSError, ValueError):
                device_chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        device_chan = self._device_chan
        if device_chan is None:
            return False
        with contextlib.suppress(OSError):
            device_chan.send_break(msec)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        self.end.lost()
        if self.end.peer is not None:
            self.end.peer.close()
        if self._recording is not None:
            self._recording.flush()
        self._connection.forget(self)


async def start_gateway(
    sessions: SessionManager, settings: ServerSettings, engine: Engine
) -> Gateway | None:
    """Start the SSH gateway as ``[server] ssh_gateway_*`` say.

    Args:
        sessions: The server's session manager.
        settings: ``ssh_gateway_port`` (-1: off, 0: a free port),
            ``ssh_gateway_host`` (default ``http_host``), ``state_dir`` (host key).
        engine: The database (operators' keys, audit).

    Returns:
        The running gateway (stop it with :meth:`Gateway.stop`), or ``None``
        when it is off or cannot listen (logged as an error: the rest of the
        server runs on).
    """
    port = settings.ssh_gateway_port
    if port < 0:
        logger.info("SSH gateway off (ssh_gateway_port = -1)")
        return None
    host = settings.ssh_gateway_host or settings.http_host
    host_key = await asyncio.to_thread(load_or_create_host_key, settings.state_dir)
    gateway = Gateway(sessions, settings, engine, host_key)
    try:
        await gateway.start(host, port)
    except OSError as exc:
        logger.error(
            "SSH gateway off: cannot listen on %s:%d: %s "
            "(set [server] ssh_gateway_port; -1 turns the gateway off)",
            host,
            port,
            exc.strerror or exc,
        )
        return None
    logger.info(
        "SSH gateway on %s:%d, host key %s %s",
        host,
        gateway.port,
        host_key.get_algorithm(),
        gateway.fingerprint,
    )
    return gateway
