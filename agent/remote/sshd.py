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

This module imports asyncssh: import it only when a session opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import asyncssh

from agent.remote.outcome import Refusal, RefusalKind, SessionOutcome
from agent.remote.policy import SitePolicy
from agent.remote.shellrequest import HelperSession
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

#: Time a shell's output may take to drain after the shell exits.
OUTPUT_DRAIN_TIMEOUT_S: Final = 1.0
#: Time between SIGHUP and SIGKILL for processes left when a session ends.
KILL_GRACE_S: Final = 1.0

# Runs in the child between fork and exec: makes the PTY its controlling
# terminal (so Ctrl-C and job control work), then becomes the shell. A
# separate tiny interpreter avoids preexec_fn, which is unsafe with threads.
_LOGIN_TTY_SHIM: Final = "import os,sys;os.login_tty(0);os.execvp(sys.argv[1],sys.argv[1:])"


class UsedClientKeys:
    """Fingerprints of one-time client keys already used, kept until they expire.

    One ledger per agent process (:data:`USED_CLIENT_KEYS`) makes a key
    single-use across sessions: a replayed ``session.open`` naming a key
    that has already authenticated is refused.
    """

    def __init__(self) -> None:
        self._used: dict[str, datetime] = {}

    def is_used(self, fingerprint: str) -> bool:
        """Whether ``fingerprint`` has already authenticated a session."""
        self._prune()
        return fingerprint in self._used

    def claim(self, fingerprint: str, expires_at: datetime) -> bool:
        """Record a first use; ``False`` if the key was used before.

        Args:
            fingerprint: The key's SHA256 fingerprint.
            expires_at: When the key expires (the record can go then).

        Returns:
            ``True`` for the first use.
        """
        if self.is_used(fingerprint):
            return False
        self._used[fingerprint] = expires_at
        return True

    def _prune(self) -> None:
        now = utcnow()
        for fingerprint in [fp for fp, expiry in self._used.items() if expiry <= now]:
            del self._used[fingerprint]


