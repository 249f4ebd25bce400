"""Shells to type into for :mod:`bench.sessions`: one interface over three ways in.

The browser-terminal socket (:class:`TerminalShell`), an ``ssh -tt`` client through the
SSH gateway or the OpenSSH tunnel (:class:`ProcessShell`) and a login shell in a local PTY
(:class:`LocalPtyShell`, the floor); :func:`keystrokes` times one byte's echo through any
of them, and :func:`click_to_shell` opens a session to a ready prompt.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sessions_setup import Bench

# A ready prompt: bash's "user@host:dir# " (after its bracketed-paste switch), or "$ ".
PROMPT = re.compile(rb"[#$] (\x1b\[\?2004h)?$")
COLS, ROWS = 120, 40


# -- shells: one interface over the terminal socket, an ssh client and a local PTY ---------


class Shell(abc.ABC):
    """An interactive shell to type into: ``send`` bytes, ``read`` what comes back."""

    @abc.abstractmethod
    async def send(self, data: bytes) -> None:
        """Type ``data``."""

    @abc.abstractmethod
    async def read(self) -> bytes:
        """The next bytes the shell showed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the shell."""

    async def until_prompt(self, timeout_s: float = 30.0) -> bytes:
        output = b""
        async with asyncio.timeout(timeout_s):
            while not PROMPT.search(output):
                output += await self.read()
        return output

    async def drain(self, quiet_s: float = 0.1) -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                await asyncio.wait_for(self.read(), quiet_s)


class TerminalShell(Shell):
    """``WS /api/v1/sessions/{id}/terminal``, as the console's xterm.js uses it."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.controls: list[dict[str, Any]] = []

    async def send(self, data: bytes) -> None:
        await self.socket.send(data)

    async def read(self) -> bytes:
        while True:
            message = await self.socket.recv()
            if isinstance(message, bytes):
                return message
            control = json.loads(message)
            self.controls.append(control)
            if control.get("state") == "closed":
                msg = f"session closed: {control}"
                raise RuntimeError(msg)
            if control.get("state") == "active":
                return b""

    async def close(self) -> None:
        await self.socket.close()


class ProcessShell(Shell):
    """An ``ssh -tt`` client (OpenSSH tunnel or the gateway) driven through pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def read(self) -> bytes:
        assert self.process.stdout is not None
        data = await self.process.stdout.read(65536)
        if not data:
            msg = "the ssh client ended"
            raise RuntimeError(msg)
        return data

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
        await self.process.wait()


_LOGIN_TTY_SHIM = "import os,sys;os.login_tty(0);os.execvp(sys.argv[1],sys.argv[1:])"


class LocalPtyShell(Shell):
    """The same login shell in a PTY on this machine: the floor of any keystroke round trip."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.master = -1
        self.child: asyncio.subprocess.Process | None = None
        self.reader = asyncio.StreamReader()

    async def start(self) -> None:
        import fcntl
        import struct
        import termios

        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        shell = os.environ.get("SHELL") or "/bin/bash"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "TERM": "xterm-256color", "USER": os.environ.get("USER", "root")}  # fmt: skip
        self.child = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", _LOGIN_TTY_SHIM, shell, "-l",
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=self.home,
        )  # fmt: skip
        os.close(slave)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self.reader),
            os.fdopen(os.dup(self.master), "rb", 0),
        )

    async def send(self, data: bytes) -> None:
        os.write(self.master, data)

    async def read(self) -> bytes:
        data = await self.reader.read(65536)
        if not data:
            msg = "the local shell ended"
            raise RuntimeError(msg)
        return data

    async def close(self) -> None:
        if self.child is not None and self.child.returncode is None:
            self.child.send_signal(signal.SIGHUP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.child.wait(), 5)
            if self.child.returncode is None:
                self.child.kill()
                await self.child.wait()
        os.close(self.master)


async def terminal(bench: Bench, session_id: str) -> TerminalShell:
    """The session's terminal socket, as the console opens it."""
    from websockets.asyncio.client import connect

    socket = await connect(
        bench.ws_url(f"/sessions/{session_id}/terminal?cols={COLS}&rows={ROWS}"),
        additional_headers=bench.headers,
        open_timeout=60,
    )
    return TerminalShell(socket)


async def ssh_shell(command: list[str]) -> ProcessShell:
    """An ``ssh -tt`` ``command`` started, its PTY driven through pipes."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return ProcessShell(process)


async def keystrokes(shell: Shell, count: int) -> list[float]:
    """Type ``x`` ``count`` times, each after the last one's echo; the round trips (s)."""
    await shell.drain(0.3)
    rtts: list[float] = []
    for index in range(count):
        if index and index % 40 == 0:
            await shell.send(b"\x15")  # Ctrl-U: an empty line again
            await shell.drain(0.1)
        started = time.perf_counter()
        await shell.send(b"x")
        echoed = b""
        while b"x" not in echoed:
            echoed += await shell.read()
        rtts.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)  # a fast typist, not a flood
    await shell.send(b"\x15")
    return rtts


# -- click to shell ---------------------------------------------------------------------


@dataclass
class Click:
    """One click to shell, on the bench's wall clock (time.time())."""

    session_id: str
    clicked: float
    answered: float
    active: float = 0.0
    prompt: float = 0.0


async def click_to_shell(bench: Bench, device_id: str) -> tuple[Click, TerminalShell]:
    """A session opened on ``device_id`` and its terminal read to a ready prompt, timed."""
    clicked = time.time()
    session_id = await bench.open_session(device_id, "bench: click to shell")
    click = Click(session_id, clicked, time.time())
    shell = await terminal(bench, session_id)
    output = b""
    while not PROMPT.search(output):
        data = await shell.read()
        if not data and not click.active:
            click.active = time.time()  # the "active" state frame: the shell channel is open
        output += data
    click.prompt = time.time()
    return click, shell
