"""Server liveness: heartbeats, the judgement "dead", and the sweep of dead servers' sessions.

The watch's clock is driven by the test (no wall-clock thresholds); the database is real
(SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server import audit
from server.models import AuditEntry, RemoteSession, ServerInstance
from server.sessions.liveness import InstanceLiveness, close_sessions
from tests.fixtures.session_rows import add_device, add_session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """A migrated database with the device the sessions belong to."""
    add_device(db_engine)
    return db_engine


def _session(engine: Engine, instance: str, state: str = "active") -> str:
    return add_session(engine, state=state, instance=instance)


def _row(engine: Engine, sid: str) -> RemoteSession:
    with Session(engine) as db:
        row = db.get(RemoteSession, sid)
        assert row is not None
        return row


def _closes(engine: Engine, sid: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``session.close`` entries of a session: (actor, details)."""
    with Session(engine) as db:
        entries = db.exec(select(AuditEntry).where(AuditEntry.action == "session.close")).all()
    found = [(e.actor, json.loads(e.details)) for e in entries]
    return [(actor, details) for actor, details in found if details.get("session_id") == sid]


def _watch(engine: Engine, instance: str, clock: Clock) -> InstanceLiveness:
    return InstanceLiveness(engine, instance, heartbeat_s=1.0, dead_after_s=10.0, clock=clock)


def _beat(engine: Engine, watch: InstanceLiveness) -> None:
    with Session(engine) as db:
        watch.beat(db)


def _sweep(engine: Engine, watch: InstanceLiveness) -> list[str]:
    with Session(engine) as db:
        return watch.sweep(db)


def test_a_dead_instances_sessions_are_closed_once_and_audited(engine: Engine) -> None:
    clock = Clock()
    alive, dead = _watch(engine, "alive", clock), _watch(engine, "dead", clock)
    _beat(engine, alive)
    _beat(engine, dead)
    ghost = _session(engine, "dead")
    own = _session(engine, "alive")
    assert _sweep(engine, alive) == []  # first look: the window starts
    clock.now += 9.9
    assert _sweep(engine, alive) == []  # not yet
    clock.now += 0.1
    assert _sweep(engine, alive) == [ghost]
    row = _row(engine, ghost)
    assert (row.state, row.close_reason) == ("closed", "server_restart")
    assert row.ended_at is not None
    assert "dead" in (row.detail or "")
    [(actor, details)] = _closes(engine, ghost)
    assert actor == "olga"
    assert details["close_reason"] == "server_restart"
    assert details["instance"] == "dead"
    assert details["closed_by"] == "alive"
    assert _row(engine, own).state == "active"  # its own sessions are never swept
    with Session(engine) as db:
        assert db.get(ServerInstance, "dead") is None
        assert db.get(ServerInstance, "alive") is not None
        assert audit.verify(db).intact
    clock.now += 100
    assert _sweep(engine, alive) == []
    assert len(_closes(engine, ghost)) == 1


def test_a_heartbeat_that_moves_keeps_an_instance_alive(engine: Engine) -> None:
    clock = Clock()
    watcher, busy = _watch(engine, "watcher", clock), _watch(engine, "busy", clock)
    _beat(engine, busy)
    sid = _session(engine, "busy")
    _sweep(engine, watcher)
    for _ in range(5):
        clock.now += 9.0
        _beat(engine, busy)
        assert _sweep(engine, watcher) == []
    assert _row(engine, sid).state == "active"
    with Session(engine) as db:
        gone, why = watcher.holder_state(db, "busy")
    assert not gone
    assert "last heartbeat" in why


def test_a_watcher_that_lost_the_database_watches_again_from_scratch(engine: Engine) -> None:
    """After an outage nobody's heartbeat moved: the window restarts, no one is swept."""
    clock = Clock()
    watcher, other = _watch(engine, "watcher", clock), _watch(engine, "other", clock)
    _beat(engine, other)
    sid = _session(engine, "other")
    _sweep(engine, watcher)
    watcher._seen.clear()  # what the loop does when a round fails
    clock.now += 60
    assert _sweep(engine, watcher) == []
    _beat(engine, other)
    clock.now += 9
    assert _sweep(engine, watcher) == []
    assert _row(engine, sid).state == "active"


def test_sessions_of_an_instance_without_a_row_are_swept(engine: Engine) -> None:
    clock = Clock()
    watcher = _watch(engine, "watcher", clock)
    legacy = _session(engine, "")  # a session from before the liveness table
    orphan = _session(engine, "vanished", state="awaiting_consent")
    with Session(engine) as db:
        gone, why = watcher.holder_state(db, "vanished")
    assert gone
    assert "gone" in why
    _sweep(engine, watcher)
    clock.now += 10
    assert sorted(_sweep(engine, watcher)) == sorted([legacy, orphan])
    assert _row(engine, orphan).close_reason == "server_restart"


def test_two_watchers_close_a_session_once(engine: Engine) -> None:
    clock = Clock()
    a, b = _watch(engine, "a", clock), _watch(engine, "b", clock)
    sid = _session(engine, "crashed")
    _sweep(engine, a)
    _sweep(engine, b)
    clock.now += 10
    assert _sweep(engine, a) == [sid]
    assert _sweep(engine, b) == []
    with Session(engine) as db:
        assert close_sessions(db, instance="crashed", reason="x", detail="", closed_by="c") == []
    assert len(_closes(engine, sid)) == 1


async def test_start_closes_what_this_instance_id_left_and_stop_removes_its_row(
    engine: Engine,
) -> None:
    left = _session(engine, "center-1")
    closed_earlier = _session(engine, "center-1", state="closed")
    watch = InstanceLiveness(engine, "center-1", heartbeat_s=3600, dead_after_s=7200)
    await watch.start()
    try:
        row = _row(engine, left)
        assert (row.state, row.close_reason) == ("closed", "server_restart")
        assert len(_closes(engine, left)) == 1
        assert _closes(engine, closed_earlier) == []
        with Session(engine) as db:
            assert db.get(ServerInstance, "center-1") is not None
    finally:
        await watch.stop()
    with Session(engine) as db:
        assert db.get(ServerInstance, "center-1") is None


def test_an_instance_notices_it_was_judged_dead(engine: Engine) -> None:
    """A stalled server finds its row gone: its tunnels must end (the records are closed)."""
    clock = Clock()
    stalled, other = _watch(engine, "stalled", clock), _watch(engine, "other", clock)
    with Session(engine) as db:
        assert stalled.beat(db) is False  # the first beat creates the row
        assert stalled.beat(db) is False
    sid = _session(engine, "stalled")
    _sweep(engine, other)
    clock.now += 10
    assert _sweep(engine, other) == [sid]
    with Session(engine) as db:
        assert stalled.beat(db) is True  # its row was removed: it was judged dead
        assert stalled.beat(db) is False
        assert db.get(ServerInstance, "stalled") is not None
