"""The session tunnel end to end: a real uvicorn serving the tunnel endpoint, the agent
dialing it over a real WebSocket, real asyncssh on both sides."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.remote.client_keys import UsedClientKeys
from agent.remote.outcome import Refusal, SessionOutcome
from agent.remote.policy import ServiceTarget, SitePolicy
from agent.remote.sshd import AgentSession
from server.sessions.client import AgentConnection
from server.sessions.errors import AgentAuthFailed, AgentNotConnected, TunnelError
from server.sessions.keys import (
    OneTimeKey,
    generate_one_time_key,
    hash_session_token,
    parse_host_key,
)
from server.sessions.registry import PendingSession
from shared.ids import utcnow
from tests.fixtures.tcp_services import echo_service, http_page
from tests.fixtures.tunnel import TunnelEndpoint, tunnel_endpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "s3ssion-token-for-tests"


@dataclass
class Device:
    """A device's enrollment files: its host key (as ``agent.identity.enroll`` writes it)."""

    host_key_path: Path
    host_public: str


def make_device(directory: Path) -> Device:
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / "ssh_host_ed25519_key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return Device(host_key_path=path, host_public=public)


@dataclass
class OpenedSession:
    session_id: str
    agent: AgentSession
    agent_task: asyncio.Task[SessionOutcome]
    refusals: list[Refusal] = field(default_factory=list)

    async def outcome(self, within_s: float = 5.0) -> SessionOutcome:
        return await asyncio.wait_for(asyncio.shield(self.agent_task), within_s)


def start_session(
    server: TunnelEndpoint,
    device: Device,
    policy: SitePolicy,
    *,
    server_key: OneTimeKey | None = None,
    agent_key: str | None = None,
    pinned_host_key: str | None = None,
    token_sent: str = TOKEN,
    expires_in_s: float = 60.0,
    used_keys: UsedClientKeys | None = None,
) -> OpenedSession:
    """Register a pending session on the server and start the agent's side of it."""
    session_id = uuid.uuid4().hex
    key = server_key or generate_one_time_key()
    expires_at = utcnow() + timedelta(seconds=expires_in_s)
    if expires_in_s > 0:
        server.registry.expect(
            PendingSession(
                session_id=session_id,
                token_hash=hash_session_token(TOKEN),
                client_key=key.private_key,
                host_key=parse_host_key(pinned_host_key or device.host_public),
                expires_at=expires_at,
            )
        )
    refusals: list[Refusal] = []
    agent = AgentSession(
        server.url(session_id),
        session_id=session_id,
        session_token=token_sent,
        host_key_path=device.host_key_path,
        client_public_key=agent_key or key.public_openssh,
        policy=policy,
        expires_at=expires_at,
        on_refusal=refusals.append,
        proxy=None,
        used_keys=used_keys or UsedClientKeys(),
    )
    task = asyncio.create_task(agent.run())
    return OpenedSession(session_id, agent, task, refusals)


@contextlib.asynccontextmanager
async def live_session(
    server: TunnelEndpoint, device: Device, policy: SitePolicy
) -> AsyncIterator[tuple[AgentConnection, OpenedSession]]:
    opened = start_session(server, device, policy)
    connection = await server.registry.wait_for_agent(opened.session_id, 10)
    try:
        yield connection, opened
    finally:
        await connection.close("operator")
        await opened.outcome()


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return make_device(tmp_path)


@pytest.fixture
async def server() -> AsyncIterator[TunnelEndpoint]:
    async with tunnel_endpoint(login_timeout_s=5) as tunnel_server:
        yield tunnel_server


# what a session offers


async def test_exec_returns_output_and_exit_status(server: TunnelEndpoint, device: Device) -> None:
    async with live_session(server, device, SitePolicy()) as (connection, _):
        result = await connection.run("echo out; echo err >&2; exit 3", timeout_s=10)
        assert result == (3, "out\n", "err\n")
        result = await connection.run("printf 'h\\303\\251'", timeout_s=10)
        assert result.exit_status == 0
        assert result.stdout == "hé"


async def test_pty_shell_runs_echo_and_sees_it(server: TunnelEndpoint, device: Device) -> None:
    policy = SitePolicy(login_shell="/bin/sh")
    async with live_session(server, device, policy) as (connection, _):
        shell = await connection.open_shell(term="xterm", cols=100, rows=30)
        shell.stdin.write(b"stty size; echo hello-$((40+2))\n")
        seen = b""
        while b"hello-42" not in seen:
            seen += await asyncio.wait_for(shell.stdout.read(4096), 10)
        assert b"30 100" in seen
        shell.stdin.write(b"exit 5\n")
        completed = await asyncio.wait_for(shell.wait(check=False), 10)
        assert completed.exit_status == 5


