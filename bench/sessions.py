"""Remote sessions end to end: click to shell, keystrokes, throughput, 100 sessions at once.

Everything as production runs it, on loopback: ``fieldlink server run`` (SQLite,
the device CA, signed commands) with a TLS Mosquitto, real enrolled agents
(``fieldlink agent run``), and the operator's side through the public API
only, as the console and the CLI use it. The OpenSSH baseline is an ``ssh -R``
reverse tunnel to a private sshd (:mod:`bench._openssh`), measured in the
same run to the same targets.

- Click to shell: from ``POST /api/v1/devices/{id}/sessions`` to a ready
  shell prompt on ``WS /api/v1/sessions/{id}/terminal``, p50/p95 over
  ``--sessions`` sessions opened one after another; with the pieces (API
  answer, ``session.open`` on the agent, the agent's tunnel dialed, SSH
  ready on the server, shell channel open, prompt) from the bench's clock
  and the two processes' logs.
- Keystroke round trip: one byte typed into a shell until its echo comes
  back, through the browser-terminal socket, through the SSH gateway
  (``ssh -p PORT DEVICE@server``, when the server has it) and through
  ``ssh -tt`` over the OpenSSH tunnel; a shell in a local PTY gives the
  floor (what no tunnel can take away).
- Throughput: a length-prefixed push to a byte sink behind the agent's
  ``sink`` service, and a pull from it, through the forward socket (the
  bench's own WebSocket client), through ``fieldlink connect`` and through
  ``scp`` via the gateway, each as a ratio to the OpenSSH tunnel (``scp``
  with the private sshd through it for the scp rows); median of 3, with the
  CPU seconds per GiB of every process on the path.
- 100 sessions open together on one server (spread over a few agents, at
  most ``--open-at-once`` being opened at a time): each with a terminal at a
  prompt, then a command in every one; the memory each process gained per
  session against as many OpenSSH logins, and how many failed.

Every shell gets a home with Debian's default profile (``/etc/skel``), so the
prompt measures a device's shell, not this machine's ``pyenv init``.

    .venv/bin/python -m bench.sessions [--sessions 50] [--megabytes 256]
        [--concurrent 100] [--agents 4] [--open-at-once 10] [--keystrokes 400]
        [--only click,keys,rate,many] [--keep] [--no-write]
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil

from bench._openssh import CIPHER, OpenSSHMissing, OpenSSHTunnel
from tests.fixtures.center import TlsBroker, enroll_agent
from tests.fixtures.ports import free_port
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until

RESULTS = Path(__file__).parent / "results" / "sessions.md"
CHUNK = 256 * 1024
PASSWORD = "bench-password-1"  # noqa: S105
OPERATOR = "bench"
# A ready prompt: bash's "user@host:dir# " (after its bracketed-paste switch), or "$ ".
PROMPT = re.compile(rb"[#$] (\x1b\[\?2004h)?$")
COLS, ROWS = 120, 40


def _device_home(workdir: Path) -> Path:
    """A home folder with Debian's default profile, for every shell the bench opens.

    This machine's own ``/root/.bashrc`` runs ``pyenv init`` (about 300 ms per
    login shell), which no device has; with it the prompt would measure pyenv.
    """
    home = workdir / "home"
    if not home.exists():
        home.mkdir()
        for name in (".profile", ".bashrc", ".bash_logout"):
            skel = Path("/etc/skel") / name
            if skel.exists():
                shutil.copy(skel, home / name)
    return home


def _login_shell_command(workdir: Path) -> list[str]:
    """The remote command of an OpenSSH login: the same shell and profile as the agents'."""
    shell = os.environ.get("SHELL") or "/bin/bash"
    return [f"cd {_device_home(workdir)} && HOME={_device_home(workdir)} exec {shell} -l"]


# -- the sink (a child process) ---------------------------------------------------------


async def _sink_main() -> None:
    """The byte sink and source; a length prefix, since WebSockets have no half-close.

    "SIZE\\n" then SIZE bytes: it reads them and answers "SIZE\\n" (an upload).
    "-SIZE\\n": it sends SIZE random bytes (a download).
    """
    block = os.urandom(CHUNK)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
            size = int(await reader.readline())
            if size < 0:
                for _ in range(-size // CHUNK):
                    writer.write(block)
                    await writer.drain()
            else:
                left = size
                while left:
                    data = await reader.read(min(left, 1 << 20))
                    if not data:
                        break
                    left -= len(data)
                writer.write(f"{size - left}\n".encode())
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1 << 20)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# -- statistics -------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _load() -> float:
    return os.getloadavg()[0]


@dataclass
class Loads:
    """1-minute load averages at the start and end of each phase."""

    phases: dict[str, tuple[float, float]] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = _load()
        yield
        self.phases[name] = (start, _load())


# -- the center -------------------------------------------------------------------------


