"""Throughput phase of :mod:`bench.sessions`: bytes to and from a sink behind the agent.

The sink (:func:`sink_main`, a child process) behind the agent's ``sink`` service and the
OpenSSH tunnel; pushes and pulls through the forward socket, ``fieldlink connect``, the
tunnel and ``scp``, with the CPU seconds of every process on the path (:class:`Rate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench._openssh import OpenSSHTunnel
from bench.sessions_setup import OPERATOR, PASSWORD, Bench, gateway_options
from tests.fixtures.processes import AgentProcess

CHUNK = 256 * 1024


# -- the sink (a child process) ---------------------------------------------------------


async def sink_main() -> None:
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


def login_cli(bench: Bench) -> None:
    """``fieldlink login`` as the operator, for ``fieldlink connect``."""
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

    async def both_ways(
        rate: Rate,
        options: list[str],
        remote: str,
        landed: str,
        processes: dict[str, list[psutil.Process]],
    ) -> None:
        for _ in range(runs):
            with _cpu(rate, processes):
                rate.up.append(await scp(*options, str(source), remote))
            assert (files / landed).stat().st_size == size
        for _ in range(runs):
            back.unlink(missing_ok=True)
            rate.down.append(await scp(*options, remote, str(back)))
            assert back.stat().st_size == size

    results: dict[str, Rate] = {}
    assert tunnel.daemon is not None
    assert tunnel.client is not None
    daemon = psutil.Process(tunnel.daemon.pid)
    device_side = {"ssh -R client": [psutil.Process(tunnel.client.pid)],
                   "sshd": [daemon, *daemon.children(recursive=True)]}  # fmt: skip
    await both_ways(
        results.setdefault(OPENSSH_SCP, Rate()),
        _scp_options(tunnel.options(tunnel.ports["sshd"])),
        f"{tunnel.user}@127.0.0.1:{files / 'baseline.bin'}", "baseline.bin", device_side,
    )  # fmt: skip
    await both_ways(
        results.setdefault("fieldlink: `scp` through the SSH gateway", Rate()),
        _scp_options(gateway_options(bench)),
        f"{device_id}@127.0.0.1:/gateway.bin", "gateway.bin", ours,
    )  # fmt: skip
    return results


def _scp_options(ssh_options: list[str]) -> list[str]:
    """scp spells the port ``-P``."""
    options = list(ssh_options)
    options[options.index("-p")] = "-P"
    return options
