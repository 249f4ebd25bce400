"""The privileged shell helper: privilege separation for remote maintenance shells.

The agent runs as an unprivileged, sandboxed service account (no sudo, no view
of other users' processes, 128 MiB and 64 tasks). A maintenance shell must not
inherit any of that, yet the agent must stay unprivileged. As OpenSSH splits
its monitor from the network-facing child, this small root process does the
one privileged thing and nothing else: start a login session for the site's
maintenance account (``[agent.policy] shell_user``) and hand the terminal back.

Protocol, over a Unix stream socket (``/run/fieldlink-agent-shell.sock``):

1. The helper checks the caller by ``SO_PEERCRED``: only the agent's uid.
2. The agent sends one JSON line (at most :data:`MAX_REQUEST_BYTES`):
   ``{"v": 1, "session_id", "command": null | str, "pty": bool, "term", "cols", "rows"}``.
   Nothing else is taken from the agent: not the account, not the program,
   not the environment (only ``TERM``, checked).
3. The helper answers ``{"ok": true, "pid": N}`` with the descriptors of the
   session in the same message (``SCM_RIGHTS``): the PTY master, or the
   stdin, stdout and stderr pipes; or ``{"ok": false, "error": "..."}``.
4. When the shell exits, ``{"exit": STATUS}`` (128+N for a signal N).
5. When the connection closes (the session ended, or the agent died, even by
   ``kill -9``), every process the session started is ended: SIGTERM, then
   SIGKILL after :data:`KILL_GRACE_S`. Each connection has its own monitor
   process, a child subreaper, so processes that left the session with
   ``setsid`` or a double fork are found and ended too; under systemd
   (``--session-cgroups``, ``Delegate=yes``) each session also has its own
   cgroup, ended whole with ``cgroup.kill``.

Every start, refusal and end is logged (the journal under the shipped unit).
The account and root's configuration are :mod:`agent.remote.shellaccount`; how a
session's processes and cgroup are ended, :mod:`agent.remote.shellreaper`.
The module uses the standard library only. The agent never imports it: its side
is :mod:`agent.remote.shellrequest`, loaded when a session opens a shell.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import select
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from agent.remote.shellaccount import ShellAccount, check_config_file, read_policy
from agent.remote.shellreaper import (
    SessionCgroups,
    descendants,
    reap_children,
    set_child_subreaper,
)
from agent.remote.shellrequest import MAX_REQUEST_BYTES, ShellHelperError, ShellRequest
from shared.errors import ConfigError

logger = logging.getLogger(__name__)

#: The agent's configuration, root's (``[agent.policy] shell_user``, ``shell``).
DEFAULT_CONFIG: Final = Path("/etc/fieldlink/agent.toml")
#: Where the shipped socket unit listens.
DEFAULT_SOCKET: Final = Path("/run/fieldlink-agent-shell.sock")
#: Time the agent has to send its request once connected.
REQUEST_TIMEOUT_S: Final = 5.0
#: Shells (one per channel) the helper runs at once.
MAX_SHELLS: Final = 64
#: Time between SIGTERM and SIGKILL when a session ends.
KILL_GRACE_S: Final = 1.0
#: The environment of a maintenance shell starts from this PATH (OpenSSH's idea:
#: the account's shell profile may change it).
SHELL_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class ShellHelper:
    """The privileged helper: accept, check the caller, start a session, watch it."""

    def __init__(
        self,
        listener: socket.socket,
        *,
        agent_uid: int,
        account: ShellAccount,
        login_shell: str | None = None,
        cgroups: SessionCgroups | None = None,
        max_shells: int = MAX_SHELLS,
    ) -> None:
        """Serve on ``listener`` for the agent running as ``agent_uid``.

        Args:
            listener: A listening Unix stream socket.
            agent_uid: The only uid whose requests are served.
            account: The maintenance account shells run as.
            login_shell: ``[agent.policy] shell``; default: the account's shell.
            cgroups: Put each session in a cgroup of its own (under systemd).
            max_shells: Shells running at once; more are refused.
        """
        self._listener = listener
        self._agent_uid = agent_uid
        self._account = account
        self._shell = login_shell or account.shell
        self._cgroups = cgroups
        self._cgroup: Path | None = None
        self._monitors: set[int] = set()
        self._max_shells = max_shells

    def serve_forever(self) -> None:
        """Accept connections until SIGTERM; one monitor process per connection.

        A caller other than the agent is refused here, before anything is forked,
        and at most ``max_shells`` shells run at once: a compromised agent
        cannot make the helper fork without limit.
        """
        signal.signal(signal.SIGCHLD, lambda *_: self._reap_monitors())
        logger.info(
            "shell helper ready: shells run as %s (uid %d) for the agent's uid %d",
            self._account.name,
            self._account.uid,
            self._agent_uid,
        )
        while True:
            conn, _ = self._listener.accept()
            if not self._admit(conn):
                continue
            try:
                pid = os.fork()
            except OSError:
                logger.exception("cannot fork a session monitor")
                _answer(conn, {"ok": False, "error": "the helper cannot start a session"})
                continue
            if pid == 0:  # the monitor of this connection
                status = 1
                try:
                    self._listener.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    status = self.monitor(conn)
                except SystemExit:  # SIGTERM: the session was ended in monitor()
                    status = 0
                except BaseException:
                    logger.exception("session monitor failed")
                finally:
                    os._exit(status)
            self._monitors.add(pid)
            conn.close()

    def _admit(self, conn: socket.socket) -> bool:
        caller_pid, caller_uid, _ = peer_credentials(conn)
        if caller_uid != self._agent_uid:
            logger.warning(
                "shell refused: caller uid %d (pid %d) is not the agent's uid %d",
                caller_uid,
                caller_pid,
                self._agent_uid,
            )
            _answer(conn, {"ok": False, "error": "not the agent's account"})
            return False
        self._reap_monitors()
        if len(self._monitors) >= self._max_shells:
            logger.warning(
                "shell refused for agent pid %d: %d shells already", caller_pid, self._max_shells
            )
            _answer(conn, {"ok": False, "error": "too many shells at once"})
            return False
        return True

    def _reap_monitors(self) -> None:
        for pid in list(self._monitors):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            self._monitors.discard(pid)

    def monitor(self, conn: socket.socket) -> int:
        """Serve one connection: read, start, watch, end. Returns an exit status."""
        caller_pid, _, _ = peer_credentials(conn)
        try:
            request = ShellRequest.decode(_read_line(conn))
        except ShellHelperError as exc:
            logger.warning("shell refused for agent pid %d: %s", caller_pid, exc)
            _answer(conn, {"ok": False, "error": str(exc)})
            return 1
        # Orphans of the session (setsid, double fork) become ours, so they can be ended.
        set_child_subreaper()
        try:
            if self._cgroups is not None:
                self._cgroup = self._cgroups.create(f"session-{os.getpid()}")
            pid, theirs, ours = self._spawn(request)
        except OSError as exc:
            logger.warning("session %s: cannot start a shell: %s", request.session_id, exc)
            if self._cgroup is not None:
                SessionCgroups.end(self._cgroup)
            _answer(conn, {"ok": False, "error": f"cannot start the shell: {exc.strerror}"})
            return 1
        what = "shell" if request.command is None else f"exec {request.command!r}"
        logger.info(
            "session %s: %s started as %s (uid %d), pid %d, %s, for agent pid %d",
            request.session_id,
            what,
            self._account.name,
            self._account.uid,
            pid,
            "pty" if request.pty else "pipes",
            caller_pid,
        )
        try:
            for fd in theirs:
                os.close(fd)
            socket.send_fds(conn, [_line({"ok": True, "pid": pid})], ours)
        except OSError:
            logger.warning("session %s: the agent left before the answer", request.session_id)
        finally:
            for fd in ours:
                os.close(fd)
        status: int | None = None
        try:
            status = self._watch(conn, pid)
        finally:  # a SIGTERM of the helper ends the session too
            self._end_session(request.session_id)
            if self._cgroup is not None:
                SessionCgroups.end(self._cgroup)
            logger.info("session %s: ended (shell status %s)", request.session_id, status)
        return 0

    def _spawn(self, request: ShellRequest) -> tuple[int, list[int], list[int]]:
        """Fork the session's leader; ``(pid, child's fds, agent's fds)``."""
        if request.pty:
            master, slave = os.openpty()
            if request.cols and request.rows:
                size = struct.pack("HHHH", request.rows, request.cols, 0, 0)
                fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
            child_fds, agent_fds = [slave], [master]
        else:
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            child_fds, agent_fds = [in_r, out_w, err_w], [in_w, out_r, err_r]
        env = {
            "HOME": self._account.home,
            "SHELL": self._shell,
            "USER": self._account.name,
            "LOGNAME": self._account.name,
            "PATH": SHELL_PATH,
            "FIELDLINK_SESSION": request.session_id,
        }
        for name in ("LANG", "TZ"):
            if name in os.environ:
                env[name] = os.environ[name]
        if request.term:
            env["TERM"] = request.term
        if request.command is None:
            argv = ["-" + os.path.basename(self._shell)]  # a login shell, as login(1) runs it
        else:
            argv = [os.path.basename(self._shell), "-c", request.command]
        pid = os.fork()
        if pid == 0:
            try:
                self._become_session(request.pty, child_fds, agent_fds)
                os.execve(self._shell, argv, env)  # noqa: S606 - the account's shell, no sh -c
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.write(2, f"fieldlink: cannot start the shell: {exc}\n".encode())
            os._exit(127)
        return pid, child_fds, agent_fds

    def _become_session(self, pty: bool, child_fds: list[int], agent_fds: list[int]) -> None:
        """In the forked child: its cgroup, a new session, the terminal, the account, its home."""
        if self._cgroup is not None:
            (self._cgroup / "cgroup.procs").write_text("0")  # while still root
        for fd in agent_fds:
            os.close(fd)
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if pty:
            (slave,) = child_fds
            os.login_tty(slave)  # setsid, controlling terminal, stdio
        else:
            os.setsid()
            for target, fd in enumerate(child_fds):
                os.dup2(fd, target)
            for fd in child_fds:
                if fd > 2:
                    os.close(fd)
        os.closerange(3, _max_fd())
        os.umask(0o022)  # login(1)'s default, not the helper's
        account = self._account
        os.initgroups(account.name, account.gid)
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
        # OpenSSH's permanently_set_uid: make sure root cannot be regained.
        if os.getuid() != account.uid or os.geteuid() != account.uid:
            msg = "could not drop to the shell account"
            raise OSError(msg)
        with contextlib.suppress(PermissionError):
            os.setuid(0)
            msg = "root could be regained after dropping privileges"
            raise OSError(msg)
        try:
            os.chdir(account.home)
        except OSError:
            os.chdir("/")

    def _watch(self, conn: socket.socket, pid: int) -> int | None:
        """Forward the shell's exit status; return when the agent closes the connection."""
        status: int | None = None
        pidfd = os.pidfd_open(pid)
        try:
            watched: list[Any] = [conn, pidfd]
            while True:
                ready, _, _ = select.select(watched, [], [])
                if pidfd in ready:
                    _, raw = os.waitpid(pid, 0)
                    code = os.waitstatus_to_exitcode(raw)
                    status = 128 - code if code < 0 else code
                    watched.remove(pidfd)
                    with contextlib.suppress(OSError):
                        conn.sendall(_line({"exit": status}))
                if conn in ready:
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        data = b""
                    if not data:  # the session ended, or the agent died
                        return status
        finally:
            os.close(pidfd)
            conn.close()

    def _end_session(self, session_id: str) -> None:
        """SIGTERM, then SIGKILL, every process left of the session; reap them."""
        for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
            remaining = descendants(os.getpid())
            if not remaining:
                return
            logger.info(
                "session %s: sending %s to %d process(es) left",
                session_id,
                signal.Signals(sig).name,
                len(remaining),
            )
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                reap_children()
                if not descendants(os.getpid()):
                    return
                time.sleep(0.05)
        logger.warning("session %s: processes survived SIGKILL", session_id)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 1024


