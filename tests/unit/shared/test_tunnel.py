"""SSH over the message-stream transport: real asyncssh on both sides, each end on its own
transport, joined by in-memory message queues instead of a WebSocket."""

from __future__ import annotations

import asyncio
import hashlib
import os

import asyncssh
import pytest

from shared.tunnel import MessageStreamTransport, TunnelConnector, ws_url


def _message_pipe() -> tuple[MessageStreamTransport, MessageStreamTransport, list[int]]:
    to_server: asyncio.Queue[bytes | None] = asyncio.Queue()
    to_agent: asyncio.Queue[bytes | None] = asyncio.Queue()
    sizes: list[int] = []

    async def agent_send(data: bytes) -> None:
        sizes.append(len(data))
        await to_server.put(data)

    async def server_send(data: bytes) -> None:
        await to_agent.put(data)

    async def agent_close() -> None:
        await to_server.put(None)

    async def server_close() -> None:
        await to_agent.put(None)

    agent = MessageStreamTransport(
        receive=to_agent.get, send=agent_send, close=agent_close, extra={"peername": ("s", 1)}
    )
    server = MessageStreamTransport(
        receive=to_server.get, send=server_send, close=server_close, extra={"peername": ("a", 2)}
    )
    return agent, server, sizes


class _Server(asyncssh.SSHServer):
    def __init__(self, client_key: asyncssh.SSHKey) -> None:
        self._client_key = client_key

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data == self._client_key.public_data


async def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    while data := await process.stdin.read(1 << 16):
        process.stdout.write(data)
    process.exit(0)


async def test_ssh_runs_over_the_adapters_and_counts_bytes() -> None:
    agent_side, server_side, sizes = _message_pipe()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")

    async def serve() -> asyncssh.SSHServerConnection:
        return await asyncssh.connect_reverse(
            tunnel=TunnelConnector(agent_side),
            server_host_keys=[host_key],
            server_factory=lambda: _Server(client_key),
            process_factory=_echo,
            encoding=None,
        )

    serving = asyncio.create_task(serve())
    client = await asyncssh.connect(
        "device",
        tunnel=TunnelConnector(server_side),
        config=None,
        username="fieldlink",
        client_keys=[client_key],
        known_hosts=([host_key.convert_to_public()], [], []),
        agent_path=None,
    )
    server_conn = await serving
    payload = os.urandom(3 * 1024 * 1024)
    result = await client.run(input=payload, encoding=None)
    assert isinstance(result.stdout, bytes)
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(payload).digest()
    # writes were coalesced into messages no larger than the limit
    assert max(sizes) <= 1 << 20
    assert len(sizes) < server_side.bytes_received / 100
    assert agent_side.bytes_sent == server_side.bytes_received > len(payload)
    assert server_side.bytes_sent == agent_side.bytes_received > len(payload)

    client.close()
    await asyncio.wait_for(client.wait_closed(), 5)
    await asyncio.wait_for(server_conn.wait_closed(), 5)
    await asyncio.wait_for(agent_side.wait_closed(), 5)
    await asyncio.wait_for(server_side.wait_closed(), 5)
    assert agent_side.is_closing()


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://center.example", "wss://center.example/api/v1/tunnel/ses-1"),
        ("https://center.example:8443/", "wss://center.example:8443/api/v1/tunnel/ses-1"),
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/api/v1/tunnel/ses-1"),
        ("HTTPS://center.example", "wss://center.example/api/v1/tunnel/ses-1"),
        ("wss://tunnel.example", "wss://tunnel.example/api/v1/tunnel/ses-1"),
        ("https://center.example/fieldlink", "wss://center.example/fieldlink/api/v1/tunnel/ses-1"),
    ],
)
def test_ws_url_maps_http_to_ws(base: str, url: str) -> None:
    assert ws_url(base, "/api/v1/tunnel/ses-1") == url


@pytest.mark.parametrize("base", ["center.example", "ftp://center.example", "https://", ""])
def test_ws_url_refuses_what_is_not_an_http_url(base: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        ws_url(base, "/api/v1/tunnel/ses-1")
