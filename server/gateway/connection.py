"""One operator's SSH connection at the gateway: its login, its remote session, its channels.

The SSH user name is the device id; the operator authenticates with a public
key registered for them (:mod:`server.gateway.keys`). The connection is one
remote session (origin ``gateway``), opened when the first channel asks for
something, with the reason the client sent in ``FIELDLINK_REASON``
(``SetEnv``/``SendEnv``; ``ssh gateway`` otherwise) and optionally an
incident in ``FIELDLINK_INCIDENT``. When the client disconnects, the session
is closed (``operator``); when the session ends on the device's side, the
client is told why and disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import asyncssh

from server.gateway.channels import (
    DeviceTCPSession,
    GatewayRefusal,
    OperatorSession,
    OperatorTCPSession,
    ended_text,
)
from server.gateway.keys import KeyOwner, key_owner, record_login, record_refused_login
from server.sessions import repository
from server.sessions.service import is_service_name
from shared.errors import FieldlinkError, InvalidDeviceId
from shared.ids import check_device_id

if TYPE_CHECKING:
    from server.gateway.server import Gateway
    from server.sessions.client import AgentConnection
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


class GatewayConnection(asyncssh.SSHServer):
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
        self._channels: set[OperatorSession] = set()
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
        channel = OperatorSession(self)
        self._channels.add(channel)
        return channel

    def forget(self, channel: OperatorSession) -> None:
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
        service_port = 0 if is_service_name(host) else port
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
        row = await self._gateway.db(repository.find_session, session_id)
        if row is None or row.state != "closed":
            return f"session {session_id} did not start: {exc}"
        text = f"session {session_id} {ended_text(row.close_reason or 'error')}"
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
        self.disconnect(f"the session {ended_text(reason)}")

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
        await self._gateway.sessions.audit(
            self.session_id,
            actor=owner.username,
            action="session.exec",
            details={"command": command[:1024], "origin": "gateway"},
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
