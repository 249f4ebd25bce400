"""The remote session's state machine: forward only, nothing leaves closed."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest

from server.sessions.states import (
    CLOSE_REASONS,
    SESSION_STATES,
    LiveSession,
    can_move,
    earlier_than,
    move_on_event,
    refusal_reason,
)
from shared import wire
from shared.ids import utcnow


def test_states_only_move_forward() -> None:
    for (i, current), (j, target) in itertools.product(enumerate(SESSION_STATES), repeat=2):
        assert can_move(current, target) is (j > i), (current, target)
    assert earlier_than("connecting") == ["requested", "awaiting_consent"]
    assert earlier_than("requested") == []


def test_close_reasons_include_the_servers_own() -> None:
    assert {"server_restart", "access_revoked", "operator", "error"} <= set(CLOSE_REASONS)


@pytest.mark.parametrize(
    ("current", "event", "target"),
    [
        ("requested", wire.SESSION_AWAITING_CONSENT, "awaiting_consent"),
        ("connecting", wire.SESSION_AWAITING_CONSENT, None),
        ("awaiting_consent", wire.SESSION_APPROVED, "connecting"),
        # Approved after the tunnel is up: an active session never goes back.
        ("active", wire.SESSION_APPROVED, None),
        ("awaiting_consent", wire.SESSION_DENIED, "closed"),
        ("active", wire.SESSION_DENIED, None),
        ("closed", wire.SESSION_DENIED, None),
        ("closed", wire.SESSION_APPROVED, None),
        ("requested", "session.unheard_of", None),
    ],
)
def test_agent_events_move_a_session_as_the_machine_allows(
    current: str, event: str, target: str | None
) -> None:
    assert move_on_event(current, event) == target


def test_a_refused_open_is_the_sites_refusal_or_an_error() -> None:
    assert refusal_reason("site_denied") == "site_denied"
    assert refusal_reason("not_allowed") == "site_denied"
    assert refusal_reason("busy") == "error"


def test_a_live_session_wakes_waiters_per_move_and_on_close_only_once_written() -> None:
    async def scenario() -> None:
        live = LiveSession("ses-1", "mfp-1", "olga", 60.0, utcnow() + timedelta(minutes=1))
        first = live.changed
        assert live.move("connecting")
        assert first.is_set()
        assert not live.move("awaiting_consent")  # backwards: refused
        assert live.state == "connecting"
        waiting = live.changed
        assert live.move("closed")
        # The closed row is not written yet: waiters still sleep (they read its reason).
        assert not waiting.is_set()
        assert not live.move("active")
        live.mark_closed()
        assert waiting.is_set()
        assert live.closed.is_set()

    asyncio.run(scenario())


def test_the_servers_cap_follows_the_agents_shorter_limit() -> None:
    """A site approved a session for 10 minutes of the 4 hours asked: the agent says so
    in ``session.started``; the server's own cap moves to it (a few seconds later, so the
    agent's close and its report come first), even after the session became active."""
    from datetime import UTC, datetime

    from server.sessions.states import CAP_GRACE_S, LiveSession

    async def run() -> None:
        live = LiveSession("ses-1", "mfp-1", "olga", 4 * 3600.0, datetime.now(UTC))
        assert live.cap_s() == 4 * 3600.0
        for ignored in (None, "600", True, 0, -5, 5 * 3600):
            assert live.cap(ignored) is False
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(live.cap_s()) as deadline:
            live.deadline, live.active_at = deadline, loop.time()
            assert live.cap(600) is True
            when = deadline.when()
            assert when is not None
            assert abs(when - (live.active_at + 600 + CAP_GRACE_S)) < 1e-6
            await asyncio.sleep(0)
        assert live.cap_s() == 600 + CAP_GRACE_S
        assert live.cap(900) is False  # never longer again

    asyncio.run(run())
