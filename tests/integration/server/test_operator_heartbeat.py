"""A session whose operator's client stopped beating is closed by its holder (``operator_gone``).

On SQLite and PostgreSQL: the rows are real, the clock is moved, and the
session service is a stand-in that records what it was asked to close (closing
a live tunnel is the integration tests' part, ``tests/integration/test_session_cli.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.models import DeviceCreate, RemoteSession
from server.sessions.heartbeat import OPERATOR_GONE, OperatorHeartbeat, beat, keep_alive
from shared.ids import utcnow
from shared.wire import AGENT_CLOSE_REASONS, CLOSE_REASONS

NOW = utcnow()


@dataclass
class Holder:
    """What the job needs of :class:`~server.sessions.service.SessionService`."""

    engine: Engine
    instance: str
    closed: list[tuple[str, str, str]] = field(default_factory=list)

    async def close(self, session_id: str, *, reason: str, actor: str, detail: str) -> None:
        self.closed.append((session_id, reason, actor))
        assert detail


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated database of ``db_engine`` (SQLite, then PostgreSQL) with this module's
    devices."""
    with Session(db_engine) as db:
        crud.create_device(
            db, data=DeviceCreate(id="mfp-1", serial="S1", model="M", type="mfp", customer="A")
        )
    return db_engine


def _session(engine: Engine, session_id: str, *, instance: str = "center-1", state: str = "active",
             seen: datetime | None = None) -> None:  # fmt: skip
    with Session(engine) as db:
        db.add(
            RemoteSession(
                id=session_id,
                device_id="mfp-1",
                operator="olga",
                reason="jam",
                state=state,
                instance=instance,
                expires_at=NOW + timedelta(hours=1),
                operator_seen_at=seen,
            )
        )
        db.commit()


def _job(
    engine: Engine, now: datetime, timeout_s: float = 60.0
) -> tuple[OperatorHeartbeat, Holder]:
    holder = Holder(engine, "center-1")
    return OperatorHeartbeat(cast("Any", holder), timeout_s, clock=lambda: now), holder


async def test_only_a_silent_kept_alive_session_of_this_holder_is_closed(engine: Engine) -> None:
    old = NOW - timedelta(seconds=61)
    _session(engine, "ses-silent", seen=old)
    _session(engine, "ses-beating", seen=NOW - timedelta(seconds=10))
    _session(engine, "ses-console", seen=None)  # nobody promised beats: never closed for it
    _session(engine, "ses-elsewhere", seen=old, instance="center-2")  # its holder's to close
    _session(engine, "ses-closed", seen=old, state="closed")
    job, holder = _job(engine, NOW)
    assert await job.sweep() == ["ses-silent"]
    assert holder.closed == [("ses-silent", OPERATOR_GONE, "server")]
    assert job.interval_s == 15.0
    assert OperatorHeartbeat(cast("Any", holder), 6.0).interval_s == 2.0


async def test_a_beat_keeps_it_open_and_a_closed_session_takes_no_beat(engine: Engine) -> None:
    _session(engine, "ses-1", seen=None)
    with Session(engine) as db:
        keep_alive(db, "ses-1", NOW - timedelta(seconds=120))
    job, holder = _job(engine, NOW)
    with Session(engine) as db:
        assert beat(db, "ses-1", NOW - timedelta(seconds=5)) is True
    assert await job.sweep() == []
    later, _ = _job(engine, NOW + timedelta(seconds=60))
    assert await later.sweep() == ["ses-1"]
    _session(engine, "ses-2", state="closed")
    with Session(engine) as db:
        assert beat(db, "ses-2", NOW) is False
        row = db.get(RemoteSession, "ses-2")
        assert row is not None
        assert row.operator_seen_at is None
    assert holder.closed == []


def test_operator_gone_is_the_servers_reason_only() -> None:
    assert OPERATOR_GONE in CLOSE_REASONS
    assert OPERATOR_GONE not in AGENT_CLOSE_REASONS
