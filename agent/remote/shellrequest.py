"""What the agent asks of the privileged shell helper, and the agent's side of it.

The request (:class:`ShellRequest`) is all the agent may say: one shell or one
command, a terminal or not, its type and size. :func:`start_session` sends it
over the helper's Unix socket and receives the session's descriptors
(``SCM_RIGHTS``); the returned :class:`HelperSession` yields the shell's exit
status, and closing it ends every process of the session. The helper itself is
:mod:`agent.remote.shellhelper`. Standard library only: imported when a shell opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shared.errors import FieldlinkError

#: The largest request line.
MAX_REQUEST_BYTES: Final = 16 * 1024
_TERM: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_COMMAND: Final = 8 * 1024


class ShellHelperError(FieldlinkError):
    """The helper refused a request, or cannot be reached."""


@dataclass(frozen=True, slots=True)
class ShellRequest:
    """What the agent may ask of the helper: one shell or one command, and a terminal.

    Attributes:
        session_id: The remote session (for the audit trail).
        command: ``None`` for an interactive shell, else the command (``shell -c``).
        pty: Whether to give it a terminal.
        term: ``TERM`` (with a terminal).
        cols: Terminal width.
        rows: Terminal height.
    """

    session_id: str
    command: str | None = None
    pty: bool = False
    term: str | None = None
    cols: int = 80
    rows: int = 24

    def encode(self) -> bytes:
        """The request line sent to the helper."""
        body = {
            "v": 1,
            "session_id": self.session_id,
            "command": self.command,
            "pty": self.pty,
            "term": self.term,
            "cols": self.cols,
            "rows": self.rows,
        }
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> ShellRequest:
        """Parse and check a request line; raise :class:`ShellHelperError` on anything odd."""
        try:
            body = json.loads(line)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("v") != 1:
            msg = "malformed request"
            raise ShellHelperError(msg)
        unknown = set(body) - {"v", "session_id", "command", "pty", "term", "cols", "rows"}
        if unknown:
            msg = f"unknown request fields {sorted(unknown)}"
            raise ShellHelperError(msg)
        session_id, command = body.get("session_id"), body.get("command")
        pty = body.get("pty", False)
        term, cols, rows = body.get("term"), body.get("cols", 80), body.get("rows", 24)
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            msg = "bad session_id"
            raise ShellHelperError(msg)
        if command is not None and (
            not isinstance(command, str) or len(command) > _MAX_COMMAND or "\0" in command
        ):
            msg = "bad command"
            raise ShellHelperError(msg)
        if not isinstance(pty, bool):
            msg = "bad pty"
            raise ShellHelperError(msg)
        if term is not None and (not isinstance(term, str) or not _TERM.fullmatch(term)):
            msg = "bad term"
            raise ShellHelperError(msg)
        for value in (cols, rows):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
                msg = "bad terminal size"
                raise ShellHelperError(msg)
        return cls(session_id, command, pty, term if pty else None, cols, rows)


# the agent's side ------------------------------------------------------------------------


class HelperSession:
    """A shell the helper started: its descriptors, its exit status, its end.

    Closing it (:meth:`close`) ends every process of the session: the helper
    watches the connection.
    """

    def __init__(self, sock: socket.socket, pid: int, fds: list[int]) -> None:
        self._sock = sock
        self.pid = pid
        self.fds = fds
        self._buffer = b""
        self.returncode: int | None = None

    async def wait(self) -> int:
        """The shell's exit status (255 if the helper went away without one)."""
        loop = asyncio.get_running_loop()
        while self.returncode is None:
            line, sep, rest = self._buffer.partition(b"\n")
            if sep:
                self._buffer = rest
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    status = json.loads(line).get("exit")
                    if isinstance(status, int):
                        self.returncode = status
                continue
            try:
                data = await loop.sock_recv(self._sock, 4096)
            except OSError:
                data = b""
            if not data:
                self.returncode = 255
            self._buffer += data
        return self.returncode

    def close(self) -> None:
        """End the session's processes (the helper sees the connection close)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []
        self._sock.close()


def _start_blocking(path: Path, request: ShellRequest, timeout_s: float) -> HelperSession:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except OSError as exc:
            msg = f"cannot reach the shell helper at {path}: {exc.strerror or exc}"
            raise ShellHelperError(msg) from None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # A refused caller is answered before it sends: the answer is still there.
            sock.sendall(request.encode())
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST_BYTES, 3)
        try:
            answer: Any = json.loads(data.partition(b"\n")[0])
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            for fd in fds:
                os.close(fd)
            reason = answer.get("error") if isinstance(answer, dict) else "no answer"
            msg = f"the shell helper refused: {reason}"
            raise ShellHelperError(msg)
        expected = 1 if request.pty else 3
        if len(fds) != expected or not isinstance(answer.get("pid"), int):
            for fd in fds:
                os.close(fd)
            msg = "the shell helper answered without the session's descriptors"
            raise ShellHelperError(msg)
        session = HelperSession(sock, int(answer["pid"]), list(fds))
        # What came after the answer's line (an exit status) stays for wait().
        session._buffer = data.partition(b"\n")[2]
        sock.setblocking(False)
        return session
    except BaseException:
        sock.close()
        raise


async def start_session(
    path: Path, request: ShellRequest, timeout_s: float = 10.0
) -> HelperSession:
    """Ask the helper at ``path`` for a shell.

    Returns:
        The started session: ``fds`` is ``[pty_master]`` with a terminal, else
        ``[stdin, stdout, stderr]`` (the agent's ends of the pipes).

    Raises:
        ShellHelperError: the helper cannot be reached or refused (its reason).
    """
    try:
        return await asyncio.to_thread(_start_blocking, path, request, timeout_s)
    except (OSError, TimeoutError) as exc:
        msg = f"the shell helper at {path} failed: {exc}"
        raise ShellHelperError(msg) from exc
