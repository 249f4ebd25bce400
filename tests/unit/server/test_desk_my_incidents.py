"""The desk's "my incidents" card: the open incidents escalated to the viewer."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.models import DeviceCreate
from tests.fixtures.api_auth import PASSWORD


def test_the_desk_lists_my_incidents_with_the_handover_note_escaped(
    client: TestClient, engine: Engine, auth: Callable[[str], dict[str, str]]
) -> None:
    with Session(engine) as session:
        crud.create_device(
            session,
            data=DeviceCreate(id="mfp-a", serial="S1", model="C3000", type="mfp", customer="Acme"),
        )
        crud.create_user(session, username="spec", role="operator", password=PASSWORD)
    operator = auth("operator")
    ids = []
    for _ in range(2):
        answer = client.post(
            "/api/v1/incidents",
            json={"device_id": "mfp-a", "opened_at": "2026-03-02T09:00:00Z"},
            headers=operator,
        )
        assert answer.status_code == 201, answer.text
        ids.append(answer.json()["id"])
    escalated = client.post(
        f"/api/v1/incidents/{ids[0]}/escalate",
        json={"tier": 2, "assignee": "spec", "note": "<script>alert(1)</script> fuser noise"},
        headers=operator,
    )
    assert escalated.status_code == 200, escalated.text
    login = client.post(
        "/login", data={"username": "spec", "password": PASSWORD}, follow_redirects=False
    )
    assert login.status_code == 303, login.text
    desk = client.get("/desk")
    assert desk.status_code == 200
    card = desk.text.split('id="my-incidents-title"', 1)[1].split("</section>", 1)[0]
    assert f'data-incident="{ids[0]}"' in card
    assert f'data-incident="{ids[1]}"' not in card
    assert "tier 2" in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt; fuser noise" in card
    assert "<script>alert(1)" not in desk.text
    # the one who escalated it has nothing of their own
    client.cookies.clear()
    client.post("/login", data={"username": "operator1", "password": PASSWORD})
    mine = client.get("/desk").text.split('id="my-incidents-title"', 1)[1]
    assert "No open incident is assigned to you." in mine.split("</section>", 1)[0]