def _line(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _answer(conn: socket.socket, body: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(_line(body))
    conn.close()


def _read_line(conn: socket.socket) -> bytes:
    conn.settimeout(REQUEST_TIMEOUT_S)
    data = b""
    try:
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST_BYTES:
                msg = "request too large"
                raise ShellHelperError(msg)
    except TimeoutError:
        msg = "no request in time"
        raise ShellHelperError(msg) from None
    finally:
        conn.settimeout(None)
    if b"\n" not in data:
        msg = "incomplete request"
        raise ShellHelperError(msg)
    return data.partition(b"\n")[0]


def _listener(socket_path: Path | None, agent_gid: int) -> socket.socket:
    """The socket systemd passed (socket activation), else one bound at ``socket_path``."""
    if socket_path is None and os.environ.get("LISTEN_PID") == str(os.getpid()):
        if int(os.environ.get("LISTEN_FDS", "0")) >= 1:
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)
            return socket.socket(fileno=3)
    path = socket_path or DEFAULT_SOCKET
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    # Only root and the agent's group may connect; SO_PEERCRED still checks the uid.
    os.chown(path, 0, agent_gid)
    path.chmod(0o660)
    listener.listen(16)
    return listener


@contextlib.contextmanager
def _logging_to_stderr() -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)


