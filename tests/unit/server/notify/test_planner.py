"""From producers' events to outbox rows: the debounce, the quiet period, the producers.

On a real SQLite database (the schema migrated); the ingest's own store writes the
events of a real batch, the sweep those of silent devices.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server.config import ServerSettings
from server.db import create_schema, make_engine
from server.ingest import maintenance
from server.ingest.items import SampleItem
from server.ingest.store import IngestStore
from server.models import Device
from server.models.notify import NotifyEvent, NotifyOutbox, NotifyState
from server.notify.events import consent_event, fault_event, online_event, write_events
from server.notify.planner import plan
from server.notify.rules import NotifyRule
from server.sessions import repository
from shared.ids import utcnow
from shared.models import Fault
from tests.fixtures.ingest import sample
from tests.fixtures.session_rows import DEVICE_ID, add_session

NOW = utcnow()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fieldlink.db'}")
    create_schema(engine)
    with Session(engine) as db:
        db.add(Device(id="ct-1", serial="S1", model="CT", type="imaging", customer="Sakura"))
        db.add(Device(id="mfp-1", serial="S2", model="MP", type="mfp", customer="Acme"))
        db.commit()
    yield engine
    engine.dispose()


RULE = NotifyRule(
    name="ops", events=["fault", "offline", "consent"], severity="error", email_to=["a@b.example"]
)
HOOK = NotifyRule(
    name="hook",
    events=["fault"],
    device_types=["imaging"],
    webhook_url="https://hooks.example/x",
    secret_file=Path("/nonexistent"),
)


def _fault(opened: bool, code: str = "SC-541", device: str = "ct-1", **kw: Any) -> dict[str, Any]:
    return fault_event(
        device,
        code=code,
        metric=None,
        severity=kw.get("severity", "error"),
        message="fuser" if opened else "cleared",
        at=NOW,
        opened=opened,
    )


def _write(engine: Engine, *events: dict[str, Any]) -> None:
    with engine.begin() as conn:
        write_events(conn, list(events))


def _outbox(engine: Engine) -> list[tuple[str, str, str, str]]:
    with Session(engine) as db:
        rows = db.exec(select(NotifyOutbox).order_by(col(NotifyOutbox.id))).all()
        return [(r.rule, r.channel, r.payload["state"], r.status) for r in rows]


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_a_fault_is_told_once_while_it_stays_open_and_once_resolved(engine: Engine) -> None:
    _write(engine, _fault(True))
    plan(engine, [RULE, HOOK], NOW)
    assert _outbox(engine) == [
        ("ops", "email", "problem", "queued"),
        ("hook", "webhook", "problem", "queued"),
    ]
    # Raised again (a repeat, another server, an agent restart): nothing new.
    _write(engine, _fault(True), _fault(True))
    result = plan(engine, [RULE, HOOK], NOW)
    assert result.debounced == 4
    assert len(_outbox(engine)) == 2
    _write(engine, _fault(False))
    plan(engine, [RULE, HOOK], NOW)
    assert _outbox(engine)[2:] == [
        ("ops", "email", "resolved", "queued"),
        ("hook", "webhook", "resolved", "queued"),
    ]
    # Cleared again: nothing (its resolution was told); raised again later: told again.
    _write(engine, _fault(False))
    plan(engine, [RULE, HOOK], NOW)
    assert len(_outbox(engine)) == 4
    _write(engine, _fault(True))
    plan(engine, [RULE, HOOK], NOW)
    assert len(_outbox(engine)) == 6
    assert _count(engine, NotifyEvent.__table__) == 0  # type: ignore[attr-defined]


def test_the_debounce_is_per_device_and_code_and_rules_filter(engine: Engine) -> None:
    _write(
        engine,
        _fault(True, code="A"),
        _fault(True, code="B"),
        _fault(True, code="A", device="mfp-1"),
        _fault(True, code="W", severity="warning"),  # below the rules' least severity
    )
    plan(engine, [RULE, HOOK], NOW)
    rules = [row[0] for row in _outbox(engine)]
    # ops (error and above): A and B on ct-1, A on mfp-1; hook (warning and above, the
    # default): imaging only, A, B and W on ct-1.
    assert sorted(rules) == ["hook", "hook", "hook", "ops", "ops", "ops"]


def test_a_resolution_of_an_untold_problem_is_not_sent(engine: Engine) -> None:
    _write(engine, _fault(False))
    plan(engine, [RULE], NOW)
    assert _outbox(engine) == []


def test_offline_then_online_and_a_session_awaiting_consent(engine: Engine) -> None:
    _write(
        engine,
        online_event("mfp-1", online=False, reason="silent", at=NOW),
        online_event("mfp-1", online=False, reason="silent", at=NOW),
        online_event("mfp-1", online=True, reason="birth", at=NOW),
        consent_event("mfp-1", session_id="s-1", operator="olga", reason="jam", at=NOW),
    )
    plan(engine, [RULE], NOW)
    assert [row[2] for row in _outbox(engine)] == ["problem", "resolved", "event"]


def test_a_problem_resolved_within_the_quiet_period_is_never_told(engine: Engine) -> None:
    quiet = RULE.model_copy(update={"hold_s": 60.0})
    _write(engine, online_event("mfp-1", online=False, reason="connection_lost", at=NOW))
    plan(engine, [quiet], NOW)
    assert _outbox(engine) == [("ops", "email", "problem", "queued")]
    _write(engine, online_event("mfp-1", online=True, reason="birth", at=NOW))
    result = plan(engine, [quiet], NOW + timedelta(seconds=10))
    assert result.cancelled == 1
    assert _outbox(engine) == [("ops", "email", "problem", "cancelled")]
    # Both within one round: neither is queued.
    _write(
        engine,
        online_event("mfp-1", online=False, reason="connection_lost", at=NOW),
        online_event("mfp-1", online=True, reason="birth", at=NOW),
    )
    plan(engine, [quiet], NOW + timedelta(seconds=20))
    assert len(_outbox(engine)) == 1
    assert _count(engine, NotifyState.__table__) == 0  # type: ignore[attr-defined]


def test_events_nobody_listens_to_are_dropped(engine: Engine) -> None:
    _write(engine, _fault(True))
    plan(engine, [], NOW)
    assert _count(engine, NotifyEvent.__table__) == 0  # type: ignore[attr-defined]
    assert _outbox(engine) == []


def test_the_ingest_batch_writes_the_events_of_a_fault_raised_and_cleared(engine: Engine) -> None:
    store = IngestStore(engine, ServerSettings(database_url=str(engine.url)))
    jam = Fault(code="SC-541", severity="error", message="paper jam")
    now = utcnow()
    store.write([SampleItem("mfp-1", sample("mfp-1", 0, faults=[jam]), now)])
    store.write([SampleItem("mfp-1", sample("mfp-1", 1, faults=[jam]), now)])  # still open
    store.write([SampleItem("mfp-1", sample("mfp-1", 2), now)])
    store.close()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(NotifyEvent.kind, NotifyEvent.state, NotifyEvent.subject).order_by(
                NotifyEvent.id  # type: ignore[arg-type]
            )
        ).all()
    # Online (its first sample), the fault opened once, then cleared.
    assert [tuple(r) for r in rows] == [
        ("offline", "resolved", "offline"),
        ("fault", "problem", "fault:SC-541"),
        ("fault", "resolved", "fault:SC-541"),
    ]


def test_the_sweep_writes_an_offline_event_per_silent_device(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(Device.__table__).values(  # type: ignore[attr-defined]
                online=True, last_seen=NOW - timedelta(minutes=10)
            )
        )
    silent = maintenance.mark_silent(engine, 90.0, NOW)
    assert sorted(silent) == ["ct-1", "mfp-1"]
    plan(engine, [RULE], NOW)
    assert [row[2] for row in _outbox(engine)] == ["problem", "problem"]


def test_a_session_moving_to_awaiting_consent_writes_one_consent_event(engine: Engine) -> None:
    sid = add_session(engine, state="requested", operator="olga")
    with Session(engine) as db:
        repository.advance_state(db, sid, "awaiting_consent")
        repository.advance_state(db, sid, "awaiting_consent")  # no move: no second event
        repository.advance_state(db, sid, "connecting")
    plan(engine, [RULE], NOW)
    with Session(engine) as db:
        [row] = db.exec(select(NotifyOutbox)).all()
    assert (row.device_id, row.subject, row.payload["kind"]) == (
        DEVICE_ID,
        f"session:{sid}",
        "consent",
    )
    assert row.payload["details"]["operator"] == "olga"
    assert row.payload["details"]["reason"] == "jam"


def test_a_device_in_a_maintenance_window_tells_nobody_of_its_faults(engine: Engine) -> None:
    from server.models import MaintenanceWindow

    with Session(engine) as db:
        db.add(
            MaintenanceWindow(
                device_id="ct-1",
                starts_at=NOW - timedelta(minutes=5),
                duration_minutes=60,
                created_by="olga",
            )
        )
        db.commit()
    _write(engine, _fault(True), _fault(True, device="mfp-1"))
    result = plan(engine, [RULE], NOW)
    assert result.in_maintenance == 1
    assert [row[2] for row in _outbox(engine)] == ["problem"]  # mfp-1's only
    _write(engine, _fault(False))  # its clearing: nothing to resolve
    plan(engine, [RULE], NOW)
    assert len(_outbox(engine)) == 1
    # After the window the same fault is told.
    later = fault_event(
        "ct-1", code="SC-541", metric=None, severity="error", message="fuser",
        at=NOW + timedelta(hours=2), opened=True,
    )  # fmt: skip
    _write(engine, later)
    plan(engine, [RULE], NOW + timedelta(hours=2))
    assert len(_outbox(engine)) == 2
