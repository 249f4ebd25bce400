"""Surveys through the API: closing an incident makes one; its link answers once, in
time, within bounds; a low answer opens a follow-up the desk closes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from server.models import FollowUp, Survey
from tests.fixtures.api_auth import Auth
from tests.fixtures.customers import customer, device

OPENED = "2026-03-02T09:00:00Z"


def _incident(client: TestClient, auth: Auth, device_id: str, **extra: Any) -> int:
    body = {"device_id": device_id, "opened_at": OPENED, "channel": "phone", **extra}
    answer = client.post("/api/v1/incidents", json=body, headers=auth("operator"))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def _setup(client: TestClient, auth: Auth) -> str:
    customer(client, auth)
    answer = client.post(
        "/api/v1/devices", json=device("S1", customer_number="4711"), headers=auth("admin")
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["device"]["id"])


def _close(client: TestClient, auth: Auth, incident_id: int, resolution: str) -> dict[str, Any]:
    answer = client.post(
        f"/api/v1/incidents/{incident_id}/close",
        json={"resolution": resolution, "restored_at": "2026-03-02T10:00:00Z"},
        headers=auth("operator"),
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _token(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _rows(engine: Engine, table: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(table.__table__)).all())


def test_closing_makes_a_survey_answered_once(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    device_id = _setup(client, auth)
    incident_id = _incident(client, auth, device_id)
    closed = _close(client, auth, incident_id, "remote")
    url = closed["survey_url"]
    assert url
    assert "/survey/" in url
    token = _token(url)
    # Only a hash of the token is stored.
    stored = _rows(engine, Survey)
    assert len(stored) == 1
    assert token not in str(stored[0])
    assert stored[0].language == "ja"
    assert stored[0].touchpoints == "call_center,remote_fix"
    shown = client.get(f"/api/v1/incidents/{incident_id}", headers=auth("operator")).json()
    assert shown["survey_url"] == url
    asked = client.get(f"/api/v1/surveys/{token}").json()
    assert asked["touchpoints"] == ["call_center", "remote_fix"]

    answer = client.post(
        f"/api/v1/surveys/{token}",
        json={"recommend": 10, "satisfaction": {"remote_fix": 5}, "comment": "quick"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "recorded", "followup": False}
    again = client.post(f"/api/v1/surveys/{token}", json={"recommend": 0})
    assert again.status_code == 409
    assert _rows(engine, Survey)[0].recommend == 10
    assert _rows(engine, FollowUp) == []


def test_bad_answers_change_nothing(client: TestClient, auth: Auth, engine: Engine) -> None:
    device_id = _setup(client, auth)
    token = _token(_close(client, auth, _incident(client, auth, device_id), "phone")["survey_url"])
    for body in (
        {"recommend": 11},
        {"recommend": -1},
        {"recommend": 5, "satisfaction": {"call_center": 6}},
        {"recommend": 5, "satisfaction": {"on_site": 3}},  # not a touchpoint of this case
        {"recommend": 5, "comment": "x" * 100_000},
        {"recommend": 5, "comment": "nul\x00"},
    ):
        answer = client.post(f"/api/v1/surveys/{token}", json=body)
        assert answer.status_code == 422, (body, answer.text)
    assert _rows(engine, Survey)[0].answered_at is None
    page = client.post(f"/survey/{token}", data={"recommend": "5", "comment": "y" * 100_000})
    assert page.status_code in (413, 422)
    assert _rows(engine, Survey)[0].answered_at is None
    assert client.post("/api/v1/surveys/" + "A" * 43, json={"recommend": 5}).status_code == 404
    assert client.post("/api/v1/surveys/short", json={"recommend": 5}).status_code == 404


def test_an_expired_link_is_refused(client: TestClient, auth: Auth, engine: Engine) -> None:
    device_id = _setup(client, auth)
    token = _token(_close(client, auth, _incident(client, auth, device_id), "phone")["survey_url"])
    table = Survey.__table__  # type: ignore[attr-defined]
    with engine.begin() as connection:
        past = connection.execute(sa.select(table.c.created_at)).scalar_one() - timedelta(days=1)
        connection.execute(sa.update(table).values(expires_at=past))
    answer = client.post(f"/api/v1/surveys/{token}", json={"recommend": 9})
    assert answer.status_code == 410
    assert client.get(f"/survey/{token}").status_code == 410
    assert _rows(engine, Survey)[0].answered_at is None


def test_a_detractor_opens_a_followup_the_desk_closes(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    device_id = _setup(client, auth)
    incident_id = _incident(client, auth, device_id)
    token = _token(_close(client, auth, incident_id, "dispatch")["survey_url"])
    page = client.get(f"/survey/{token}?lang=de")
    assert page.status_code == 200
    assert "Wie waren wir?" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    answer = client.post(
        f"/survey/{token}",
        data={"lang": "fr", "recommend": "3", "sat_on_site": "1", "comment": "trop lent"},
    )
    assert answer.status_code == 200
    assert "Merci" in answer.text
    listed = client.get("/api/v1/followups?state=open", headers=auth("operator")).json()
    assert listed["count"] == 1
    item = listed["items"][0]
    assert item["incident_id"] == incident_id
    assert "recommend 3" in item["reason"]
    assert item["comment"] == "trop lent"
    closed = client.post(
        f"/api/v1/followups/{item['id']}/close",
        json={"note": "called back, engineer revisits"},
        headers=auth("operator"),
    )
    assert closed.status_code == 200
    assert closed.json()["state"] == "closed"
    assert client.get("/api/v1/followups?state=open", headers=auth("operator")).json()["count"] == 0
    again = client.post(
        f"/api/v1/followups/{item['id']}/close", json={"note": "x"}, headers=auth("operator")
    )
    assert again.status_code == 409


def test_the_quiet_period_asks_a_contact_once(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    device_id = _setup(client, auth)
    first = _close(client, auth, _incident(client, auth, device_id), "phone")
    second = _close(client, auth, _incident(client, auth, device_id), "phone")
    assert first["survey_url"]
    assert second["survey_url"] is None
    assert len(_rows(engine, Survey)) == 1


def test_the_links_export_is_for_managers(client: TestClient, auth: Auth) -> None:
    device_id = _setup(client, auth)
    url = _close(client, auth, _incident(client, auth, device_id), "phone")["survey_url"]
    assert client.get("/api/v1/surveys", headers=auth("operator")).status_code == 403
    text = client.get("/api/v1/surveys", headers=auth("manager")).text
    assert text.splitlines()[0].startswith("incident_id,contact_name")
    assert url in text
    assert "t@sakura.example" in text


def test_an_overdue_followup_is_told_to_the_rules_once_and_its_closing_too(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    from server.models.notify import NotifyOutbox
    from server.notify.planner import plan
    from server.notify.rules import NotifyRule
    from server.surveys.followups import mark_overdue
    from shared.ids import utcnow

    device_id = _setup(client, auth)
    incident_id = _incident(client, auth, device_id)
    token = _token(_close(client, auth, incident_id, "dispatch")["survey_url"])
    assert client.post(f"/api/v1/surveys/{token}", json={"recommend": 2}).status_code == 200
    [followup] = _rows(engine, FollowUp)
    rule = NotifyRule(name="callbacks", events=["followup"], email_to=["desk@example.com"])
    assert mark_overdue(engine, followup.due_at - timedelta(minutes=1)) == 0  # not due yet
    late = followup.due_at + timedelta(hours=1)
    assert mark_overdue(engine, late) == 1
    assert mark_overdue(engine, late + timedelta(hours=1)) == 0  # once
    plan(engine, [rule], late)
    [problem] = _rows(engine, NotifyOutbox)
    assert problem.payload["kind"] == "followup"
    assert problem.payload["state"] == "problem"
    assert f"incident #{incident_id}" in problem.payload["message"]
    assert "overdue since" in problem.payload["message"]
    closed = client.post(
        f"/api/v1/followups/{followup.id}/close",
        json={"note": "called back"},
        headers=auth("operator"),
    )
    assert closed.status_code == 200
    plan(engine, [rule], utcnow())
    states = [row.payload["state"] for row in _rows(engine, NotifyOutbox)]
    assert states == ["problem", "resolved"]