@contextmanager
def _center(workdir: Path, database_url: str, **settings: Any) -> Iterator[ServerProcess]:
    """As ``tests.fixtures.center.secure_center``, with the bench's own server settings."""
    port = free_port()
    server_port = free_port()  # the server's own listener (certificate and password)
    pki = workdir / "state" / "pki"
    server = ServerProcess(
        workdir, database_url, f"mqtts://127.0.0.1:{server_port}",
        device_broker_url=f"mqtts://127.0.0.1:{port}",
        broker_ca=str(pki / "ca.pem"), broker_cert=str(pki / "server-client.pem"),
        broker_key=str(pki / "server-client.key"), **settings,
    )  # fmt: skip
    done = server.cli("ca", "init")
    assert done.returncode == 0, done.stderr
    broker_dir = Path(tempfile.mkdtemp(prefix="fieldlink-broker-"))
    broker_dir.chmod(0o755)  # Mosquitto drops root for its own user
    done = server.cli(
        "broker-config", "--out", str(broker_dir), "--port", str(port), "--bind", "127.0.0.1",
        "--server-port", str(server_port), "--server-bind", "127.0.0.1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    broker = TlsBroker(broker_dir, port, server_port)
    broker.start()
    try:
        with server:
            yield server
    finally:
        broker.stop()
        shutil.rmtree(broker_dir, ignore_errors=True)


def _start_agent(
    server: ServerProcess,
    workdir: Path,
    serial: str,
    services: dict[str, str],
    max_sessions: int,
    command: list[str] | None = None,
) -> tuple[str, AgentProcess]:
    """Register, enroll and start one agent (``command``: instead of ``fieldlink agent``)."""
    registered = server.api(
        "POST", "/devices",
        json={"serial": serial, "model": "bench", "type": "mfp", "customer": "Bench"},
    )  # fmt: skip
    device_id, token = registered["device"]["id"], registered["enrollment_token"]
    device_dir = workdir / f"device-{serial}"
    enrolled = enroll_agent(server, token, device_dir)
    assert enrolled.returncode == 0, enrolled.stderr
    agent = AgentProcess(workdir, device_id, "unused")
    agent.config = device_dir / "agent.toml"
    agent._spawn(
        [*(command or [sys.executable, "-m", "shared", "agent"]), "run", "--config",
         str(agent.config)],
        FIELDLINK_INTERVAL_S="10", FIELDLINK_STATE_DIR=str(device_dir / "state"),
        FIELDLINK_PROFILE="mfp", FIELDLINK_SIMULATE="true", FIELDLINK_KEEPALIVE_S="30",
        HOME=str(_device_home(workdir)), FIELDLINK_SERVICES=json.dumps(services),
        FIELDLINK_POLICY=json.dumps({"services": list(services), "consent": "none",
                                     "idle_timeout_s": 3600, "max_sessions": max_sessions,
                                     "sftp_folders": {"files": str(workdir / "device-files")}}),
    )  # fmt: skip
    return device_id, agent


@dataclass
class Bench:
    """The running center and the operator's access to it."""

    server: ServerProcess
    token: str
    http: httpx.AsyncClient
    workdir: Path
    gateway_port: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ws_url(self, path: str) -> str:
        return self.server.url.replace("http://", "ws://") + "/api/v1" + path

    async def open_session(self, device_id: str, reason: str) -> str:
        answer = await self.http.post(f"/devices/{device_id}/sessions", json={"reason": reason})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def close_session(self, session_id: str) -> dict[str, Any]:
        answer = await self.http.delete(f"/sessions/{session_id}")
        assert answer.status_code == 200, answer.text
        row: dict[str, Any] = answer.json()
        return row


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


async def _terminal(bench: Bench, session_id: str) -> TerminalShell:
    from websockets.asyncio.client import connect

    socket = await connect(
        bench.ws_url(f"/sessions/{session_id}/terminal?cols={COLS}&rows={ROWS}"),
        additional_headers=bench.headers,
        open_timeout=60,
    )
    return TerminalShell(socket)


async def _ssh_shell(command: list[str]) -> ProcessShell:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return ProcessShell(process)


async def _keystrokes(shell: Shell, count: int) -> list[float]:
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


async def _click_to_shell(bench: Bench, device_id: str) -> tuple[Click, TerminalShell]:
    clicked = time.time()
    session_id = await bench.open_session(device_id, "bench: click to shell")
    click = Click(session_id, clicked, time.time())
    shell = await _terminal(bench, session_id)
    output = b""
    while not PROMPT.search(output):
        data = await shell.read()
        if not data and not click.active:
            click.active = time.time()  # the "active" state frame: the shell channel is open
        output += data
    click.prompt = time.time()
    return click, shell


def _log_times(path: Path) -> list[tuple[float, dict[str, Any]]]:
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
            when = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except (ValueError, KeyError):
            continue
        entries.append((when.timestamp(), entry))
    return entries


def _pieces(clicks: list[Click], server_log: Path, agent_log: Path) -> dict[str, list[float]]:
    """Milliseconds from the click to each step, per session (log times have 1 ms steps)."""
    ssh_ready: dict[str, float] = {}
    for when, entry in _log_times(server_log):
        if entry["msg"].startswith("agent connected for session "):
            ssh_ready[entry["msg"].rsplit(" ", 1)[1]] = when
    dialed: dict[str, float] = {}
    got_open: list[float] = []
    for when, entry in _log_times(agent_log):
        if entry["msg"].startswith("tunnel open to ") and "session_id" in entry:
            dialed[entry["session_id"]] = when
        elif entry["msg"].endswith("running session.open"):
            got_open.append(when)
    steps: dict[str, list[float]] = {
        "API answered": [], "agent received session.open": [], "agent's tunnel dialed": [],
        "SSH ready on the server": [], "shell channel open": [], "prompt shown": [],
    }  # fmt: skip
    for click in clicks:
        ms = {
            "API answered": click.answered,
            "agent received session.open": next(
                (t for t in got_open if click.clicked - 0.002 <= t <= click.prompt), None
            ),
            "agent's tunnel dialed": dialed.get(click.session_id),
            "SSH ready on the server": ssh_ready.get(click.session_id),
            "shell channel open": click.active or None,
            "prompt shown": click.prompt,
        }
        for name, when in ms.items():
            if when is not None:
                steps[name].append((when - click.clicked) * 1000)
    return steps


async def click_phase(bench: Bench, device_id: str, count: int, agent_log: Path) -> dict[str, Any]:
    """``count`` sessions one after another (after one cold one), each to a prompt and closed."""
    cold: Click | None = None
    clicks: list[Click] = []
    for index in range(count + 1):
        click, shell = await _click_to_shell(bench, device_id)
        await shell.close()
        await bench.close_session(click.session_id)
        if index == 0:
            cold = click
        else:
            clicks.append(click)
    assert cold is not None
    steps = _pieces(clicks, bench.server.log_path, agent_log)
    return {"cold_ms": (cold.prompt - cold.clicked) * 1000, "steps": steps, "count": count}


# -- keystrokes -------------------------------------------------------------------------


async def keystroke_phase(
    bench: Bench, device_id: str, tunnel: OpenSSHTunnel | None, count: int
) -> dict[str, list[float]]:
    """Keystroke round trips through each path, one path after another."""
    results: dict[str, list[float]] = {}

    local = LocalPtyShell(_device_home(bench.workdir))
    await local.start()
    try:
        await local.until_prompt()
        results["local PTY, no tunnel (floor)"] = await _keystrokes(local, count)
    finally:
        await local.close()

    if tunnel is not None:
        shell = await _ssh_shell(
            tunnel.login_command(tunnel.ports["sshd"], *_login_shell_command(bench.workdir))
        )
        try:
            await shell.until_prompt()
            results[
                "OpenSSH: `ssh -tt` through the `ssh -R` tunnel (baseline)"
            ] = await _keystrokes(shell, count)
        finally:
            await shell.close()

    click, terminal = await _click_to_shell(bench, device_id)
    try:
        results["fieldlink: browser-terminal socket"] = await _keystrokes(terminal, count)
    finally:
        await terminal.close()
        await bench.close_session(click.session_id)

    if bench.gateway_port is not None:
        shell = await _ssh_shell(["ssh", "-tt", *_gateway_options(bench), f"{device_id}@127.0.0.1"])
        try:
            await shell.until_prompt(60)
            results["fieldlink: `ssh -tt` through the SSH gateway"] = await _keystrokes(
                shell, count
            )
        finally:
            await shell.close()
    return results


# -- throughput -------------------------------------------------------------------------


@dataclass
class Rate:
    """One path's throughput each way (MB/s of each run), and the upload's CPU seconds."""

    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)


