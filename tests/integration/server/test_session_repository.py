"""Session rows and their audit entries: one close, one entry; states never go back; limits."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server import audit
from server.models import AuditEntry, Device, RemoteSession
from server.sessions import repository
from server.sessions.limits import check_limits, open_count
from shared.errors import Conflict, NotFound
from shared.ids import new_id, utcnow
from shared.wire import VIA_SESSIONS
from tests.fixtures.session_rows import add_device, add_session


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """A migrated database with the device the sessions belong to."""
    add_device(db_engine)
    return db_engine


def _session(engine: Engine, state: str = "requested", operator: str = "olga") -> str:
    return add_session(engine, state=state, operator=operator)


def test_a_session_closes_once_with_what_its_holder_knew(engine: Engine, tmp_path: Path) -> None:
    sid = _session(engine, "active")
    cast = tmp_path / "s.cast"
    cast.write_text('{"version": 2, "width": 80, "height": 24}\n')
    ending = repository.Ending(
        services_used=["shell", "forward:web"],
        bytes_to_device=12,
        bytes_from_device=3400,
        recording=cast,
    )
    with Session(engine) as db:
        assert repository.close_session(
            db, sid, reason="operator", detail="x" * 2000, ending=ending
        )
    with Session(engine) as db:
        # A second close (another server, a late sweep) changes nothing and audits nothing.
        assert not repository.close_session(db, sid, reason="server_restart", detail="late")
    with Session(engine) as db:
        row = repository.get_session(db, sid)
        entries = db.exec(select(AuditEntry).where(AuditEntry.action == "session.close")).all()
        assert audit.verify(db).intact
    assert (row.state, row.close_reason) == ("closed", "operator")
    assert row.detail is not None
    assert len(row.detail) == 1024
    assert row.services_used == ["shell", "forward:web"]
    assert (row.bytes_to_device, row.bytes_from_device) == (12, 3400)
    assert row.recording_path == str(cast)
    assert row.recording_sha256
    [entry] = entries
    details = json.loads(entry.details)
    assert entry.actor == "olga"
    assert details["close_reason"] == "operator"
    assert details["recording_sha256"] == row.recording_sha256


def test_a_row_state_never_moves_back(engine: Engine) -> None:
    sid = _session(engine, "requested")
    with Session(engine) as db:
        repository.advance_state(db, sid, "connecting")
        repository.advance_state(db, sid, "awaiting_consent")  # a late event: ignored
        assert repository.get_session(db, sid).state == "connecting"
        repository.mark_active(db, sid)
        assert repository.get_session(db, sid).state == "active"
        repository.close_session(db, sid, reason="operator", detail=None)
        repository.mark_active(db, sid)
        repository.advance_state(db, sid, "connecting")
        db.expire_all()
        assert repository.get_session(db, sid).state == "closed"


def test_an_unknown_session_is_not_found(engine: Engine) -> None:
    with Session(engine) as db, pytest.raises(NotFound):
        repository.get_session(db, "ses-nope")
    with Session(engine) as db:
        assert repository.closed_among(db, ["ses-nope"]) == []


def test_limits_count_open_sessions_per_device_and_per_operator(engine: Engine) -> None:
    _session(engine, "active", operator="olga")
    _session(engine, "awaiting_consent", operator="piet")
    _session(engine, "closed", operator="olga")
    with Session(engine) as db:
        assert open_count(db, RemoteSession.device_id, "mfp-1") == 2
        assert open_count(db, RemoteSession.operator, "olga") == 1
        check_limits(db, device_id="mfp-1", operator="olga", per_device=3, per_operator=2)
        with pytest.raises(Conflict, match="device mfp-1 already has 2 open session"):
            check_limits(db, device_id="mfp-1", operator="olga", per_device=2, per_operator=9)
        with pytest.raises(Conflict, match="olga already has 1 open session"):
            check_limits(db, device_id="mfp-1", operator="olga", per_device=9, per_operator=1)


def _row(device_id: str) -> RemoteSession:
    now = utcnow()
    return RemoteSession(
        id=f"ses-{new_id()}",
        device_id=device_id,
        operator="olga",
        reason="toner",
        state="requested",
        instance="here",
        created_at=now,
        expires_at=now + timedelta(minutes=2),
    )


def test_a_watched_devices_session_runs_on_its_gateway_and_only_the_gateway_reports(
    engine: Engine,
) -> None:
    with Session(engine) as db:
        db.add(Device(id="server-gw", serial="G", model="m", type="server", customer="c",
                      ssh_host_key="ssh-ed25519 AAAAgateway",
                      capabilities=VIA_SESSIONS))  # fmt: skip
        db.add(
            Device(id="mfp-2", serial="S2", model="m", type="mfp", customer="c", via="server-gw")
        )
        db.commit()
        row = _row("mfp-2")
        host_key, agent = repository.insert_session(
            db, row, source_ip=None, per_device=4, per_operator=4
        )
        assert (host_key, agent) == ("ssh-ed25519 AAAAgateway", "server-gw")
        entry = db.exec(select(AuditEntry).where(AuditEntry.action == "session.open")).one()
        assert entry.target == "mfp-2"
        assert json.loads(entry.details)["via"] == "server-gw"
        session_id = row.id
        # Only the gateway's agent speaks for the session; not the printer's id, not another.
        for reporter, kept in (("mfp-2", False), ("mfp-1", False), ("server-gw", True)):
            repository.note_event(
                db, reporter, "session.refused",
                {"session_id": session_id, "kind": "forward", "target": reporter, "reason": "x"},
            )  # fmt: skip
            db.expire_all()
            refusals = (db.get(RemoteSession, session_id).agent_report or {}).get("refusals", [])  # type: ignore[union-attr]
            assert any(r["target"] == reporter for r in refusals) is kept


def test_a_gateway_that_did_not_announce_via_sessions_is_refused(engine: Engine) -> None:
    # An older gateway agent ignores session.open's "device" and would open the session
    # on itself: without "via-sessions" in its birth, no session to its printers.
    with Session(engine) as db:
        db.add(Device(id="server-gw", serial="G", model="m", type="server", customer="c",
                      ssh_host_key="ssh-ed25519 AAAAgateway"))  # fmt: skip
        db.add(
            Device(id="mfp-2", serial="S2", model="m", type="mfp", customer="c", via="server-gw")
        )
        db.commit()
        for announced in (None, "something-else"):
            gateway = db.get(Device, "server-gw")
            assert gateway is not None
            gateway.capabilities = announced
            db.add(gateway)
            db.commit()
            with pytest.raises(Conflict, match="has not announced 'via-sessions'"):
                repository.insert_session(
                    db, _row("mfp-2"), source_ip=None, per_device=4, per_operator=4
                )
        assert db.exec(select(RemoteSession)).all() == []
        assert db.exec(select(AuditEntry).where(AuditEntry.action == "session.open")).all() == []
        # A gateway's own sessions never needed it.
        _key, agent = repository.insert_session(
            db, _row("server-gw"), source_ip=None, per_device=4, per_operator=4
        )
        assert agent == "server-gw"


def test_a_session_through_a_revoked_gateway_is_refused(engine: Engine) -> None:
    with Session(engine) as db:
        db.add(Device(id="server-gw", serial="G", model="m", type="server", customer="c",
                      ssh_host_key="ssh-ed25519 AAAAgateway", revoked_at=utcnow()))  # fmt: skip
        db.add(
            Device(id="mfp-2", serial="S2", model="m", type="mfp", customer="c", via="server-gw")
        )
        db.commit()
        with pytest.raises(Conflict, match="revoked"):
            repository.insert_session(
                db, _row("mfp-2"), source_ip=None, per_device=4, per_operator=4
            )
