"""The session tunnel: time to a ready exec, and throughput through a forward vs OpenSSH.

Three processes on loopback, as in production: the server side (a real
uvicorn serving the tunnel endpoint, the server's asyncssh client) in this
process; the agent side (``AgentSession``: WebSocket dial, asyncssh server) in
a child process; a byte sink (reads to EOF, answers with the count) in another.

- Time to a ready exec: from registering the session to the first ``run("true")``
  returning (WebSocket handshake + SSH key exchange both ways + auth + one exec),
  p50/p95 over 50 tunnels opened one after another.
- Throughput: bytes through a direct-tcpip forward to the sink, as a ratio to
  an OpenSSH ``ssh -R`` reverse tunnel (a private sshd on a free port, the
  real ``ssh`` client as the device, same cipher: aes128-gcm) to the same sink,
  measured in the same run.

    .venv/bin/python -m bench.tunnel [--tunnels 50] [--megabytes 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench._openssh import OpenSSHMissing, OpenSSHTunnel

RESULTS = Path(__file__).parent / "results" / "tunnel.md"
TOKEN = "bench-session-token"  # noqa: S105
CHUNK = 256 * 1024


# the sink process


async def _sink_main() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while data := await reader.read(1 << 20):
            total += len(data)
        writer.write(f"{total}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# the agent process


async def _agent_main() -> None:
    from datetime import datetime

    from agent.remote.client_keys import UsedClientKeys
    from agent.remote.policy import ServiceTarget, SitePolicy
    from agent.remote.sshd import AgentSession

    ledger = UsedClientKeys()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[Any]] = set()
    while line := await reader.readline():
        order = json.loads(line)
        policy = SitePolicy(
            services={"sink": ServiceTarget("sink", "127.0.0.1", order["sink_port"])},
            idle_timeout_s=120,
        )
        session = AgentSession(
            order["ws_url"],
            session_id=order["session_id"],
            session_token=TOKEN,
            host_key_path=Path(order["host_key_path"]),
            client_public_key=order["client_public_key"],
            policy=policy,
            expires_at=datetime.fromisoformat(order["expires_at"]),
            proxy=None,
            used_keys=ledger,
        )
        task = asyncio.create_task(session.run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)


# the server side (this process)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _spawn(mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.tunnel",
        mode,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )


async def _push(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter | Any, size: int
) -> float:
    """Send ``size`` bytes, half-close, wait for the sink's count; return MB/s."""
    block = os.urandom(CHUNK)
    started = time.perf_counter()
    for _ in range(size // CHUNK):
        writer.write(block)
        await writer.drain()
    writer.write_eof()
    answer = await reader.readline()
    elapsed = time.perf_counter() - started
    assert int(answer) == size, answer
    writer.close()
    return size / elapsed / 1e6


async def _openssh_rate(sink_port: int, size: int, workdir: Path) -> float | None:
    """Median of 3 pushes through an OpenSSH ``ssh -R`` tunnel to the sink (``None``: no sshd)."""
    tunnel = OpenSSHTunnel(workdir, {"sink": sink_port})
    try:
        await asyncio.to_thread(tunnel.start)
    except OpenSSHMissing:
        return None
    try:
        rates = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.ports["sink"])
            rates.append(await _push(reader, writer, size))
        return statistics.median(rates)
    finally:
        await asyncio.to_thread(tunnel.stop)