@contextmanager
def _cpu(rate: Rate, processes: dict[str, list[psutil.Process]]) -> Iterator[None]:
    def total(group: list[psutil.Process]) -> float:
        seconds = 0.0
        for process in group:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                seconds += times.user + times.system
                # sshd's sessions that ended (and were waited for) inside the window
                seconds += times.children_user + times.children_system
        return seconds

    before = {name: total(p) for name, p in processes.items()}
    yield
    for name, process in processes.items():
        rate.cpu[name] = rate.cpu.get(name, 0.0) + total(process) - before[name]


async def _push_tcp(port: int, size: int) -> float:
    block = os.urandom(CHUNK)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    started = time.perf_counter()
    writer.write(f"{size}\n".encode())
    for _ in range(size // CHUNK):
        writer.write(block)
        await writer.drain()
    answer = await reader.readline()
    elapsed = time.perf_counter() - started
    writer.close()
    assert int(answer) == size, answer
    return size / elapsed / 1e6


async def _pull_tcp(port: int, size: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    started = time.perf_counter()
    writer.write(f"-{size}\n".encode())
    left = size
    while left:
        data = await reader.read(1 << 20)
        assert data, f"{left} bytes missing"
        left -= len(data)
    elapsed = time.perf_counter() - started
    writer.close()
    return size / elapsed / 1e6


async def _forward_socket(bench: Bench, session_id: str) -> Any:
    """``WS /sessions/{id}/forward/sink`` with a plain websockets client, once active."""
    from websockets.asyncio.client import connect

    socket = await connect(
        bench.ws_url(f"/sessions/{session_id}/forward/sink"),
        additional_headers=bench.headers,
        compression=None,
        max_size=4 * CHUNK,
    )
    while (state := json.loads(await socket.recv()))["state"] != "active":
        assert state["state"] != "closed", state
    return socket


async def _push_forward(bench: Bench, session_id: str, size: int) -> float:
    block = os.urandom(CHUNK)
    socket = await _forward_socket(bench, session_id)
    try:
        started = time.perf_counter()
        await socket.send(f"{size}\n".encode())
        for _ in range(size // CHUNK):
            await socket.send(block)
        answer = b""
        while not answer.endswith(b"\n"):
            message = await socket.recv()
            assert isinstance(message, bytes), message
            answer += message
        elapsed = time.perf_counter() - started
    finally:
        await socket.close()
    assert int(answer) == size, answer
    return size / elapsed / 1e6


async def _pull_forward(bench: Bench, session_id: str, size: int) -> float:
    socket = await _forward_socket(bench, session_id)
    try:
        started = time.perf_counter()
        await socket.send(f"-{size}\n".encode())
        left = size
        while left:
            message = await socket.recv()
            assert isinstance(message, bytes), message
            left -= len(message)
        elapsed = time.perf_counter() - started
    finally:
        await socket.close()
    return size / elapsed / 1e6


def _operator_env(bench: Bench) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    env["FIELDLINK_CREDENTIALS"] = str(bench.workdir / "credentials.json")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _login_cli(bench: Bench) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared", "login", "--server", bench.server.url, "--user", OPERATOR],
        input=PASSWORD + "\n", capture_output=True, text=True, env=_operator_env(bench),
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def _fieldlink_connect(
    bench: Bench, device_id: str
) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared", "connect", device_id, "sink", "--port", "0",
        "--reason", "bench: throughput",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_operator_env(bench),
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
    if not line.startswith("forwarding 127.0.0.1:"):
        assert process.stderr is not None
        msg = f"fieldlink connect: {line!r} {(await process.stderr.read()).decode()}"
        raise RuntimeError(msg)
    return process, int(line.split()[1].rsplit(":", 1)[1])


OPENSSH_TCP = "OpenSSH `ssh -R` reverse tunnel (baseline)"
OPENSSH_SCP = "OpenSSH: `scp` with sshd through the `ssh -R` tunnel (scp baseline)"


async def throughput_phase(
    bench: Bench,
    device_id: str,
    agent: AgentProcess,
    tunnel: OpenSSHTunnel | None,
    megabytes: int,
    runs: int = 3,
) -> dict[str, Rate]:
    """Each path in turn: ``runs`` uploads then ``runs`` downloads of ``megabytes`` MiB."""
    size = megabytes * 1024 * 1024
    assert bench.server.process is not None
    assert agent.process is not None
    ours = {"server": [psutil.Process(bench.server.process.pid)],
            "agent": [psutil.Process(agent.process.pid)],
            "bench (client)": [psutil.Process()]}  # fmt: skip
    results: dict[str, Rate] = {}

    if tunnel is not None:
        assert tunnel.client is not None
        assert tunnel.daemon is not None
        rate = results[OPENSSH_TCP] = Rate()
        sshd_children = psutil.Process(tunnel.daemon.pid).children(recursive=True)
        processes = {"ssh -R client": [psutil.Process(tunnel.client.pid)],
                     "sshd": sshd_children, "bench (client)": [psutil.Process()]}  # fmt: skip
        for _ in range(runs):
            with _cpu(rate, processes):
                rate.up.append(await _push_tcp(tunnel.ports["sink"], size))
        for _ in range(runs):
            rate.down.append(await _pull_tcp(tunnel.ports["sink"], size))

    session_id = await bench.open_session(device_id, "bench: throughput")
    rate = results["fieldlink: forward socket (own WebSocket client)"] = Rate()
    for _ in range(runs):
        with _cpu(rate, ours):
            rate.up.append(await _push_forward(bench, session_id, size))
    for _ in range(runs):
        rate.down.append(await _pull_forward(bench, session_id, size))
    await bench.close_session(session_id)

    process, port = await _fieldlink_connect(bench, device_id)
    try:
        rate = results["`fieldlink connect` (local port → forward socket)"] = Rate()
        processes = {**ours, "fieldlink connect": [psutil.Process(process.pid)]}
        for _ in range(runs):
            with _cpu(rate, processes):
                rate.up.append(await _push_tcp(port, size))
        for _ in range(runs):
            rate.down.append(await _pull_tcp(port, size))
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 30)

    if bench.gateway_port is not None and tunnel is not None:
        results.update(await _scp_rates(bench, device_id, tunnel, megabytes, runs, ours))
    return results


async def _scp_rates(
    bench: Bench,
    device_id: str,
    tunnel: OpenSSHTunnel,
    megabytes: int,
    runs: int,
    ours: dict[str, list[psutil.Process]],
) -> dict[str, Rate]:
    """scp of one file to and from the device through the gateway, and with sshd via OpenSSH."""
    source = bench.workdir / "scp-source.bin"
    with source.open("wb") as out:
        for _ in range(megabytes * 1024 * 1024 // CHUNK):
            out.write(os.urandom(CHUNK))
    size = source.stat().st_size
    files = bench.workdir / "device-files"
    back = bench.workdir / "scp-back.bin"

    async def scp(*args: str) -> float:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            "scp", *args, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _out, err = await process.communicate()
        elapsed = time.perf_counter() - started
        assert process.returncode == 0, err.decode()
        return size / elapsed / 1e6

    results: dict[str, Rate] = {}
    rate = results[OPENSSH_SCP] = Rate()
    options = _scp_options(tunnel.options(tunnel.ports["sshd"]))
    remote = f"{tunnel.user}@127.0.0.1:{files / 'baseline.bin'}"
    assert tunnel.daemon is not None
    assert tunnel.client is not None
    daemon = psutil.Process(tunnel.daemon.pid)
    device_side = {"ssh -R client": [psutil.Process(tunnel.client.pid)],
                   "sshd": [daemon, *daemon.children(recursive=True)]}  # fmt: skip
    for _ in range(runs):
        with _cpu(rate, device_side):
            rate.up.append(await scp(*options, str(source), remote))
        assert (files / "baseline.bin").stat().st_size == size
    for _ in range(runs):
        back.unlink(missing_ok=True)
        rate.down.append(await scp(*options, remote, str(back)))
        assert back.stat().st_size == size

    rate = results["fieldlink: `scp` through the SSH gateway"] = Rate()
    options = _scp_options(_gateway_options(bench))
    remote = f"{device_id}@127.0.0.1:/gateway.bin"
    for _ in range(runs):
        with _cpu(rate, ours):
            rate.up.append(await scp(*options, str(source), remote))
        assert (files / "gateway.bin").stat().st_size == size
    for _ in range(runs):
        back.unlink(missing_ok=True)
        rate.down.append(await scp(*options, remote, str(back)))
        assert back.stat().st_size == size
    return results


def _gateway_options(bench: Bench) -> list[str]:
    """ssh options for the SSH gateway, as the operator whose key the bench registered."""
    return [
        "-p", str(bench.gateway_port), "-i", str(bench.workdir / "operator"), "-c", CIPHER,
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def _scp_options(ssh_options: list[str]) -> list[str]:
    """scp spells the port ``-P``."""
    options = list(ssh_options)
    options[options.index("-p")] = "-P"
    return options


# -- 100 sessions at once ---------------------------------------------------------------


def _memory(process: psutil.Process) -> tuple[float, float]:
    """RSS and PSS in MiB."""
    info = process.memory_full_info()
    return info.rss / 2**20, getattr(info, "pss", info.rss) / 2**20


def _children_memory(processes: list[psutil.Process]) -> tuple[float, float, int]:
    rss = pss = 0.0
    count = 0
    for parent in processes:
        for child in parent.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                r, p = _memory(child)
                rss, pss, count = rss + r, pss + p, count + 1
    return rss, pss, count


async def concurrent_phase(
    bench: Bench, devices: list[str], agents: list[AgentProcess], count: int, at_once: int
) -> dict[str, Any]:
    """``count`` sessions open together, spread over the agents, each at a prompt.

    At most ``at_once`` are being opened at any moment (operators do not all
    click in the same millisecond; see the notes for a burst of 100).
    """
    assert bench.server.process is not None
    server = psutil.Process(bench.server.process.pid)
    agent_ps = [psutil.Process(a.process.pid) for a in agents if a.process is not None]
    # One session per agent first: each imports its session stack (asyncssh,
    # websockets, cryptography) with its first session, once.
    for device_id in devices:
        click, shell = await _click_to_shell(bench, device_id)
        await shell.close()
        await bench.close_session(click.session_id)
    await asyncio.sleep(1.0)
    before = {"server": _memory(server),
              "agents": tuple(map(sum, zip(*(_memory(p) for p in agent_ps), strict=True)))}  # fmt: skip

    failures: list[str] = []
    started = time.perf_counter()
    gate = asyncio.Semaphore(at_once)

    async def one(index: int) -> tuple[Click, TerminalShell] | None:
        try:
            async with gate, asyncio.timeout(120):
                return await _click_to_shell(bench, devices[index % len(devices)])
        except Exception as exc:  # counted and reported, not raised
            failures.append(f"open {index}: {type(exc).__name__}: {exc}")
            return None

    opened = [r for r in await asyncio.gather(*(one(i) for i in range(count))) if r is not None]
    all_ready_s = time.perf_counter() - started
    ready_ms = [(click.prompt - click.clicked) * 1000 for click, _ in opened]

    async def works(index: int, shell: TerminalShell) -> None:
        try:
            async with asyncio.timeout(60):
                await shell.send(f"echo ok-$(({index}+1000))\n".encode())
                output = b""
                while f"ok-{index + 1000}".encode() not in output.replace(b"ok-$((", b""):
                    output += await shell.read()
        except Exception as exc:
            failures.append(f"command {index}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(works(i, shell) for i, (_click, shell) in enumerate(opened)))
    await asyncio.sleep(1.0)
    after = {"server": _memory(server),
             "agents": tuple(map(sum, zip(*(_memory(p) for p in agent_ps), strict=True)))}  # fmt: skip
    shells = _children_memory(agent_ps)

    async def close(click: Click, shell: TerminalShell) -> None:
        try:
            async with gate:
                await shell.close()
                row = await bench.close_session(click.session_id)
            if row["state"] != "closed" or row["close_reason"] != "operator":
                failures.append(f"close {click.session_id}: {row['state']} {row['close_reason']}")
        except Exception as exc:
            failures.append(f"close {click.session_id}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(close(click, shell) for click, shell in opened))
    return {
        "count": count, "opened": len(opened), "failures": failures, "all_ready_s": all_ready_s,
        "ready_ms": ready_ms, "before": before, "after": after, "shells": shells,
        "agents": len(agents), "at_once": at_once,
    }  # fmt: skip


async def openssh_memory(
    tunnel: OpenSSHTunnel, count: int, workdir: Path, at_once: int
) -> dict[str, Any] | None:
    """The same number of ``ssh -tt`` logins through the OpenSSH tunnel.

    What the device side gains per login: sshd's session processes and the
    ``ssh -R`` client carrying the channels (not the shells, counted apart).
    """
    assert tunnel.daemon is not None
    assert tunnel.client is not None
    daemon = psutil.Process(tunnel.daemon.pid)
    client = psutil.Process(tunnel.client.pid)

    def sshd_memory() -> tuple[float, float]:
        rss = pss = 0.0
        for process in [client, daemon, *daemon.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                if process.name().startswith(("sshd", "ssh")):
                    r, p = _memory(process)
                    rss, pss = rss + r, pss + p
        return rss, pss

    before = sshd_memory()
    shells: list[ProcessShell] = []
    failures = 0
    gate = asyncio.Semaphore(at_once)
    command = tunnel.login_command(tunnel.ports["sshd"], *_login_shell_command(workdir))

    async def login() -> None:
        nonlocal failures
        async with gate:
            shell = await _ssh_shell(command)
            shells.append(shell)
            try:
                await shell.until_prompt(60)
            except Exception:  # counted
                failures += 1

    try:
        await asyncio.gather(*(login() for _ in range(count)))
        await asyncio.sleep(1.0)
        after = sshd_memory()
    finally:
        await asyncio.gather(*(shell.close() for shell in shells), return_exceptions=True)
    return {"before": before, "after": after, "failures": failures}


# -- the run ----------------------------------------------------------------------------


async def _measure(
    bench: Bench,
    devices: list[str],
    agents: list[AgentProcess],
    sink_port: int,
    args: argparse.Namespace,
    loads: Loads,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    tunnel: OpenSSHTunnel | None = OpenSSHTunnel(
        bench.workdir / "openssh", {"sink": sink_port, "sshd": None}
    )
    assert tunnel is not None
    tunnel.workdir.mkdir()
    try:
        await asyncio.to_thread(tunnel.start)
    except OpenSSHMissing as exc:
        results["openssh_missing"] = str(exc)
        tunnel = None
    try:
        if "click" in args.only:
            with loads.phase("click to shell"):
                results["click"] = await click_phase(
                    bench, devices[0], args.sessions, agents[0].log_path
                )
        if "keys" in args.only:
            with loads.phase("keystrokes"):
                results["keys"] = await keystroke_phase(bench, devices[0], tunnel, args.keystrokes)
        if "rate" in args.only:
            with loads.phase("throughput"):
                results["rate"] = await throughput_phase(
                    bench, devices[0], agents[0], tunnel, args.megabytes
                )
        if "many" in args.only:
            with loads.phase(f"{args.concurrent} sessions at once"):
                results["many"] = await concurrent_phase(
                    bench, devices, agents, args.concurrent, args.open_at_once
                )
            if tunnel is not None:
                with loads.phase(f"{args.concurrent} OpenSSH logins at once"):
                    results["many_openssh"] = await openssh_memory(
                        tunnel, args.concurrent, bench.workdir, args.open_at_once
                    )
    finally:
        if tunnel is not None:
            await asyncio.to_thread(tunnel.stop)
    return results


def run(args: argparse.Namespace) -> str:
    loads = Loads()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.sessions", "--sink"], stdout=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    agents: list[AgentProcess] = []
    try:
        assert sink.stdout is not None
        sink_port = int(sink.stdout.readline())
        files = workdir / "device-files"
        files.mkdir()
        per_agent = -(-args.concurrent // args.agents)
        settings = {
            "sessions_per_device": per_agent + 2,
            "sessions_per_operator": args.concurrent + 10,
            "ssh_gateway_port": 0,
        }
        with _center(workdir, f"sqlite:///{workdir / 'fieldlink.db'}", **settings) as server:
            devices: list[str] = []
            for index in range(args.agents):
                device_id, agent = _start_agent(
                    server, workdir, f"BENCH-{index}", {"sink": f"127.0.0.1:{sink_port}"},
                    max_sessions=per_agent + 2,
                )  # fmt: skip
                devices.append(device_id)
                agents.append(agent)
            for device_id in devices:
                wait_until(lambda d=device_id: server.device(d)["online"], timeout=60)
            done = server.cli("user", "add", OPERATOR, "--role", "operator", stdin=PASSWORD + "\n")
            assert done.returncode == 0, done.stderr
            gateway = _gateway_port(server) if _add_operator_key(server, workdir) else None
            token = httpx.post(
                f"{server.url}/api/v1/auth/token",
                data={"username": OPERATOR, "password": PASSWORD}, timeout=30,
            ).json()["access_token"]  # fmt: skip

            async def measure() -> dict[str, Any]:
                async with httpx.AsyncClient(
                    base_url=f"{server.url}/api/v1",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=120,
                    limits=httpx.Limits(max_connections=200),
                ) as http:
                    bench = Bench(server, token, http, workdir, gateway)
                    if "rate" in args.only:
                        await asyncio.to_thread(_login_cli, bench)
                    return await _measure(bench, devices, agents, sink_port, args, loads)

            results = asyncio.run(measure())
            results["gateway"] = gateway is not None
    finally:
        for agent in agents:
            agent.stop()
        sink.terminate()
        sink.wait()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return _report(results, loads, args)


def _add_operator_key(server: ServerProcess, workdir: Path) -> bool:
    """An SSH key for the operator, registered for the gateway (``False``: no gateway yet)."""
    key = workdir / "operator"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    done = server.cli("user", "add-key", OPERATOR, str(key.with_suffix(".pub")))
    return done.returncode == 0


def _gateway_port(server: ServerProcess) -> int | None:
    """The SSH gateway's port, from the server's log (``None``: this server has no gateway)."""
    for _when, entry in _log_times(server.log_path):
        match = re.search(r"SSH gateway (?:listening )?on [^ ]*:(\d+)", entry["msg"])
        if match:
            return int(match.group(1))
    return None


# -- the report -------------------------------------------------------------------------


def _report(results: dict[str, Any], loads: Loads, args: argparse.Namespace) -> str:
    lines = [
        "## Remote sessions end to end (bench/sessions.py)",
        "",
        "`fieldlink server run` (SQLite, device CA, signed commands) with a TLS Mosquitto and "
        f"{args.agents} enrolled agents (`fieldlink agent run`, consent `none`), all on this "
        "2-core machine over loopback; the operator's side through the public API only. "
        "The baseline is an OpenSSH `ssh -R` reverse tunnel (aes128-gcm, as fieldlink's "
        "tunnel) to a private sshd, measured in the same run to the same targets.",
        "",
    ]
    if "openssh_missing" in results:
        lines += [f"**No OpenSSH baseline in this run**: {results['openssh_missing']}.", ""]
    if "click" in results:
        lines += _click_table(results["click"])
    if "keys" in results:
        lines += _keys_table(results["keys"], args.keystrokes)
    if "rate" in results:
        lines += _rate_table(results["rate"], args.megabytes)
        if not results.get("gateway"):
            lines += [
                "The SSH gateway was not running in this server (not landed yet), so there "
                "is no `scp` row.",
                "",
            ]
    if "many" in results:
        lines += _many_table(results["many"], results.get("many_openssh"))
    lines += ["| phase | load average at start → end (1 min) |", "|---|---|"]
    lines += [f"| {name} | {a:.2f} → {b:.2f} |" for name, (a, b) in loads.phases.items()]
    lines.append("")
    return "\n".join(lines)


def _click_table(click: dict[str, Any]) -> list[str]:
    steps: dict[str, list[float]] = click["steps"]
    prompt = steps["prompt shown"]
    lines = [
        f"### Click to shell ({click['count']} sessions, one after another)",
        "",
        "From `POST /api/v1/devices/{id}/sessions` to a ready shell prompt on the "
        "terminal socket. Each step's time is counted from the click; the agent's and the "
        "server's steps come from their logs (1 ms resolution). Target: p50 < 500 ms, "
        "p95 < 1 s.",
        "",
        "| step (ms after the click) | p50 | p95 | median step |",
        "|---|---|---|---|",
    ]
    previous = 0.0
    for name, values in steps.items():
        if not values:
            lines.append(f"| {name} | - | - | - |")
            continue
        p50 = statistics.median(values)
        lines.append(f"| {name} | {p50:.0f} | {_pct(values, 0.95):.0f} | +{p50 - previous:.0f} |")
        previous = p50
    lines += [
        "",
        f"Click to prompt: **p50 {statistics.median(prompt):.0f} ms, p95 "
        f"{_pct(prompt, 0.95):.0f} ms**; the first session after the agent started (not "
        f"counted: the agent imports its session stack then) took {click['cold_ms']:.0f} ms.",
        "",
    ]
    return lines


def _keys_table(keys: dict[str, list[float]], count: int) -> list[str]:
    lines = [
        f"### Keystroke round trip ({count} keystrokes per path)",
        "",
        "One byte typed into an interactive login shell (bash, readline echoing) until its "
        "echo is back, 10 ms between keystrokes. *Added* is the path's p50 minus the local "
        "PTY's (what the tunnel adds).",
        "",
        "| path | p50 (µs) | p99 (µs) | added p50 (µs) | p50 ratio to OpenSSH | p99 ratio |",
        "|---|---|---|---|---|---|",
    ]
    floor_key = next((k for k in keys if k.startswith("local")), None)
    base_key = next((k for k in keys if k.startswith("OpenSSH")), None)
    floor = statistics.median(keys[floor_key]) if floor_key else 0.0
    base50 = statistics.median(keys[base_key]) if base_key else None
    base99 = _pct(keys[base_key], 0.99) if base_key else None
    for name, values in keys.items():
        p50, p99 = statistics.median(values), _pct(values, 0.99)
        added = "-" if name == floor_key else f"{(p50 - floor) * 1e6:.0f}"
        r50 = f"{p50 / base50:.2f}" if base50 and name != floor_key else "-"
        r99 = f"{p99 / base99:.2f}" if base99 and name != floor_key else "-"
        lines.append(f"| {name} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} | {added} | {r50} | {r99} |")
    lines.append("")
    return lines


def _tunnel_cpu(rate: Rate) -> float:
    """CPU seconds of the tunnel's own processes (not the bench's client, the same work)."""
    return sum(seconds for who, seconds in rate.cpu.items() if who != "bench (client)")


def _rate_table(rates: dict[str, Rate], megabytes: int) -> list[str]:
    lines = [
        f"### Throughput ({megabytes} MiB each way, median of 3)",
        "",
        "Random bytes pushed to a Python byte sink behind the agent's `sink` service "
        "(length-prefixed: it answers with the count), and pulled from it; `scp` copies a "
        "file into the device's SFTP folder and back. Ratios are to the OpenSSH row above "
        "them, measured in the same run. Target: ≥ 0.5. CPU is per GiB uploaded; *tunnel CPU* "
        "adds up the processes between the client and the sink (server, agent and `fieldlink "
        "connect`; sshd and the `ssh -R` client), as a ratio to OpenSSH's.",
        "",
        "| path | upload MB/s | ratio | download MB/s | ratio | CPU s per GiB up, by process "
        "| tunnel CPU per GiB up, ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    tcp, scp = rates.get(OPENSSH_TCP), rates.get(OPENSSH_SCP)
    for name, rate in rates.items():
        reference = scp if "scp" in name else tcp
        up, down = statistics.median(rate.up), statistics.median(rate.down)
        ratio_up = f"{up / statistics.median(reference.up):.2f}" if reference else "-"
        ratio_down = f"{down / statistics.median(reference.down):.2f}" if reference else "-"
        gib = len(rate.up) * megabytes / 1024
        cpu = ", ".join(
            f"{who} {seconds / gib:.1f}"
            for who, seconds in sorted(rate.cpu.items(), key=lambda kv: -kv[1])
            if seconds / gib >= 0.05
        )
        spent = _tunnel_cpu(rate) / gib
        reference_cpu = (
            _tunnel_cpu(reference) / (len(reference.up) * megabytes / 1024) if reference else 0
        )
        cpu_ratio = f"{spent / reference_cpu:.2f}" if reference_cpu and spent else "-"
        lines.append(
            f"| {name} | {up:.0f} | {ratio_up} | {down:.0f} | {ratio_down} | {cpu or '-'} "
            f"| {cpu_ratio} |"
        )
    lines.append("")
    return lines


def _many_table(many: dict[str, Any], openssh: dict[str, Any] | None) -> list[str]:
    count, opened = many["count"], many["opened"]
    ready = many["ready_ms"]
    (s_rss0, s_pss0), (s_rss1, s_pss1) = many["before"]["server"], many["after"]["server"]
    (a_rss0, a_pss0), (a_rss1, a_pss1) = many["before"]["agents"], many["after"]["agents"]
    sh_rss, sh_pss, sh_count = many["shells"]
    lines = [
        f"### {count} sessions at once on one server",
        "",
        f"{count} sessions open together on one server, spread over {many['agents']} agents "
        f"(at most {many['at_once']} being opened at any moment), each with a terminal socket "
        "at a prompt; then a command run in every one, then all closed. Memory is measured "
        "with all of them open, against the same processes after one session each (the "
        "agent loads its session stack with its first session, once).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| sessions at a prompt | {opened} of {count} |",
        f"| failures (open, command or close) | {len(many['failures'])} |",
        f"| all {count} at a prompt after | {many['all_ready_s']:.1f} s |",
    ]
    if ready:
        lines.append(
            f"| click to prompt meanwhile, p50 / p95 | {statistics.median(ready):.0f} / "
            f"{_pct(ready, 0.95):.0f} ms |"
        )
    per = max(opened, 1)
    lines += [
        f"| server: RSS {s_rss0:.0f} → {s_rss1:.0f} MiB | **{(s_rss1 - s_rss0) * 1024 / per:.0f} "
        f"KiB per session** (PSS {(s_pss1 - s_pss0) * 1024 / per:.0f}) |",
        f"| agents (all): RSS {a_rss0:.0f} → {a_rss1:.0f} MiB | **{(a_rss1 - a_rss0) * 1024 / per:.0f} "
        f"KiB per session** (PSS {(a_pss1 - a_pss0) * 1024 / per:.0f}) |",
        f"| the shells themselves ({sh_count} processes) | {sh_rss * 1024 / per:.0f} KiB RSS, "
        f"{sh_pss * 1024 / per:.0f} KiB PSS per session |",
    ]
    if openssh is not None:
        (o_rss0, o_pss0), (o_rss1, o_pss1) = openssh["before"], openssh["after"]
        lines.append(
            f"| OpenSSH baseline: sshd for {count} `ssh -tt` logins through the tunnel "
            f"({openssh['failures']} failed) | {(o_rss1 - o_rss0) * 1024 / count:.0f} KiB RSS, "
            f"{(o_pss1 - o_pss0) * 1024 / count:.0f} KiB PSS per login |"
        )
        ours = (s_pss1 - s_pss0) / per + (a_pss1 - a_pss0) / per
        if o_pss1 > o_pss0:
            lines.append(
                f"| fieldlink (server + agent) per session as a ratio to OpenSSH per login, "
                f"PSS | {ours / ((o_pss1 - o_pss0) / count):.2f} |"
            )
    lines.append("")
    if many["failures"]:
        lines += ["Failures:", "", *(f"- {f}" for f in many["failures"][:10]), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--keystrokes", type=int, default=400)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument(
        "--open-at-once", type=int, default=10, help="sessions being opened at any moment"
    )
    parser.add_argument(
        "--only", default="click,keys,rate,many", help="phases: click,keys,rate,many"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the results")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        asyncio.run(_sink_main())
        return
    args.only = set(args.only.split(","))
    report = run(args)
    if not args.no_write:
        RESULTS.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
