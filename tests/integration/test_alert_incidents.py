"""Device faults open incidents (issue 14), on SQLite and PostgreSQL.

The ingest's batch writer (:class:`IngestStore`) with ``[server.kpi]
alerts_open_incidents`` on: an error fault opens one incident at the fault's
time on the server's clock, a repeat or a second process adds none, a cleared
fault proposes the restore time. The end-to-end run with a real agent is in
tests/integration/test_alert_incidents_e2e.py.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server.config import ServerSettings
from server.db import create_schema, make_engine
from server.ingest.incidents import apply_fault_incidents
from server.ingest.items import EventItem, IngestItem, SampleItem
from server.ingest.store import IngestStore
from server.kpi.config import KpiSettings
from server.models import Device, Incident
from shared.models import DeviceEvent, Fault, HealthSample

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _now() -> None:
    """``NOW`` is each test's start: the ingest trusts recent samples only, and a suite
    collected long before a test runs (xdist, a long run) would make them old."""
    global NOW  # the helpers below read the module's NOW
    NOW = datetime.now(UTC).replace(microsecond=0)


FUSER = Fault(code="SC-541", severity="critical", message="Fuser thermistor open")


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated database of ``db_engine`` (SQLite, then PostgreSQL) with this module's
    devices."""
    with Session(db_engine) as db:
        for device_id in ("mfp-a", "mfp-b"):
            db.add(Device(id=device_id, serial=device_id, model="C3000", type="mfp", customer="A"))
        db.commit()
    return db_engine


def settings_for(engine: Engine, on: bool = True) -> ServerSettings:
    return ServerSettings(
        database_url=engine.url.render_as_string(hide_password=False),
        kpi=KpiSettings(alerts_open_incidents=on),
    )


def sample_item(
    device_id: str, seq: int, faults: list[Fault], *, ahead_s: float = 0.0, age_s: float = 0.0
) -> SampleItem:
    """A sample received at ``NOW + seq`` s from a device whose clock is ``ahead_s`` ahead.

    The sample was taken ``age_s`` seconds (device time) before it was sent.
    """
    received = NOW + timedelta(seconds=seq)
    sent = received + timedelta(seconds=ahead_s)
    sample = HealthSample(
        device_id=device_id,
        boot_id="boot-1",
        seq=seq,
        ts=sent - timedelta(seconds=age_s),
        sent_at=sent,
        status="fault" if faults else "ok",
        metrics={"cpu_percent": 3.0},
        faults=faults,
    )
    return SampleItem(device_id, sample, received)


def incidents(engine: Engine) -> list[Incident]:
    with Session(engine) as db:
        return list(db.exec(select(Incident).order_by(col(Incident.id))).all())


def write(store: IngestStore, *items: IngestItem) -> None:
    store.write(list(items))


def test_an_error_fault_opens_one_incident_at_its_time_and_its_clearing_is_proposed(
    engine: Engine,
) -> None:
    store = IngestStore(engine, settings_for(engine))
    try:
        # The device's clock is 10 min ahead; the fault was seen 30 s before sending.
        write(store, sample_item("mfp-a", 0, [FUSER], ahead_s=600, age_s=30))
        [incident] = incidents(engine)
        assert incident.channel == "alert"
        assert incident.error_code == "SC-541"
        assert incident.symptom == "Fuser thermistor open"
        assert incident.device_type == "mfp"
        assert incident.down_at == NOW - timedelta(seconds=30)
        assert incident.opened_at == incident.down_at
        assert incident.closed_at is None
        assert incident.restored_at_proposed is None
        # The same fault in the next samples and batches: still one incident.
        write(store, sample_item("mfp-a", 1, [FUSER], ahead_s=600))
        write(store, sample_item("mfp-a", 2, [FUSER], ahead_s=600))
        assert len(incidents(engine)) == 1
        # Cleared: the clearing time (device clock corrected) is proposed, not applied.
        write(store, sample_item("mfp-a", 3, [], ahead_s=600, age_s=5))
        [incident] = incidents(engine)
        assert incident.restored_at_proposed == NOW + timedelta(seconds=3 - 5)
        assert incident.restored_at is None
        assert incident.closed_at is None
        # Raised again before anyone closed it: the same incident, the proposal withdrawn.
        write(store, sample_item("mfp-a", 4, [FUSER], ahead_s=600))
        [incident] = incidents(engine)
        assert incident.restored_at_proposed is None
    finally:
        store.close()


