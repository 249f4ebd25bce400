"""One-time keys, session tokens and the registry of sessions waiting for their agent."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncssh
import pytest

from server.sessions.errors import AgentNotConnected
from server.sessions.keys import (
    generate_one_time_key,
    hash_session_token,
    parse_host_key,
    session_token_matches,
)
from server.sessions.registry import PendingSession, SessionRegistry
from shared.errors import Conflict, ProtocolError
from shared.ids import utcnow


def test_one_time_keys_are_fresh_ed25519_pairs() -> None:
    first, second = generate_one_time_key(), generate_one_time_key()
    assert first.public_openssh.startswith("ssh-ed25519 ")
    assert first.fingerprint != second.fingerprint
    public = asyncssh.import_public_key(first.public_openssh)
    assert public.public_data == first.private_key.public_data
    assert "PRIVATE" not in first.public_openssh


def test_pinned_host_key_must_be_an_openssh_public_key() -> None:
    key = generate_one_time_key()
    assert parse_host_key(key.public_openssh).public_data == key.private_key.public_data
    with pytest.raises(ProtocolError):
        parse_host_key("ssh-ed25519 not-base64")


def test_session_tokens_are_stored_hashed_and_compared_whole() -> None:
    stored = hash_session_token("token-1")
    assert "token-1" not in stored
    assert session_token_matches("token-1", stored)
    assert not session_token_matches("token-2", stored)
    assert not session_token_matches("", stored)


def _pending(session_id: str, *, expires_in_s: float = 60) -> PendingSession:
    key = generate_one_time_key()
    return PendingSession(
        session_id=session_id,
        token_hash=hash_session_token("right"),
        client_key=key.private_key,
        host_key=parse_host_key(generate_one_time_key().public_openssh),
        expires_at=utcnow() + timedelta(seconds=expires_in_s),
    )


async def test_a_session_is_claimed_once_with_its_token() -> None:
    registry = SessionRegistry()
    registry.expect(_pending("s1"))
    assert registry.claim("s1", "wrong") is None
    assert registry.claim("nope", "right") is None
    claimed = registry.claim("s1", "right")
    assert claimed is not None
    assert claimed.session_id == "s1"
    assert registry.claim("s1", "right") is None  # a second socket is refused


async def test_an_expired_session_cannot_be_claimed_and_its_waiter_is_told() -> None:
    registry = SessionRegistry()
    registry.expect(_pending("s1", expires_in_s=-1))
    waiter = asyncio.create_task(registry.wait_for_agent("s1", 5))
    await asyncio.sleep(0)
    assert registry.claim("s1", "right") is None
    with pytest.raises(AgentNotConnected, match="expired"):
        await waiter


async def test_waiting_for_an_agent_times_out_or_fails_with_the_handshake_error() -> None:
    registry = SessionRegistry()
    registry.expect(_pending("s1"))
    with pytest.raises(AgentNotConnected, match="did not open its tunnel"):
        await registry.wait_for_agent("s1", 0.05)
    registry.failed("s1", AgentNotConnected("handshake failed"))
    with pytest.raises(AgentNotConnected, match="not waiting"):
        await registry.wait_for_agent("s1", 0.05)
    registry.expect(_pending("s2"))
    with pytest.raises(Conflict):
        registry.expect(_pending("s2"))
    registry.discard("s2")
    assert registry.claim("s2", "right") is None
