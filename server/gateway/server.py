"""The SSH gateway: native OpenSSH clients reach devices through audited sessions.

``ssh -p 2222 DEVICE@server`` (a shell), ``ssh ... DEVICE@server CMD`` (a
command), ``scp``/``sftp`` (the device's confined folders) and
``ssh -L 8080:web:80 ...`` (an allowlisted service) all work: the SSH user
name is the device id, and the operator authenticates with a public key
registered for them (:mod:`server.gateway.keys`).

Each SSH connection is one remote session (origin ``gateway``), opened by
:class:`~server.sessions.service.SessionService` when the first channel
asks for something, with the reason the client sent in ``FIELDLINK_REASON``
(``SetEnv``/``SendEnv``; ``ssh gateway`` otherwise) and optionally an
incident in ``FIELDLINK_INCIDENT``. While the session is set up (the site
may have to approve it) the client waits, and is told so. Every channel is
joined to a twin channel on the server's SSH connection to the agent; the
agent enforces its own policy (folders, allowlist), and its refusals reach
the client as SSH refusals with the reason. Shells in a PTY are recorded.
When the client disconnects, the session is closed (``operator``); when the
session ends on the device's side (idle, maximum duration, the site ended
it), the client is told why and disconnected.

This module is the listener (:class:`Gateway`); one client's connection is
:mod:`server.gateway.connection`, its channels :mod:`server.gateway.channels`.

Not offered: passwords, remote (``-R``) forwards, agent and X11
forwarding, subsystems other than ``sftp``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import asyncssh
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.config import ServerSettings
from server.gateway.connection import GatewayConnection
from server.gateway.hostkey import load_or_create_host_key
from shared.errors import FieldlinkError

if TYPE_CHECKING:
    from server.sessions.service import SessionService

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: AES-GCM only: OpenSSH clients prefer chacha20 and then AES-CTR with a MAC when
#: offered, both markedly slower in asyncssh than AES-GCM (AES-NI, one pass).
CIPHERS: Final = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


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
        sessions: SessionService,
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
        self._connections: set[GatewayConnection] = set()
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
            partial(GatewayConnection, self),
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
        """Run ``function(db, *args, **kwargs)`` on a database session in a thread."""

        def work() -> T:
            with Session(self.engine, expire_on_commit=False) as db:
                return function(db, *args, **kwargs)

        return await asyncio.to_thread(work)


async def start_gateway(
    sessions: SessionService, settings: ServerSettings, engine: Engine
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