async def test_forward_reaches_allowlisted_web_service(
    server: TunnelEndpoint, device: Device
) -> None:
    async with http_page(b"<h1>printer panel</h1>") as web_port:
        policy = SitePolicy(services={"web": ServiceTarget("web", "127.0.0.1", web_port)})
        async with live_session(server, device, policy) as (connection, opened):
            for port in (0, web_port):
                reader, writer = await connection.open_forward("web", port)
                writer.write(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
                response = await asyncio.wait_for(reader.read(), 10)
                assert response.startswith(b"HTTP/1.0 200 OK")
                assert response.endswith(b"<h1>printer panel</h1>")
                writer.close()
            # the exact target of an allowlisted service is the same service
            reader, writer = await connection.ssh.open_connection("127.0.0.1", web_port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(), 10)).endswith(b"panel</h1>")
            writer.close()
            assert opened.refusals == []


async def test_forward_outside_the_allowlist_is_refused_and_reported(
    server: TunnelEndpoint, device: Device
) -> None:
    async with http_page(b"secret") as other_port, http_page(b"ok") as web_port:
        policy = SitePolicy(
            services={
                "web": ServiceTarget("web", "127.0.0.1", web_port),
                "vnc": ServiceTarget("vnc", "127.0.0.1", other_port),
            },
            allowed_services=frozenset({"web"}),
        )
        async with live_session(server, device, policy) as (connection, opened):
            with pytest.raises(TunnelError, match="refused"):
                await connection.open_forward("vnc")  # configured but not allowed
            with pytest.raises(TunnelError, match="refused"):
                await connection.open_forward("web", web_port + 1)  # wrong port
            with pytest.raises(asyncssh.ChannelOpenError):
                await connection.ssh.open_connection("127.0.0.1", other_port)
            with pytest.raises(asyncssh.ChannelOpenError):
                await connection.ssh.open_connection("localhost", web_port)  # no resolution
            assert [(r.kind, r.target) for r in opened.refusals] == [
                ("forward", "vnc:0"),
                ("forward", f"web:{web_port + 1}"),
                ("forward", f"127.0.0.1:{other_port}"),
                ("forward", f"localhost:{web_port}"),
            ]
            # the session is still usable after refusals
            assert (await connection.run("echo still-here")).stdout == "still-here\n"
        outcome = await opened.outcome()
        assert len(outcome.refusals) == 4


async def test_20_mb_through_a_forward_keeps_its_sha256(
    server: TunnelEndpoint, device: Device
) -> None:
    payload = os.urandom(20 * 1024 * 1024)
    async with echo_service() as echo_port:
        policy = SitePolicy(services={"echo": ServiceTarget("echo", "127.0.0.1", echo_port)})
        async with live_session(server, device, policy) as (connection, _):
            reader, writer = await connection.open_forward("echo")

            async def send() -> None:
                for offset in range(0, len(payload), 1 << 18):
                    writer.write(payload[offset : offset + (1 << 18)])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            received = hashlib.sha256()
            size = 0
            while chunk := await asyncio.wait_for(reader.read(1 << 18), 20):
                received.update(chunk)
                size += len(chunk)
            await sender
            assert size == len(payload)
            assert received.hexdigest() == hashlib.sha256(payload).hexdigest()
            assert connection.bytes_to_agent > len(payload)
            assert connection.bytes_from_agent > len(payload)


async def test_sftp_is_confined_to_the_configured_folder(
    server: TunnelEndpoint, device: Device, tmp_path: Path
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "printer.log").write_text("paper jam\n")
    (tmp_path / "secret.txt").write_text("no")
    (folder / "escape").symlink_to(tmp_path / "secret.txt")
    policy = SitePolicy(sftp_folders={"logs": folder})
    async with live_session(server, device, policy) as (connection, opened):
        sftp = await connection.start_sftp()
        assert sorted(await sftp.listdir("/")) == [".", "..", "escape", "printer.log"]
        async with sftp.open("/printer.log") as remote:
            assert await remote.read() == "paper jam\n"
        async with sftp.open("/new.txt", "w") as remote:
            await remote.write("written")
        assert (folder / "new.txt").read_text() == "written"
        for outside in ("/../secret.txt", "/escape"):
            with pytest.raises(asyncssh.SFTPError):
                async with sftp.open(outside) as remote:
                    await remote.read()
        assert {r.kind for r in opened.refusals} == {"sftp"}
        sftp.exit()


# what must fail cleanly


async def test_wrong_session_token_is_refused_before_ssh(
    server: TunnelEndpoint, device: Device
) -> None:
    opened = start_session(server, device, SitePolicy(), token_sent="not-the-token")
    outcome = await opened.outcome()
    assert outcome.close_reason == "error"
    assert "HTTP 403" in outcome.detail
    assert outcome.started_at is None
    with pytest.raises(AgentNotConnected):
        await server.registry.wait_for_agent(opened.session_id, 0.2)


async def test_a_key_other_than_the_sessions_is_refused(
    server: TunnelEndpoint, device: Device
) -> None:
    other = generate_one_time_key()
    opened = start_session(server, device, SitePolicy(), agent_key=other.public_openssh)
    with pytest.raises(AgentAuthFailed, match="refused the session key"):
        await server.registry.wait_for_agent(opened.session_id, 10)
    outcome = await opened.outcome()
    assert outcome.close_reason == "error"
    assert outcome.detail == "client authentication failed"
    assert [r.reason for r in opened.refusals] == ["not this session's key"]


