"""Recording incidents: rules between fields, session links, incidents opened by alerts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.incidents.records import (
    IncidentInvalid,
    check_incident,
    create_incident,
    get_incident,
    link_session,
    list_incidents,
    open_incident_for_alert,
    session_ids_of,
    to_public,
    update_incident,
)
from server.kpi.config import KpiSettings
from server.models import IncidentCreate, IncidentUpdate
from shared.errors import NotFound

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)
ALERTS_ON = KpiSettings(alerts_open_incidents=True)


def fields_of(values: Mapping[str, object]) -> list[str]:
    return [p.field for p in check_incident(values)]


def test_rules_between_fields() -> None:
    assert fields_of({"opened_at": T0, "down_at": T0}) == []
    assert fields_of({"opened_at": T0, "down_at": T0, "restored_at": T0 - HOUR}) == ["restored_at"]
    closing = {"opened_at": T0, "down_at": T0, "closed_at": T0 + HOUR}
    assert fields_of(closing) == ["resolution", "restored_at"]
    assert fields_of({**closing, "closed_at": T0 - HOUR, "resolution": "phone", "restored_at": T0})[
        :1
    ] == ["closed_at"]
    assert fields_of({"opened_at": T0, "down_at": T0, "answered_at": T0 - HOUR}) == ["answered_at"]
    assert fields_of(
        {"opened_at": T0, "down_at": T0, "dispatched_at": T0, "engineer_arrived_at": T0 - HOUR}
    ) == ["engineer_arrived_at"]
    # restored exactly when it went down, closed exactly when opened: allowed
    same = {**closing, "closed_at": T0, "restored_at": T0, "resolution": "remote"}
    assert fields_of(same) == []


def test_create_defaults_down_at_and_copies_the_device_type(engine: Engine) -> None:
    with Session(engine) as session:
        incident = create_incident(
            session, data=IncidentCreate(device_id="imaging-a", opened_at=T0)
        )
        assert incident.down_at == T0
        assert incident.device_type == "imaging"
        assert to_public(incident).state == "open"
        with pytest.raises(IncidentInvalid) as caught:
            create_incident(session, data=IncidentCreate(device_id="nope", opened_at=T0))
        assert caught.value.problems[0].field == "device_id"


def test_update_closes_and_reopens(engine: Engine) -> None:
    with Session(engine) as session:
        incident = create_incident(session, data=IncidentCreate(device_id="mfp-a", opened_at=T0))
        assert incident.id is not None
        closed = update_incident(
            session,
            incident_id=incident.id,
            data=IncidentUpdate(resolution="remote", restored_at=T0 + HOUR, closed_at=T0 + HOUR),
        )
        assert to_public(closed).state == "closed"
        with pytest.raises(IncidentInvalid):
            update_incident(session, incident_id=incident.id, data=IncidentUpdate(restored_at=None))
        assert get_incident(session, incident_id=incident.id).restored_at == T0 + HOUR
        reopened = update_incident(
            session,
            incident_id=incident.id,
            data=IncidentUpdate.model_validate({"closed_at": None}),
        )
        assert reopened.closed_at is None
        assert reopened.resolution == "remote"
        with pytest.raises(NotFound):
            update_incident(session, incident_id=999, data=IncidentUpdate())


def test_linking_a_session_marks_remote_use_once(engine: Engine) -> None:
    with Session(engine) as session:
        incident = create_incident(session, data=IncidentCreate(device_id="mfp-a", opened_at=T0))
        assert incident.id is not None
        assert not incident.remote_session_used
        link_session(session, incident.id, "sess-1")
        link_session(session, incident.id, "sess-1")
        linked = link_session(session, incident.id, "sess-2")
        assert linked.remote_session_used
        assert session_ids_of(session, [incident.id]) == {incident.id: ["sess-1", "sess-2"]}
        with pytest.raises(NotFound):
            link_session(session, 12345, "sess-3")


def test_alerts_open_one_incident_per_device_and_fault(engine: Engine) -> None:
    with Session(engine) as session:
        assert (
            open_incident_for_alert(session, "mfp-a", "SC-541", "fuser", T0, KpiSettings()) is None
        )
        first = open_incident_for_alert(session, "mfp-a", "SC-541", "fuser", T0, ALERTS_ON)
        assert first is not None
        assert (first.channel, first.down_at, first.opened_at) == ("alert", T0, T0)
        assert first.error_code == "SC-541"
        again = open_incident_for_alert(session, "mfp-a", "SC-541", "fuser", T0 + HOUR, ALERTS_ON)
        assert again is not None
        assert again.id == first.id
        other = open_incident_for_alert(session, "mfp-a", "J-201", "jam", T0, ALERTS_ON)
        assert other is not None
        assert other.id != first.id
        # Once closed, the same fault opens a new incident.
        assert first.id is not None
        update_incident(
            session,
            incident_id=first.id,
            data=IncidentUpdate(resolution="remote", restored_at=T0 + HOUR, closed_at=T0 + HOUR),
        )
        newer = open_incident_for_alert(
            session, "mfp-a", "SC-541", "fuser", T0 + 2 * HOUR, ALERTS_ON
        )
        assert newer is not None
        assert newer.id not in (first.id, other.id)
        _, total = list_incidents(session, device_id="mfp-a")
        assert total == 3
