"""``/api/v1/maintenance-windows``, and faults in a window opening no incident."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.crud.customers import create_customer
from server.ingest.incidents import apply_fault_incidents
from server.models import AuditEntry, DeviceCreate, Incident
from server.models.customer import CustomerCreate
from tests.fixtures.api_auth import PASSWORD, SITE_CUSTOMER, Auth

URL = "/api/v1/maintenance-windows"


def _fleet(engine: Engine) -> None:
    with Session(engine) as session:
        create_customer(session, data=CustomerCreate(number="C-1", name="Clinic"))
        create_customer(session, data=CustomerCreate(number="C-2", name="Other"))
        for device_id, customer, site in (
            ("mfp-a", "C-1", "Ward 3"),
            ("mfp-b", "C-1", "Lobby"),
            ("mfp-c", "C-2", None),
        ):
            crud.create_device(
                session,
                data=DeviceCreate(
                    id=device_id,
                    serial=device_id,
                    model="C3000",
                    type="mfp",
                    customer_number=customer,
                    site=site,
                ),
            )


def _now_window(**target: Any) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(minutes=10)
    return {"start": start.isoformat(), "duration_minutes": 60, "reason": "firmware", **target}


def test_a_window_is_planned_listed_per_device_and_removed(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    _fleet(engine)
    operator = auth("operator")
    made = client.post(
        URL,
        json={
            "customer_number": "C-1",
            "site": "Ward 3",
            "start": "2026-07-04T22:00:00",
            "timezone": "Europe/Berlin",
            "duration_minutes": 90,
            "rrule": "RRULE:FREQ=WEEKLY;BYDAY=SA",
        },
        headers=operator,
    )
    assert made.status_code == 201, made.text
    window = made.json()
    assert window["starts_at"].startswith("2026-07-04T20:00:00")
    assert window["rrule"] == "FREQ=WEEKLY;BYDAY=SA"
    assert len(window["next_starts"]) == 5
    assert window["created_by"] == "operator1"
    covering = client.get(URL, params={"device_id": "mfp-a"}, headers=operator).json()
    assert [w["id"] for w in covering["items"]] == [window["id"]]
    assert client.get(URL, params={"device_id": "mfp-b"}, headers=operator).json()["count"] == 0
    assert client.get(URL, params={"customer": "C-2"}, headers=operator).json()["count"] == 0
    assert client.get(f"{URL}/{window['id']}", headers=operator).json()["id"] == window["id"]
    assert client.delete(f"{URL}/{window['id']}", headers=operator).status_code == 204
    assert client.get(f"{URL}/{window['id']}", headers=operator).status_code == 404
    with Session(engine) as session:
        actions = session.exec(
            sa.select(AuditEntry.action, AuditEntry.target).order_by(AuditEntry.id)  # type: ignore[arg-type]
        ).all()
    assert ("maintenance.create", "customer:C-1/Ward 3") in actions
    assert ("maintenance.delete", "customer:C-1/Ward 3") in actions


def test_bad_windows_get_a_clear_4xx_and_nothing_is_stored(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    _fleet(engine)
    operator = auth("operator")
    bad: list[tuple[dict[str, Any], int, str]] = [
        (_now_window(), 422, "either device_id or customer_number"),
        (_now_window(device_id="mfp-a", customer_number="C-1"), 422, "either"),
        (_now_window(device_id="mfp-a", site="Ward 3"), 422, "site needs customer_number"),
        (_now_window(device_id="nope-x"), 404, "not found"),
        (_now_window(customer_number="C-9"), 404, "not found"),
        (_now_window(device_id="mfp-a", rrule="FREQ=SECONDLY"), 422, "FREQ must be"),
        (_now_window(device_id="mfp-a", timezone="Mars/Base"), 422, "unknown time zone"),
        ({**_now_window(device_id="mfp-a"), "duration_minutes": 0}, 422, "greater than"),
        ({**_now_window(device_id="mfp-a"), "duration_minutes": 10**9}, 422, "less than"),
        ({**_now_window(device_id="mfp-a"), "reason": "x" * 100_000}, 422, "at most"),
        ({**_now_window(device_id="mfp-a"), "reason": "a\x1b[2Jb"}, 422, "control characters"),
    ]
    for body, code, says in bad:
        answer = client.post(URL, json=body, headers=operator)
        assert answer.status_code == code, (body, answer.text)
        assert says in answer.text, (body, answer.text)
    assert client.get(URL, headers=operator).json()["count"] == 0


def test_only_an_administrator_may_pre_approve_sessions(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    _fleet(engine)
    body = {**_now_window(device_id="mfp-a"), "preapprove_sessions": True}
    refused = client.post(URL, json=body, headers=auth("manager"))
    assert refused.status_code == 403
    assert "the site or an administrator" in refused.json()["detail"]
    made = client.post(URL, json=body, headers=auth("admin"))
    assert made.status_code == 201
    assert made.json()["active"] is not None
    window_id = made.json()["id"]
    assert client.delete(f"{URL}/{window_id}", headers=auth("operator")).status_code == 403
    assert client.delete(f"{URL}/{window_id}", headers=auth("admin")).status_code == 204


def _fault(device_id: str, at: datetime) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "code": "SC-541",
        "raised_at": at,
        "message": "fuser",
        "open": True,
        "cleared_at": None,
        "source": "device",
        "severity": "error",
    }


def test_a_fault_in_a_window_opens_no_incident_and_one_outside_does(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    _fleet(engine)
    answer = client.post(URL, json=_now_window(customer_number="C-1"), headers=auth("operator"))
    assert answer.status_code == 201
    now = datetime.now(UTC)
    with engine.begin() as conn:
        apply_fault_incidents(
            conn,
            [
                _fault("mfp-a", now),  # in its customer's window
                _fault("mfp-c", now),  # another customer: no window
                {**_fault("mfp-b", now - timedelta(hours=2)), "code": "SC-100"},  # before it
            ],
            [],
        )
    with Session(engine) as session:
        opened = session.exec(
            sa.select(Incident.device_id, Incident.error_code).order_by(Incident.device_id)  # type: ignore[arg-type]
        ).all()
    assert [tuple(row) for row in opened] == [("mfp-b", "SC-100"), ("mfp-c", "SC-541")]


def test_the_device_page_shows_its_windows_and_that_it_is_in_one(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    _fleet(engine)
    operator = auth("operator")
    client.post(URL, json=_now_window(device_id="mfp-a", reason="<b>toner</b>"), headers=operator)
    client.post(
        URL,
        json={
            "customer_number": "C-1",
            "start": "2026-01-03T02:00:00",
            "timezone": "Asia/Tokyo",
            "duration_minutes": 60,
            "rrule": "FREQ=MONTHLY;BYMONTHDAY=3",
            "reason": "monthly check",
        },
        headers=operator,
    )
    login = client.post("/login", data={"username": "operator1", "password": PASSWORD})
    assert login.status_code == 200, login.text
    page = client.get("/devices/mfp-a").text
    assert 'id="in-maintenance"' in page
    card = page.split('id="maintenance-title"', 1)[1].split("</section>", 1)[0]
    assert card.count("data-window=") == 2
    assert "&lt;b&gt;toner&lt;/b&gt;" in card
    assert "FREQ=MONTHLY;BYMONTHDAY=3" in card
    assert "Asia/Tokyo" in card
    other = client.get("/devices/mfp-c").text
    assert 'id="in-maintenance"' not in other
    assert 'id="maintenance-title"' not in other


def test_a_site_pre_approves_its_own_devices_and_scoped_users_see_only_theirs(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    _fleet(engine)
    site = auth("site")  # bound to SITE_CUSTOMER
    with Session(engine) as session:
        crud.create_device(
            session,
            data=DeviceCreate(
                id="mfp-s", serial="S9", model="C3000", type="mfp", customer_number=SITE_CUSTOMER
            ),
        )
        crud.create_user(session, username="c1-op", role="operator", password=PASSWORD)
    made = client.post(
        URL, json={**_now_window(device_id="mfp-s"), "preapprove_sessions": True}, headers=site
    )
    assert made.status_code == 201, made.text
    other = client.post(URL, json=_now_window(device_id="mfp-a"), headers=site)
    assert other.status_code == 404
    assert (
        client.post(URL, json=_now_window(customer_number="C-1"), headers=site).status_code == 404
    )
    theirs = client.post(URL, json=_now_window(customer_number="C-1"), headers=auth("operator"))
    assert theirs.status_code == 201
    listed = client.get(URL, headers=site).json()
    assert [w["id"] for w in listed["items"]] == [made.json()["id"]]
    assert client.get(f"{URL}/{theirs.json()['id']}", headers=site).status_code == 404
    assert client.delete(f"{URL}/{theirs.json()['id']}", headers=site).status_code == 404
    assert client.get(URL, params={"device_id": "mfp-a"}, headers=site).status_code == 404
    # an operator limited to C-2 sees neither
    client.patch("/api/v1/users/c1-op", json={"customers": ["C-2"]}, headers=auth("admin"))
    token = client.post(
        "/api/v1/auth/token", data={"username": "c1-op", "password": PASSWORD}
    ).json()["access_token"]
    scoped = {"Authorization": f"Bearer {token}"}
    assert client.get(URL, headers=scoped).json()["count"] == 0
    assert client.get(f"{URL}/{made.json()['id']}", headers=scoped).status_code == 404