def test_a_fault_raised_and_cleared_by_events_in_one_batch(engine: Engine) -> None:
    store = IngestStore(engine, settings_for(engine))
    try:
        body = FUSER.model_dump()
        raised = DeviceEvent(device_id="mfp-b", ts=NOW, type="fault.raised", body=body)
        cleared = DeviceEvent(
            device_id="mfp-b", ts=NOW + timedelta(seconds=20), type="fault.cleared", body=body
        )
        later = NOW + timedelta(seconds=30)
        write(store, EventItem("mfp-b", raised, later), EventItem("mfp-b", cleared, later))
        [incident] = incidents(engine)
        assert incident.down_at == NOW
        assert incident.restored_at_proposed == NOW + timedelta(seconds=20)
    finally:
        store.close()


def test_warnings_rules_and_the_setting_off_open_none(engine: Engine) -> None:
    warning = Fault(code="TONER-LOW-BLACK", severity="warning", message="Black toner low")
    on = IngestStore(engine, settings_for(engine))
    off = IngestStore(engine, settings_for(engine, on=False))
    try:
        write(on, sample_item("mfp-a", 0, [warning]))
        write(off, sample_item("mfp-b", 0, [FUSER]))
        assert incidents(engine) == []
    finally:
        on.close()
        off.close()


def test_a_closed_incident_lets_the_next_fault_open_a_new_one(engine: Engine) -> None:
    store = IngestStore(engine, settings_for(engine))
    try:
        write(store, sample_item("mfp-a", 0, [FUSER]))
        write(store, sample_item("mfp-a", 1, []))
        with Session(engine) as db:
            first = db.exec(select(Incident)).one()
            first.closed_at = first.restored_at = first.restored_at_proposed
            first.resolution = "remote"
            db.add(first)
            db.commit()
        write(store, sample_item("mfp-a", 2, [FUSER]))
        found = incidents(engine)
        assert len(found) == 2
        assert found[1].closed_at is None
        assert found[1].down_at == NOW + timedelta(seconds=2)
    finally:
        store.close()


def _opened_row(device_id: str, at: datetime) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "source": "device",
        "code": FUSER.code,
        "metric": None,
        "severity": "critical",
        "message": FUSER.message,
        "raised_at": at,
        "cleared_at": None,
        "open": True,
    }


def test_two_processes_opening_the_same_fault_make_one_incident(database_url: str) -> None:
    """Two engines (as two server processes) insert the same fault's incident."""
    engines = [make_engine(database_url) for _ in range(2)]
    try:
        create_schema(engines[0])
        with Session(engines[0]) as db:
            db.add(Device(id="mfp-a", serial="a", model="C3000", type="mfp", customer="A"))
            db.commit()
        for i, engine in enumerate(engines):
            with engine.begin() as conn:
                apply_fault_incidents(conn, [_opened_row("mfp-a", NOW + timedelta(seconds=i))], [])
        [incident] = incidents(engines[0])
        assert incident.down_at == NOW
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.postgres
def test_concurrent_inserts_wait_on_the_unique_index_and_make_one_incident(
    postgres_url: str,
) -> None:
    """PostgreSQL: the second insert blocks on the first's uncommitted row, then yields."""
    first_engine, second_engine = make_engine(postgres_url), make_engine(postgres_url)
    try:
        create_schema(first_engine)
        with Session(first_engine) as db:
            db.add(Device(id="mfp-a", serial="a", model="C3000", type="mfp", customer="A"))
            db.commit()
        errors: list[BaseException] = []
        with first_engine.connect() as first:
            tx = first.begin()
            apply_fault_incidents(first, [_opened_row("mfp-a", NOW)], [])

            def second() -> None:
                try:
                    with second_engine.begin() as conn:
                        later = NOW + timedelta(seconds=1)
                        apply_fault_incidents(conn, [_opened_row("mfp-a", later)], [])
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=second)
            thread.start()
            # Wait until the second insert is blocked on the first's row lock.
            with first_engine.connect() as watcher:
                for _ in range(2000):
                    waiting = watcher.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                        )
                    ).scalar_one()
                    # pg_stat_activity is a snapshot taken once per transaction: end it, or
                    # every later poll reads the first one (and never sees the wait).
                    watcher.rollback()
                    if waiting:
                        break
                    threading.Event().wait(0.01)
                assert waiting == 1, errors
            tx.commit()
            thread.join(30)
        assert not thread.is_alive()
        assert errors == []
        [incident] = incidents(first_engine)
        assert incident.down_at == NOW
    finally:
        first_engine.dispose()
        second_engine.dispose()