#: The agent process's ledger of used one-time keys.
USED_CLIENT_KEYS: Final = UsedClientKeys()

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
        self._children: set[asyncio.subprocess.Process] = set()
        self._helper_sessions: set[HelperSession] = set()
        self._home = os.path.expanduser("~")

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
            process_factory=self._serve_process,
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
        await self._stop_children()
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

    # channels
    async def _serve_process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        if process.subsystem:
            self._refuse("channel", f"subsystem {process.subsystem}", "not offered")
            process.exit(1)
            return
        if not self.policy.allow_shell:
            # A session to a device this agent watches: its web page, nothing of this host.
            what = "exec" if process.command else "shell"
            self._refuse("channel", what, "a session to a watched device forwards only")
            text = "fieldlink: this session forwards to the device only\n"
            encoding, _errors = process.channel.get_encoding()
            stderr: Any = process.stderr  # text or bytes, as the channel's encoding says
            stderr.write(text if encoding else text.encode())
            process.exit(1)
            return
        try:
            if self.policy.shell_helper is not None:
                status = await self._run_with_helper(process, self.policy.shell_helper)
            elif process.get_terminal_type():
                status = await self._run_in_pty(process)
            else:
                status = await self._run_with_pipes(process)
        except OSError as exc:
            self._log.warning(
                "cannot start %s: %s", "shell" if not process.command else "exec", exc
            )
            process.stderr.write(f"fieldlink: cannot start the shell: {exc}\n".encode())
            status = 127
        process.exit(status)
        # Runs asyncssh's cleanup of the redirections (unawaited otherwise).
        with contextlib.suppress(asyncssh.Error, OSError):
            await process.wait_closed()

    def _shell(self) -> str:
        if self.policy.login_shell:
            return self.policy.login_shell
        try:
            return pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"
        except KeyError:
            return "/bin/sh"

    def _environment(self, term: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _PASSED_ENVIRONMENT}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["FIELDLINK_SESSION"] = self.session_id
        if term:
            env["TERM"] = term
        return env

    async def _start_with_helper(
        self, process: asyncssh.SSHServerProcess[bytes], helper: Path
    ) -> HelperSession:
        from agent.remote.shellrequest import ShellHelperError, ShellRequest, start_session

        term = process.get_terminal_type()
        cols, rows, _, _ = process.get_terminal_size()
        request = ShellRequest(
            session_id=self.session_id,
            command=process.command,
            pty=term is not None,
            term=term,
            cols=cols,
            rows=rows,
        )
        try:
            started = await start_session(helper, request)
        except ShellHelperError as exc:
            raise OSError(str(exc)) from exc
        self._helper_sessions.add(started)
        self._log.info(
            "%s started by the shell helper as %s (pid %d)",
            "shell" if process.command is None else "exec",
            self.policy.shell_user,
            started.pid,
        )
        return started

    async def _run_with_helper(
        self, process: asyncssh.SSHServerProcess[bytes], helper: Path
    ) -> int:
        # The shell runs as the maintenance account, outside the agent's sandbox: the
        # agent only relays the descriptors and cannot signal it (the PTY delivers
        # Ctrl-C and window changes; the helper ends the session's processes).
        started = await self._start_with_helper(process, helper)
        try:
            fds, started.fds = started.fds, []
            if len(fds) == 1:
                (master,) = fds
                await process.redirect(stdin=os.dup(master), stdout=master)
            else:
                stdin, stdout, stderr = fds
                await process.redirect(stdin=stdin, stdout=stdout, stderr=stderr, send_eof=False)
            status = await started.wait()
            with contextlib.suppress(TimeoutError, asyncssh.Error):
                await asyncio.wait_for(
                    asyncio.gather(process.stdout.drain(), process.stderr.drain()),
                    OUTPUT_DRAIN_TIMEOUT_S,
                )
        finally:
            # The channel is over: the helper ends whatever it left running.
            started.close()
            self._helper_sessions.discard(started)
        return status

    async def _run_in_pty(self, process: asyncssh.SSHServerProcess[bytes]) -> int:
        shell = self._shell()
        argv = [shell, "-l"] if process.command is None else [shell, "-c", process.command]
        master, slave = os.openpty()
        try:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-S",
                "-c",
                _LOGIN_TTY_SHIM,
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=self._environment(process.get_terminal_type()),
                cwd=self._home,
            )
        except OSError:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._children.add(child)
        process.set_redirect_pid(child.pid)
        # Two descriptors: asyncssh closes each pipe transport on its own.
        await process.redirect(stdin=os.dup(master), stdout=master)
        status = await child.wait()
        self._children.discard(child)
        with contextlib.suppress(TimeoutError, asyncssh.Error):
            await asyncio.wait_for(process.stdout.drain(), OUTPUT_DRAIN_TIMEOUT_S)
        return _exit_status(status)

    async def _run_with_pipes(self, process: asyncssh.SSHServerProcess[bytes]) -> int:
        shell = self._shell()
        argv = [shell] if process.command is None else [shell, "-c", process.command]
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._environment(None),
            cwd=self._home,
            start_new_session=True,
        )
        self._children.add(child)
        assert child.stdin is not None  # noqa: S101
        assert child.stdout is not None  # noqa: S101
        assert child.stderr is not None  # noqa: S101
        # No EOF after stdout ends: stderr may still have data (SSH forbids data after EOF).
        await process.redirect(
            stdin=child.stdin, stdout=child.stdout, stderr=child.stderr, send_eof=False
        )
        status = await child.wait()
        self._children.discard(child)
        with contextlib.suppress(TimeoutError, asyncssh.Error):
            await asyncio.wait_for(
                asyncio.gather(process.stdout.drain(), process.stderr.drain()),
                OUTPUT_DRAIN_TIMEOUT_S,
            )
        return _exit_status(status)

    async def _stop_children(self) -> None:
        # The helper ends each session's processes when its connection closes.
        for started in list(self._helper_sessions):
            started.close()
        self._helper_sessions.clear()
        children = [child for child in self._children if child.returncode is None]
        for sig in (signal.SIGHUP, signal.SIGKILL):
            for child in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, sig)
            if not children:
                return
            _, pending = await asyncio.wait(
                [asyncio.create_task(child.wait()) for child in children], timeout=KILL_GRACE_S
            )
            for task in pending:
                task.cancel()
            children = [child for child in children if child.returncode is None]

    def _make_sftp_server(self, channel: asyncssh.SSHServerChannel[bytes]) -> ConfinedSFTPServer:
        return ConfinedSFTPServer(channel, self.policy.sftp_folders, self._refuse)