async def run(tunnels: int, megabytes: int) -> str:
    import uvicorn
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from fastapi import FastAPI

    from server.sessions.keys import generate_one_time_key, hash_session_token, parse_host_key
    from server.sessions.registry import PendingSession, SessionRegistry
    from server.sessions.relay import SessionRelay
    from shared.ids import utcnow
    from tests.fixtures.ports import free_port

    workdir = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    host_key = ed25519.Ed25519PrivateKey.generate()
    host_key_path = workdir / "ssh_host_ed25519_key"
    host_key_path.write_bytes(
        host_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    host_public = (
        host_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )

    registry = SessionRegistry()
    app = FastAPI()
    app.add_api_websocket_route("/api/v1/tunnel/{session_id}", SessionRelay(registry).endpoint)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, ws="websockets-sansio", log_level="warning",
            lifespan="off",
        )
    )  # fmt: skip
    serving = asyncio.create_task(server.serve())
    sink = await _spawn("--sink")
    agent = await _spawn("--agent-worker")
    assert sink.stdout is not None
    assert agent.stdin is not None
    sink_port = int(await sink.stdout.readline())
    while not server.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.01)

    async def open_session() -> Any:
        session_id = uuid.uuid4().hex
        key = generate_one_time_key()
        expires_at = utcnow() + timedelta(minutes=5)
        registry.expect(
            PendingSession(
                session_id=session_id,
                token_hash=hash_session_token(TOKEN),
                client_key=key.private_key,
                host_key=parse_host_key(host_public),
                expires_at=expires_at,
            )
        )
        order = {
            "ws_url": f"ws://127.0.0.1:{port}/api/v1/tunnel/{session_id}",
            "session_id": session_id,
            "host_key_path": str(host_key_path),
            "client_public_key": key.public_openssh,
            "expires_at": expires_at.isoformat(),
            "sink_port": sink_port,
        }
        assert agent.stdin is not None
        agent.stdin.write(json.dumps(order).encode() + b"\n")
        return await registry.wait_for_agent(session_id, 10)

    try:
        # warm-up (imports, first key exchange) not counted
        connection = await open_session()
        await connection.run("true")
        await connection.close()

        to_auth: list[float] = []
        to_exec: list[float] = []
        for _ in range(tunnels):
            started = time.perf_counter()
            connection = await open_session()
            to_auth.append(time.perf_counter() - started)
            result = await connection.run("true")
            to_exec.append(time.perf_counter() - started)
            assert result.exit_status == 0
            await connection.close()

        size = megabytes * 1024 * 1024
        connection = await open_session()
        rates = []
        for _ in range(3):
            reader, writer = await connection.open_forward("sink")
            rates.append(await _push(reader, writer, size))
        ours = statistics.median(rates)
        await connection.close()
        agent.stdin.close()
        await agent.wait()
        server.should_exit = True
        await serving
        openssh = await _openssh_rate(sink_port, size, workdir)
    finally:
        agent.stdin.close()
        server.should_exit = True
        await serving
        for child in (agent, sink):
            if child.returncode is None:
                child.terminate()
            await child.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return _report(tunnels, megabytes, to_auth, to_exec, ours, openssh)


def _report(
    tunnels: int,
    megabytes: int,
    to_auth: list[float],
    to_exec: list[float],
    ours: float,
    openssh: float | None,
) -> str:
    ms = 1000.0
    lines = [
        "## Session tunnel (bench/tunnel.py)",
        "",
        "Server side (uvicorn + the tunnel endpoint + the server's asyncssh client), agent "
        "side (`AgentSession`: WebSocket dial, asyncssh server) and a byte sink in three "
        "processes on loopback; ws:// without compression, aes128-gcm.",
        "",
        f"| measure ({tunnels} tunnels, one after another) | p50 | p95 |",
        "|---|---|---|",
        f"| session registered → agent's tunnel authenticated | "
        f"{statistics.median(to_auth) * ms:.1f} ms | {_percentile(to_auth, 0.95) * ms:.1f} ms |",
        f"| session registered → first exec returned | "
        f"{statistics.median(to_exec) * ms:.1f} ms | {_percentile(to_exec, 0.95) * ms:.1f} ms |",
        "",
        f"| throughput, {megabytes} MiB to the sink, median of 3 | MB/s | ratio to OpenSSH |",
        "|---|---|---|",
    ]
    if openssh is not None:
        lines.append(
            f"| OpenSSH `ssh -R` reverse tunnel, aes128-gcm (baseline) | {openssh:.0f} | 1.00 |"
        )
        lines.append(
            f"| fieldlink direct-tcpip forward through the tunnel | {ours:.0f} | {ours / openssh:.2f} |"
        )
    else:
        lines.append(
            f"| fieldlink direct-tcpip forward through the tunnel | {ours:.0f} | (no sshd) |"
        )
    lines += [
        "",
        "The time to a ready exec excludes the MQTT `session.open` round trip and the API "
        "call (the lead's session API adds those). The issue's throughput target is ≥ 0.5 "
        "of OpenSSH.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tunnels", type=int, default=50)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--agent-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        asyncio.run(_sink_main())
        return
    if args.agent_worker:
        asyncio.run(_agent_main())
        return
    report = asyncio.run(run(args.tunnels, args.megabytes))
    RESULTS.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
