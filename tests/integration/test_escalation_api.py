"""Assignment and escalation through the API (issue 14), on SQLite and PostgreSQL.

``POST /api/v1/incidents/{id}/escalate`` hands an open incident to a tier and/or
a user with a handover note; every change is audited; ``GET /incidents?assignee=me``
is the desk's "my incidents". Hostile input: a huge note, an unknown or disabled
assignee, an invalid tier, a closed incident, an unknown one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server import crud
from server.main import create_app
from server.models import AuditEntry, DeviceCreate, User
from server.models.incident import HANDOVER_NOTE_MAX
from tests.fixtures.api_auth import PASSWORD, Auth, make_auth
from tests.fixtures.server_app import app_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def engine_of(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = app_settings(tmp_path, database_url)
    with TestClient(create_app(settings)) as test_client:
        with Session(engine_of(test_client)) as db:
            crud.create_device(
                db,
                data=DeviceCreate(
                    id="mfp-a", serial="S1", model="C3000", type="mfp", customer="Acme"
                ),
            )
            crud.create_user(db, username="spec", role="operator", password=PASSWORD)
            crud.create_user(db, username="gone", role="operator", password=PASSWORD)
            gone = db.exec(select(User).where(User.username == "gone")).one()
            gone.disabled = True
            db.add(gone)
            db.commit()
        yield test_client


@pytest.fixture
def auth(client: TestClient) -> Auth:
    return make_auth(client)


def open_incident(client: TestClient, auth: Auth) -> int:
    answer = client.post(
        "/api/v1/incidents",
        json={"device_id": "mfp-a", "opened_at": "2026-03-02T09:00:00Z", "channel": "phone"},
        headers=auth("operator"),
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["tier"] == 1
    assert body["assignee"] is None
    incident_id: int = body["id"]
    return incident_id


def token_of(client: TestClient, username: str) -> dict[str, str]:
    answer = client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def escalations(client: TestClient, incident_id: int) -> list[AuditEntry]:
    with Session(engine_of(client)) as db:
        return list(
            db.exec(
                select(AuditEntry)
                .where(AuditEntry.action == "incident.escalate")
                .where(AuditEntry.target == f"incident:{incident_id}")
                .order_by(AuditEntry.id)  # type: ignore[arg-type]
            ).all()
        )


def test_escalate_to_a_specialist_shows_in_my_incidents_and_is_audited(
    client: TestClient, auth: Auth
) -> None:
    incident_id = open_incident(client, auth)
    other_id = open_incident(client, auth)
    answer = client.post(
        f"/api/v1/incidents/{incident_id}/escalate",
        json={"tier": 2, "assignee": "spec", "note": "paper jam persists after reset"},
        headers=auth("operator"),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["tier"], body["assignee"]) == (2, "spec")
    assert body["handover_note"] == "paper jam persists after reset"
    spec = token_of(client, "spec")
    for query in ("assignee=me", "mine=true", "assignee=spec"):
        mine = client.get(f"/api/v1/incidents?{query}", headers=spec)
        assert mine.status_code == 200, mine.text
        assert [i["id"] for i in mine.json()["items"]] == [incident_id], query
    # the operator who escalated has none of their own
    assert client.get("/api/v1/incidents?mine=true", headers=auth("operator")).json()["count"] == 0
    # a tier-only escalation keeps the assignee
    answer = client.post(
        f"/api/v1/incidents/{incident_id}/escalate",
        json={"tier": 3, "note": "needs a new fuser: dispatch"},
        headers=spec,
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["tier"], answer.json()["assignee"]) == (3, "spec")
    entries = escalations(client, incident_id)
    assert [e.actor for e in entries] == ["operator1", "spec"]
    first = json.loads(entries[0].details)
    assert first == {
        "from_tier": 1,
        "tier": 2,
        "from_assignee": None,
        "assignee": "spec",
        "note": "paper jam persists after reset",
    }
    assert json.loads(entries[1].details)["from_tier"] == 2
    assert escalations(client, other_id) == []
    verified = client.get("/api/v1/audit/verify", headers=auth("admin"))
    assert verified.status_code == 200, verified.text
    assert verified.json()["intact"] is True


def test_hostile_and_wrong_escalations_are_refused_and_not_audited(
    client: TestClient, auth: Auth
) -> None:
    incident_id = open_incident(client, auth)
    url = f"/api/v1/incidents/{incident_id}/escalate"
    operator = auth("operator")

    def refused(body: object, status: int, where: str | None = None, path: str = url) -> None:
        answer = client.post(path, json=body, headers=operator)
        assert answer.status_code == status, answer.text
        detail = answer.json()["detail"]
        if where is not None:
            assert any(where in d["loc"] for d in detail), detail

    refused({"tier": 2, "note": "x" * (HANDOVER_NOTE_MAX + 1)}, 422, "note")
    # A 5 MB note: the request guard refuses the body before it is parsed.
    huge = client.post(url, json={"tier": 2, "note": "x" * 5_000_000}, headers=operator)
    assert huge.status_code == 413, huge.text
    refused({"tier": 4, "note": "up"}, 422, "tier")
    refused({"tier": 0, "note": "up"}, 422, "tier")
    refused({"tier": "2; DROP TABLE incident", "note": "up"}, 422, "tier")
    refused({"tier": 2}, 422, "note")
    refused({"note": "neither tier nor assignee"}, 422, "tier")
    refused({"assignee": "nobody", "note": "up"}, 422, "assignee")
    refused({"assignee": "gone", "note": "to a disabled user"}, 422, "assignee")
    refused({"assignee": "x" * 65, "note": "up"}, 422, "assignee")
    refused({"tier": 2, "note": "up"}, 404, path="/api/v1/incidents/999999/escalate")
    refused({"tier": 2, "note": "up"}, 422, path="/api/v1/incidents/0/escalate")
    assert escalations(client, incident_id) == []
    # a formula-looking note is stored and returned as text, nothing evaluated
    formula = '=HYPERLINK("http://evil","x")'
    answer = client.post(url, json={"tier": 2, "note": formula}, headers=operator)
    assert answer.status_code == 200, answer.text
    assert answer.json()["handover_note"] == formula
    # an operator cannot escalate a closed incident
    closed = client.post(
        f"/api/v1/incidents/{incident_id}/close",
        json={"resolution": "phone", "restored_at": "2026-03-02T10:00:00Z"},
        headers=operator,
    )
    assert closed.status_code == 200, closed.text
    refused({"tier": 3, "note": "too late"}, 409)
    assert len(escalations(client, incident_id)) == 1
    # without a login: 401
    assert client.post(url, json={"tier": 2, "note": "x"}).status_code == 401