_PASSED_ENVIRONMENT: Final = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ"}
)
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


class ConfinedSFTPServer(asyncssh.SFTPServer):
    """SFTP (and scp) confined to the site's folders.

    With one folder, the client's ``/`` is that folder. With several, ``/``
    lists their names and ``/<name>/...`` is inside each. Every path is
    resolved (symlinks included) and refused unless it stays inside a folder.
    """

    def __init__(
        self,
        channel: asyncssh.SSHServerChannel[bytes],
        folders: Mapping[str, Path],
        refuse: Callable[[RefusalKind, str, str], None],
    ) -> None:
        super().__init__(channel)
        self._refuse = refuse
        self._folders = {
            name.encode(): os.path.realpath(path).encode() for name, path in folders.items()
        }
        self._index: bytes | None = None
        if len(self._folders) > 1:
            # A private directory of links stands in for the virtual "/".
            self._index = os.path.realpath(tempfile.mkdtemp(prefix="fieldlink-sftp-")).encode()
            for name, real in self._folders.items():
                os.symlink(real, os.path.join(self._index, name))

    def _real_roots(self) -> list[bytes]:
        return list(self._folders.values())

    def map_path(self, path: bytes) -> bytes:
        """Map a client path to a real path inside the folders, or refuse it."""
        virtual = os.path.normpath(os.path.join(b"/", path))
        if self._index is None:
            (root,) = self._real_roots()
            local = os.path.join(root, virtual.lstrip(b"/"))
        elif virtual == b"/":
            return self._index
        else:
            name, _, rest = virtual.lstrip(b"/").partition(b"/")
            root = self._folders.get(name, b"")
            if not root:
                self._deny(path)
            local = os.path.join(root, rest)
        real = os.path.realpath(local)
        if not any(real == root or real.startswith(root + b"/") for root in self._real_roots()):
            self._deny(path)
        return real

    def reverse_map_path(self, path: bytes) -> bytes:
        """Map a real path back to what the client sees."""
        if self._index is not None and path == self._index:
            return b"/"
        for name, root in self._folders.items():
            if path == root or path.startswith(root + b"/"):
                prefix = b"" if self._index is None else b"/" + name
                return (prefix + path[len(root) :]) or b"/"
        msg = "File not found"
        raise asyncssh.SFTPNoSuchFile(msg)

    def rmdir(self, path: bytes) -> None:
        """Remove a directory, never one of the folders themselves."""
        if self.map_path(path) in self._real_roots():
            self._deny(path)
        super().rmdir(path)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        """Rename inside the folders, never one of the folders themselves."""
        if self.map_path(oldpath) in self._real_roots():
            self._deny(oldpath)
        super().rename(oldpath, newpath)

    def exit(self) -> None:
        """Remove the private index directory, if any."""
        if self._index is not None:
            shutil.rmtree(self._index, ignore_errors=True)
        super().exit()

    def _deny(self, path: bytes) -> None:
        self._refuse("sftp", path.decode(errors="replace"), "outside the confined folders")
        msg = "outside the confined folders"
        raise asyncssh.SFTPPermissionDenied(msg)


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


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
