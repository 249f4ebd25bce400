"""The shell and exec channels of a remote session: the processes it starts, and their end.

:class:`ShellChannels` is the process factory of :class:`agent.remote.sshd.AgentSession`'s
SSH server. A channel runs the login shell (``policy.login_shell``, else the
agent user's) in a PTY when the client asked for one, else on pipes; with
``policy.shell_helper`` the privileged helper of :mod:`agent.remote.shellhelper`
starts the maintenance account's shell instead (:mod:`agent.remote.shellrequest`).
Subsystems are refused. When the session ends, :meth:`ShellChannels.stop` hangs
up the processes it started and kills them after :data:`KILL_GRACE_S`.

This module imports asyncssh: import it only when a session opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import asyncssh

from agent.remote.outcome import RefusalKind
from agent.remote.policy import SitePolicy
from agent.remote.shellrequest import HelperSession

#: Time a shell's output may take to drain after the shell exits.
OUTPUT_DRAIN_TIMEOUT_S: Final = 1.0
#: Time between SIGHUP and SIGKILL for processes left when a session ends.
KILL_GRACE_S: Final = 1.0

# Runs in the child between fork and exec: makes the PTY its controlling
# terminal (so Ctrl-C and job control work), then becomes the shell. A
# separate tiny interpreter avoids preexec_fn, which is unsafe with threads.
_LOGIN_TTY_SHIM: Final = "import os,sys;os.login_tty(0);os.execvp(sys.argv[1],sys.argv[1:])"

_PASSED_ENVIRONMENT: Final = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TZ"}
)


class ShellChannels:
    """The shell and exec channels of one session, and the processes they started.

    Args:
        session_id: The session (in the shell's ``FIELDLINK_SESSION`` and the logs).
        policy: The site policy the session runs under.
        refuse: Reports a refusal (kind, target, reason).
        log: The session's logger.
    """

    def __init__(
        self,
        session_id: str,
        policy: SitePolicy,
        refuse: Callable[[RefusalKind, str, str], None],
        log: logging.LoggerAdapter[Any],
    ) -> None:
        self.session_id = session_id
        self.policy = policy
        self._refuse = refuse
        self._log = log
        self._children: set[asyncio.subprocess.Process] = set()
        self._helper_sessions: set[HelperSession] = set()
        self._home = os.path.expanduser("~")

    async def serve(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        """Serve one shell or exec channel until its process exits (asyncssh's process factory)."""
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

    async def stop(self) -> None:
        """Hang up, then kill, what the session started (the session is over)."""
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


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode
