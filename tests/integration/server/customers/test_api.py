"""Customers, the CTI lookup and recorded calls over the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.config import ServerSettings
from server.models import AuditEntry
from tests.fixtures.customers import TOKYO, Auth
from tests.fixtures.customers import customer as _customer
from tests.fixtures.customers import device as _device
from tests.fixtures.customers import fleet as _fleet


def test_a_customer_is_created_with_contacts_in_e164(client: TestClient, auth: Auth) -> None:
    created = _customer(client, auth)
    assert created["country"] == "JP"
    assert created["contacts"][0]["phone"] == "+81312345678"
    assert created["sites"] == [{"name": "Osaka branch", "country": "JP", "region": None}]
    one = client.get("/api/v1/customers/4711", headers=auth("operator")).json()
    assert one["name"] == "Sakura Clinic"
    assert one["devices"] == []
    listed = client.get("/api/v1/customers?q=sakura", headers=auth("operator")).json()
    assert listed["count"] == 1
    again = client.post("/api/v1/customers", json=TOKYO, headers=auth("manager"))
    assert again.status_code == 409


def test_invalid_input_answers_422_naming_the_field(client: TestClient, auth: Auth) -> None:
    bad_phone = {**TOKYO, "contacts": [{"name": "x", "phone": "12"}]}
    answer = client.post("/api/v1/customers", json=bad_phone, headers=auth("manager"))
    assert answer.status_code == 422
    assert "contacts[0].phone" in answer.json()["detail"]
    cases = {
        "number": {**TOKYO, "number": "../etc"},
        "country": {**TOKYO, "country": "Japan"},
        "email": {**TOKYO, "contacts": [{"name": "x", "email": "not-an-address"}]},
        "name": {**TOKYO, "name": ""},
        "region": {**TOKYO, "region": "a\x00b"},  # PostgreSQL stores no NUL
    }
    for field, body in cases.items():
        answer = client.post("/api/v1/customers", json=body, headers=auth("manager"))
        assert answer.status_code == 422, field
        assert field in str(answer.json()["detail"]), field
    assert client.get("/api/v1/customers", headers=auth("operator")).json()["count"] == 0


def test_an_operator_may_not_create_customers(client: TestClient, auth: Auth) -> None:
    answer = client.post("/api/v1/customers", json=TOKYO, headers=auth("operator"))
    assert answer.status_code == 403
    assert client.get("/api/v1/customers/4711", headers=auth("operator")).status_code == 404


def test_devices_point_to_a_customer_and_phones_read_in_its_country(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    _customer(client, auth)
    answer = client.post(
        "/api/v1/devices",
        json=_device(
            "S1", customer_number="4711", site="Osaka branch", contact_phone="06-6123-4567"
        ),
        headers=auth("admin"),
    )
    assert answer.status_code == 201, answer.text
    device = answer.json()["device"]
    assert (device["customer"], device["customer_number"]) == ("Sakura Clinic", "4711")
    assert device["contact_phone_e164"] == "+81661234567"
    unknown = client.post(
        "/api/v1/devices", json=_device("S2", customer_number="999"), headers=auth("admin")
    )
    assert unknown.status_code == 422
    assert "customer_number" in unknown.json()["detail"]
    bad_phone = client.post(
        "/api/v1/devices",
        json=_device("S3", customer_number="4711", contact_phone="0000"),
        headers=auth("admin"),
    )
    assert bad_phone.status_code == 422
    assert "contact_phone" in bad_phone.json()["detail"]
    neither = client.post("/api/v1/devices", json=_device("S4"), headers=auth("admin"))
    assert neither.status_code == 422
    # A free-text customer, as before: a customer record with the next number.
    legacy = client.post(
        "/api/v1/devices", json=_device("S5", customer="Acme Offices"), headers=auth("admin")
    )
    assert legacy.status_code == 201, legacy.text
    assert legacy.json()["device"]["customer_number"] == "100002"
    same = client.post(
        "/api/v1/devices", json=_device("S6", customer="Acme Offices"), headers=auth("admin")
    )
    assert same.json()["device"]["customer_number"] == "100002"
    detail = client.get("/api/v1/customers/4711", headers=auth("operator")).json()
    assert [d["id"] for d in detail["devices"]] == ["imaging-s1"]
    with Session(engine) as session:
        actions = [e.action for e in session.exec(select(AuditEntry)).all()]
    assert actions.count("customer.create") == 2
    assert actions.count("device.register") == 3


def test_lookup_matches_device_phones_and_contacts_in_any_notation(
    client: TestClient, auth: Auth
) -> None:
    _fleet(client, auth)
    operator = auth("operator")
    incident = client.post(
        "/api/v1/incidents",
        json={"device_id": "imaging-b1", "opened_at": "2026-12-01T08:00:00Z"},
        headers=operator,
    )
    assert incident.status_code == 201, incident.text
    # The device's own phone (and the contact's: the same number) from the phone system.
    tokyo = client.get("/api/v1/lookup", params={"ani": "+81 3 1234 5678"}, headers=operator)
    assert tokyo.status_code == 200, tokyo.text
    body = tokyo.json()
    assert body["ani_e164"] == "+81312345678"
    assert body["customer"]["number"] == "4711"
    assert [d["id"] for d in body["devices"]] == ["imaging-a1"]
    # The same number keyed the Japanese way, with the customer number from the IVR.
    keyed = client.get(
        "/api/v1/lookup", params={"ani": "03-1234-5678", "customer_no": "4711"}, headers=operator
    ).json()
    assert [d["id"] for d in keyed["devices"]] == ["imaging-a1"]
    berlin = client.get("/api/v1/lookup", params={"ani": "+49301234567"}, headers=operator).json()
    assert berlin["customer"]["number"] == "5000"
    assert [i["device_id"] for i in berlin["open_incidents"]] == ["imaging-b1"]
    nobody = client.get("/api/v1/lookup", params={"ani": "+442071234567"}, headers=operator)
    assert nobody.json() | {"ani_e164": None} == {
        "ani_e164": None,
        "customer": None,
        "devices": [],
        "open_incidents": [],
        "customer_numbers": [],
    }
    invalid = client.get("/api/v1/lookup", params={"ani": "=cmd|' /C calc'!A0"}, headers=operator)
    assert invalid.status_code == 422
    assert "ani" in invalid.json()["detail"]
    assert client.get("/api/v1/lookup", params={"ani": "+49301234567"}).status_code == 401


def test_the_callers_number_never_reaches_the_access_log(
    client: TestClient, auth: Auth, settings: ServerSettings
) -> None:
    _fleet(client, auth)
    client.get("/api/v1/lookup", params={"ani": "+4930 1234567"}, headers=auth("operator"))
    client.get("/desk/call", params={"ani": "+4930 1234567", "call_id": "x"})
    log = Path(str(settings.access_log_file)).read_text()
    assert "/api/v1/lookup" in log
    assert "/desk/call" in log
    assert "1234567" not in log


def test_calls_are_recorded_and_an_incident_from_one_carries_its_answer_time(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    _fleet(client, auth)
    operator = auth("operator")
    made = client.post(
        "/api/v1/calls",
        json={
            "ani": "030 1234567",
            "customer_number": "5000",
            "external_id": "pbx-77",
            "started_at": "2026-12-01T08:00:00Z",
            "answered_at": "2026-12-01T08:00:40Z",
        },
        headers=operator,
    )
    assert made.status_code == 201, made.text
    call = made.json()
    assert (call["ani_e164"], call["operator"]) == ("+49301234567", "operator1")
    early = client.patch(
        f"/api/v1/calls/{call['id']}", json={"ended_at": "2026-12-01T07:00:00Z"}, headers=operator
    )
    assert early.status_code == 422
    opened = client.post(
        f"/api/v1/calls/{call['id']}/incident",
        json={"device_id": "imaging-b1", "symptom": "no image"},
        headers=operator,
    )
    assert opened.status_code == 201, opened.text
    incident = opened.json()
    assert incident["opened_at"] == "2026-12-01T08:00:00Z"
    assert incident["answered_at"] == "2026-12-01T08:00:40Z"
    assert incident["channel"] == "phone"
    twice = client.post(f"/api/v1/calls/{call['id']}/incident", json={}, headers=operator)
    assert twice.status_code == 409
    ended = client.patch(
        f"/api/v1/calls/{call['id']}", json={"ended_at": "2026-12-01T08:05:00Z"}, headers=operator
    ).json()
    assert ended["incident_id"] == incident["id"]
    listed = client.get("/api/v1/calls?customer=5000", headers=operator).json()
    assert listed["count"] == 1
    assert listed["items"][0]["device_id"] == "imaging-b1"
    missing = client.post("/api/v1/calls", json={"ani": "1", "device_id": "nope"}, headers=operator)
    assert missing.status_code == 404
    with Session(engine) as session:
        entries = session.exec(
            select(AuditEntry).where(AuditEntry.action.startswith("call."))
        ).all()
    assert {e.action for e in entries} == {"call.record", "call.incident", "call.update"}
    assert all("1234567" not in str(e.details) for e in entries)
