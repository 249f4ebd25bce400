"""The agent's local control channel: the device's panel acts on remote sessions through it.

The running agent listens on a Unix socket, ``control.sock`` in its
``state_dir`` (made 0700; the socket itself 0600), and serves peers of its own
uid only (checked with ``SO_PEERCRED``). Each connection carries one request
and one answer, each a line of JSON::

    {"op": "sessions"}
    {"op": "approve" | "deny" | "end", "session_id": "ses-..."}
    {"op": "footprint"}

    {"ok": true, "sessions": [{"session_id", "operator", "reason", "state", "since"}]}
    {"ok": true, "session_id": "ses-...", "state": "approved" | "denied" | "closed" | "closing"}
    {"ok": true, "pid": 123, "session_processes": [456], "spare_process": 789 | null,
     "loaded": ["pydantic", ...]}
    {"ok": false, "error": "unknown_session" | "not_awaiting_consent" | "bad_request"
                           | "forbidden", "detail": "..."}

``fieldlink agent approve|deny|end SESSION`` and ``fieldlink agent sessions``
are the client side (:func:`request`). A path too long for ``sun_path`` (108
bytes) is reached through ``/proc/self/fd`` of its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from shared.errors import AuthError, Conflict, FieldlinkError, NotFound, UnavailableError

if TYPE_CHECKING:
    from agent.remote.sessions import SessionController

logger = logging.getLogger(__name__)

#: The socket's name in ``state_dir``.
CONTROL_SOCKET_NAME: Final = "control.sock"
#: A request is one short line.
MAX_REQUEST_BYTES: Final = 4096
#: How long a peer may take to send its request.
REQUEST_TIMEOUT_S: Final = 5.0
#: How long the client waits for the answer (an ``end`` waits for the session to close).
ANSWER_TIMEOUT_S: Final = 15.0
OPERATIONS: Final = ("sessions", "approve", "deny", "end", "footprint")
#: The libraries ``footprint`` says are loaded: the session stack and what comes with commands.
HEAVY_MODULES: Final = ("asyncssh", "websockets", "cryptography", "pydantic")
# Linux sun_path is 108 bytes including the terminating NUL.
_MAX_SUN_PATH: Final = 107
_UCRED: Final = struct.Struct("3i")


def control_socket_path(state_dir: Path) -> Path:
    """Where the agent with this ``state_dir`` listens."""
    return state_dir / CONTROL_SOCKET_NAME


class ControlError(FieldlinkError):
    """The control channel could not be set up (state directory, stale socket...)."""


@contextlib.contextmanager
def _addressable(path: Path) -> Iterator[str]:
    """A ``sun_path`` for ``path``: itself, or through ``/proc/self/fd`` when too long."""
    if len(os.fsencode(path)) <= _MAX_SUN_PATH:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    _pid, uid, _gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return int(uid)


def _private_directory(directory: Path) -> None:
    """Make sure ``directory`` exists, is ours and only ours (0700)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
        if info.st_uid != os.getuid():
            msg = f"{directory} belongs to uid {info.st_uid}, not to the agent's user"
            raise ControlError(msg)
        if stat.S_IMODE(info.st_mode) & 0o077:
            logger.info("making %s private (0700) for the control socket", directory)
            directory.chmod(0o700)
    except OSError as exc:
        msg = f"cannot prepare {directory} for the control socket: {exc.strerror or exc}"
        raise ControlError(msg) from exc