def run_helper(
    config: Path | None,
    *,
    agent_user: str,
    socket_path: Path | None,
    session_cgroups: bool = False,
    max_shells: int = MAX_SHELLS,
) -> None:
    """Run the helper until it is stopped: ``fieldlink agent shell-helper``.

    Args:
        config: The agent's ``agent.toml`` (root's): ``[agent.policy] shell_user``
            and ``shell``.
        agent_user: The agent's service account, the only one served.
        socket_path: Where to listen when systemd passes no socket.
        session_cgroups: One cgroup per session under the helper's own
            (needs ``Delegate=yes``), see :class:`SessionCgroups`.
        max_shells: Shells running at once (one per channel); more are refused.

    Raises:
        ConfigError: not root, an unsafe configuration file, or unknown accounts.
    """
    if os.geteuid() != 0:
        msg = "the shell helper must run as root (it starts shells as another account)"
        raise ConfigError(msg)
    path = config or DEFAULT_CONFIG
    check_config_file(path)
    # Only root's file chooses the account: not the environment, not the agent.
    policy = read_policy(path)
    try:
        agent = pwd.getpwnam(agent_user)
    except KeyError:
        msg = f"--agent-user: no account {agent_user!r}"
        raise ConfigError(msg) from None
    if agent.pw_uid == 0:
        msg = "--agent-user must not be root: the agent runs unprivileged"
        raise ConfigError(msg)
    account = ShellAccount.lookup(policy.shell_user)
    cgroups = SessionCgroups.delegated() if session_cgroups else None
    listener = _listener(socket_path, agent.pw_gid)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _logging_to_stderr():
        ShellHelper(
            listener,
            agent_uid=agent.pw_uid,
            account=account,
            login_shell=policy.login_shell,
            cgroups=cgroups,
            max_shells=max_shells,
        ).serve_forever()