async def test_a_used_key_is_refused_the_second_time(
    server: TunnelEndpoint, device: Device
) -> None:
    ledger = UsedClientKeys()
    key = generate_one_time_key()
    first = start_session(server, device, SitePolicy(), server_key=key, used_keys=ledger)
    connection = await server.registry.wait_for_agent(first.session_id, 10)
    await connection.close("operator")
    assert (await first.outcome()).close_reason == "operator"

    replay = start_session(server, device, SitePolicy(), server_key=key, used_keys=ledger)
    outcome = await replay.outcome()
    assert outcome.close_reason == "error"
    assert outcome.detail == "session key already used"
    with pytest.raises(AgentNotConnected):
        await server.registry.wait_for_agent(replay.session_id, 0.2)


async def test_an_expired_key_is_refused(server: TunnelEndpoint, device: Device) -> None:
    opened = start_session(server, device, SitePolicy(), expires_in_s=-1)
    outcome = await opened.outcome()
    assert (outcome.close_reason, outcome.detail) == ("error", "session key expired")
    assert outcome.bytes_to_server == 0


async def test_a_host_key_other_than_the_pinned_one_is_refused(
    server: TunnelEndpoint, device: Device, tmp_path: Path
) -> None:
    impostor = make_device(tmp_path / "..").host_public
    opened = start_session(server, device, SitePolicy(), pinned_host_key=impostor)
    with pytest.raises(AgentAuthFailed, match="not the one pinned"):
        await server.registry.wait_for_agent(opened.session_id, 10)
    outcome = await opened.outcome()
    assert outcome.close_reason == "error"
    assert outcome.started_at is not None


# limits and closing


async def test_max_duration_closes_the_tunnel_on_time(
    server: TunnelEndpoint, device: Device
) -> None:
    policy = SitePolicy(max_duration_s=1.0, idle_timeout_s=60)
    opened = start_session(server, device, policy)
    connection = await server.registry.wait_for_agent(opened.session_id, 10)
    opened_at = time.monotonic()
    keep_busy = asyncio.create_task(_keep_busy(connection))
    reason = await asyncio.wait_for(connection.wait_closed(), 5)
    elapsed = time.monotonic() - opened_at
    keep_busy.cancel()
    assert reason == "max_duration"
    assert elapsed < 1.0 + 2.0
    outcome = await opened.outcome()
    assert outcome.close_reason == "max_duration"
    assert server.registry.get(opened.session_id) is None


async def test_idle_timeout_closes_a_quiet_tunnel_on_time(
    server: TunnelEndpoint, device: Device
) -> None:
    policy = SitePolicy(idle_timeout_s=1.0)
    opened = start_session(server, device, policy)
    connection = await server.registry.wait_for_agent(opened.session_id, 10)
    await connection.run("true")
    quiet_since = time.monotonic()
    reason = await asyncio.wait_for(connection.wait_closed(), 5)
    assert reason == "idle_timeout"
    assert 1.0 <= time.monotonic() - quiet_since < 1.0 + 2.0
    assert (await opened.outcome()).close_reason == "idle_timeout"


async def test_site_end_closes_the_tunnel_and_kills_the_shell(
    server: TunnelEndpoint, device: Device
) -> None:
    opened = start_session(server, device, SitePolicy(login_shell="/bin/sh"))
    connection = await server.registry.wait_for_agent(opened.session_id, 10)
    shell = await connection.open_shell()
    shell.stdin.write(b"echo pid=$$=; sleep 600\n")
    seen = b""
    while (found := re.search(rb"pid=(\d+)=", seen)) is None:
        seen += await asyncio.wait_for(shell.stdout.read(4096), 10)
    shell_pid = int(found.group(1))
    ended_at = time.monotonic()
    opened.agent.end()
    assert await asyncio.wait_for(connection.wait_closed(), 5) == "site_ended"
    outcome = await opened.outcome()
    assert time.monotonic() - ended_at < 2.0
    assert outcome.close_reason == "site_ended"
    with pytest.raises(ProcessLookupError):
        os.kill(shell_pid, 0)


async def test_operator_close_reaches_the_agent_with_byte_counts(
    server: TunnelEndpoint, device: Device
) -> None:
    opened = start_session(server, device, SitePolicy())
    connection = await server.registry.wait_for_agent(opened.session_id, 10)
    await connection.run("echo hi")
    closed_at = time.monotonic()
    await connection.close("operator")
    outcome = await opened.outcome()
    assert time.monotonic() - closed_at < 2.0
    assert outcome.close_reason == "operator"
    assert outcome.bytes_to_server == connection.bytes_from_agent > 0
    assert outcome.bytes_from_server == connection.bytes_to_agent > 0
    with pytest.raises(TunnelError):
        await connection.run("echo too-late")


async def _keep_busy(connection: AgentConnection) -> None:
    with contextlib.suppress(TunnelError):
        while True:
            await connection.run("true")
            await asyncio.sleep(0.1)