def _remove_stale(path: Path, address: str) -> None:
    """Remove a socket left by an agent that is gone; refuse if one still answers there."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        msg = f"{path} exists and is not a socket"
        raise ControlError(msg)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(address)
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    msg = f"another agent already listens on {path}"
    raise ControlError(msg)


class ControlServer:
    """The agent's side of the control channel, bound to its sessions.

    Args:
        path: The socket path (``state_dir/control.sock``).
        sessions: The sessions it acts on.
    """

    def __init__(self, path: Path, sessions: SessionController) -> None:
        self.path = path
        self.sessions = sessions
        self._server: asyncio.Server | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        """Listen on the socket.

        Raises:
            ControlError: The directory cannot be made private, or another agent
                listens there.
        """
        await asyncio.to_thread(_private_directory, self.path.parent)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _addressable(self.path) as address:
                await asyncio.to_thread(_remove_stale, self.path, address)
                sock.bind(address)
            # The directory is private already; the socket is too, for good measure.
            os.chmod(self.path, 0o600)
            self._inode = self.path.stat().st_ino
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            sock.close()
            msg = f"cannot listen on {self.path}: {exc.strerror or exc}"
            raise ControlError(msg) from exc
        except BaseException:
            sock.close()
            raise
        logger.info("control socket at %s", self.path)

    async def close(self) -> None:
        """Stop listening and remove the socket (if it is still ours)."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock)
            if uid != os.getuid():
                logger.warning("control socket: refused a peer of uid %d", uid)
                answer = _error("forbidden", "only the agent's own user may control it")
            else:
                answer = await self._answer(reader)
            writer.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except (OSError, ConnectionError) as exc:
            logger.debug("control socket: peer went away (%s)", exc)
        except Exception:
            logger.exception("control socket: unexpected error")
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
        except TimeoutError:
            return _error("bad_request", "no request within the time allowed")
        except (ValueError, asyncio.LimitOverrunError):
            return _error("bad_request", "request too long")
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return _error("bad_request", "a request is one line of JSON")
        if not isinstance(request, dict) or request.get("op") not in OPERATIONS:
            return _error("bad_request", f"op must be one of {', '.join(OPERATIONS)}")
        op = request["op"]
        if op == "sessions":
            return {"ok": True, "sessions": [s.describe() for s in self.sessions.sessions()]}
        if op == "footprint":
            return {
                "ok": True,
                "pid": os.getpid(),
                "session_processes": self.sessions.session_processes(),
                "spare_process": self.sessions.spare_process(),
                "loaded": sorted(name for name in HEAVY_MODULES if name in sys.modules),
            }
        session_id = request.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            return _error("bad_request", "session_id is required")
        try:
            if op == "approve":
                self.sessions.approve(session_id)
                state = "approved"
            elif op == "deny":
                self.sessions.deny(session_id)
                state = "denied"
            else:
                state = await self.sessions.end(session_id)
        except NotFound as exc:
            return _error("unknown_session", str(exc))
        except Conflict as exc:
            return _error("not_awaiting_consent", str(exc))
        logger.warning("session %s %s on the device", session_id, state)
        return {"ok": True, "session_id": session_id, "state": state}


def _error(error: str, detail: str) -> dict[str, Any]:
    return {"ok": False, "error": error, "detail": detail}


def request(
    path: Path, op: str, session_id: str | None = None, *, timeout_s: float = ANSWER_TIMEOUT_S
) -> dict[str, Any]:
    """Send one request to the running agent and return its (successful) answer.

    Args:
        path: The agent's control socket.
        op: ``sessions``, ``approve``, ``deny`` or ``end``.
        session_id: The session, for all but ``sessions``.
        timeout_s: How long to wait for the answer.

    Raises:
        UnavailableError: The agent is not running (no socket, nobody listening).
        AuthError: The socket refused us (another user).
        NotFound: The agent holds no such session.
        Conflict: The session is not awaiting consent (``approve``, ``deny``).
    """
    message: dict[str, Any] = {"op": op}
    if session_id is not None:
        message["session_id"] = session_id
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        with _addressable(path) as address:
            sock.connect(address)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        msg = f"the agent is not running (nothing listens on {path})"
        raise UnavailableError(msg) from exc
    except PermissionError as exc:
        msg = f"cannot reach the agent at {path}: permission denied (run as the agent's user)"
        raise AuthError(msg) from exc
    except TimeoutError as exc:
        msg = f"the agent did not answer within {timeout_s:g} s"
        raise UnavailableError(msg) from exc
    except OSError as exc:
        msg = f"cannot reach the agent at {path}: {exc.strerror or exc}"
        raise UnavailableError(msg) from exc
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict):
        msg = "the agent sent no answer"
        raise UnavailableError(msg)
    if answer.get("ok"):
        return answer
    error, detail = answer.get("error"), str(answer.get("detail") or answer.get("error"))
    if error == "unknown_session":
        raise NotFound(detail)
    if error == "not_awaiting_consent":
        raise Conflict(detail)
    if error == "forbidden":
        raise AuthError(detail)
    raise FieldlinkError(detail)
