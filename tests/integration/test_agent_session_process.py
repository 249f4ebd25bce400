"""Session processes without a center: the spare's life, a session that cannot dial, a kill."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest

from agent.remote import pipe
from agent.remote.outcome import Refusal
from agent.remote.policy import SitePolicy
from agent.remote.session_process import SessionProcess, SpareProcess
from shared.ids import utcnow

pytestmark = pytest.mark.integration


async def until(predicate: Callable[[], bool], tries: int) -> None:
    """Poll ``predicate`` every 0.05 s, ``tries`` times at most (the caller asserts after)."""
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def silent_endpoint() -> AsyncIterator[int]:
    """A TCP port that accepts and never answers: a session dialing it hangs in its handshake."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for writer in held:
            writer.close()
        server.close()


def start_for(port: int, tmp_path: Path, **changes: object) -> pipe.StartSession:
    key = asyncssh.generate_private_key("ssh-ed25519")
    host_key = tmp_path / "host_key"
    host_key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    fields: dict[str, object] = {
        "session_id": "ses-proc-1",
        "ws_url": f"ws://127.0.0.1:{port}/api/v1/tunnel/ses-proc-1",
        "token": "t" * 32,
        "client_key": key.export_public_key().decode().strip(),
        "expires_at": utcnow() + timedelta(minutes=5),
        "policy": SitePolicy(),
        "host_key_path": host_key,
        "proxy": None,
        "connect_timeout_s": 60.0,
        **changes,
    }
    return pipe.StartSession(**fields)  # type: ignore[arg-type]


async def test_a_killed_session_process_ends_its_session_with_a_reason(
    silent_endpoint: int, tmp_path: Path
) -> None:
    refusals: list[Refusal] = []
    session = SessionProcess(
        start_for(silent_endpoint, tmp_path), on_refusal=refusals.append, on_ready=lambda: None
    )
    running = asyncio.create_task(session.run())
    await until(lambda: session.pid is not None, tries=200)
    pid = session.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    outcome = await asyncio.wait_for(running, 30)
    assert outcome.close_reason == "error"
    assert outcome.detail == "the session process was killed (SIGKILL) before it reported"
    assert not alive(pid)
    assert session.pid is None


async def test_ending_a_session_while_it_dials_reports_the_reason_and_the_process_goes(
    silent_endpoint: int, tmp_path: Path
) -> None:
    session = SessionProcess(
        start_for(silent_endpoint, tmp_path), on_refusal=lambda _: None, on_ready=lambda: None
    )
    running = asyncio.create_task(session.run())
    await until(lambda: session.pid is not None, tries=200)
    pid = session.pid
    assert pid is not None
    session.end("site_ended")
    outcome = await asyncio.wait_for(running, 30)
    assert (outcome.close_reason, outcome.detail) == (
        "site_ended",
        "ended before the tunnel opened",
    )
    assert not alive(pid)


async def test_a_session_that_cannot_dial_says_why(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = SessionProcess(
        start_for(port, tmp_path, connect_timeout_s=5.0),
        on_refusal=lambda _: None,
        on_ready=lambda: None,
    )
    outcome = await asyncio.wait_for(session.run(), 30)
    assert outcome.close_reason == "agent_unreachable"
    assert session.pid is None


async def test_a_replayed_key_is_refused_in_the_next_session_process(tmp_path: Path) -> None:
    ledger = pipe.KeyLedger()
    start = start_for(1, tmp_path)
    fingerprint = pipe.key_fingerprint(start.client_key)
    assert fingerprint is not None
    ledger.claim(fingerprint, start.expires_at)
    refusals: list[Refusal] = []
    session = SessionProcess(
        start, on_refusal=refusals.append, on_ready=lambda: None, ledger=ledger
    )
    outcome = await asyncio.wait_for(session.run(), 30)
    assert (outcome.close_reason, outcome.detail) == ("error", "session key already used")
    assert [(r.kind, r.reason) for r in refusals] == [("auth", "session key already used")]


async def test_a_spare_waits_for_its_linger_then_goes(tmp_path: Path) -> None:
    spare = SpareProcess(linger_s=0.5)
    spare.refill("warning")
    await until(lambda: spare.pid is not None, tries=400)
    pid = spare.pid
    assert pid is not None
    await until(lambda: not alive(pid), tries=400)
    assert not alive(pid)
    assert spare.pid is None
    assert spare.take() is None


async def test_a_taken_spare_serves_the_session_and_close_leaves_nothing(
    silent_endpoint: int, tmp_path: Path
) -> None:
    spare = SpareProcess(linger_s=60)
    spare.refill("warning")
    await until(lambda: spare.pid is not None, tries=400)
    waiting = spare.pid
    assert waiting is not None
    session = SessionProcess(
        start_for(silent_endpoint, tmp_path),
        on_refusal=lambda _: None,
        on_ready=lambda: None,
        spare=spare,
    )
    running = asyncio.create_task(session.run())
    await until(lambda: session.pid is not None, tries=200)
    assert session.pid == waiting
    session.end("operator")
    await asyncio.wait_for(running, 30)
    assert not alive(waiting)
    await spare.close()  # the refill after the session, too
    assert spare.pid is None
