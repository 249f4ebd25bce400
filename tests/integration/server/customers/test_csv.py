"""CSV import of customers and devices: all or nothing with line numbers, hostile files."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.config import ServerSettings
from server.main import create_app
from server.models import AuditEntry
from tests.fixtures.api_auth import PASSWORD

Auth = Callable[[str], dict[str, str]]
CSV = {"Content-Type": "text/csv"}

CUSTOMERS = (
    "number,name,country,region,contact_name,contact_phone,contact_email,contact_language,site,site_country\n"
    "4711,Sakura Clinic,JP,apac,Dr. Tanaka,03-1234-5678,t@sakura.example,ja,,\n"
    "4711,,,,Ms. Sato,+81 6 6123 4567,,,Osaka branch,JP\n"
    '5000,=HYPERLINK("http://evil.example"),DE,emea,\'=1+2,030 1234567,,,,\n'
)
DEVICES = (
    "serial,model,type,customer_number,site,contact_phone\n"
    "A1,CT-80,imaging,4711,Osaka branch,06-6123-4567\n"
    "B1,MP 6055,mfp,5000,,030 7654321\n"
)


def test_customers_and_devices_import_and_export_round_trips(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    manager = auth("manager")
    answer = client.post(
        "/api/v1/customers/import", content=CUSTOMERS.encode(), headers={**manager, **CSV}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"rows": 3, "inserted": 2, "skipped": 0}
    tokyo = client.get("/api/v1/customers/4711", headers=manager).json()
    assert [c["phone"] for c in tokyo["contacts"]] == ["+81312345678", "+81661234567"]
    assert tokyo["sites"][0]["name"] == "Osaka branch"
    berlin = client.get("/api/v1/customers/5000", headers=manager).json()
    assert berlin["name"] == '=HYPERLINK("http://evil.example")'  # text, as given
    assert berlin["contacts"][0]["name"] == "=1+2"  # the export's text mark removed
    again = client.post(
        "/api/v1/customers/import", content=CUSTOMERS.encode(), headers={**manager, **CSV}
    )
    assert again.json() == {"rows": 3, "inserted": 0, "skipped": 2}
    devices = client.post(
        "/api/v1/devices/import", content=DEVICES.encode(), headers={**auth("admin"), **CSV}
    )
    assert devices.status_code == 200, devices.text
    assert devices.json() == {"rows": 2, "inserted": 2}
    found = client.get("/api/v1/lookup", params={"ani": "+81661234567"}, headers=manager).json()
    assert [d["id"] for d in found["devices"]] == ["imaging-a1"]
    exported = client.get("/api/v1/customers/export", headers=manager)
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    names = {r["name"] for r in rows}
    assert '\'=HYPERLINK("http://evil.example")' in names  # a spreadsheet shows it as text
    assert "'=1+2" in {r["contact_name"] for r in rows}
    with Session(engine) as session:
        actions = [e.action for e in session.exec(select(AuditEntry)).all()]
    assert actions.count("customer.create") == 2
    assert actions.count("device.import") == 1


def test_one_bad_row_imports_nothing_and_every_bad_line_is_named(
    client: TestClient, auth: Auth
) -> None:
    manager = auth("manager")
    bad = (
        "number,name,country,contact_name,contact_phone,contact_email\n"
        "1,Good,JP,A,03-1234-5678,\n"
        "2,Bad phone,JP,B,12,\n"
        "3,Bad country,Japan,,,\n"
        "../4,Bad number,,,,\n"
        "5,Bad mail,,E,,no-at-sign\n"
    )
    answer = client.post(
        "/api/v1/customers/import", content=bad.encode(), headers={**manager, **CSV}
    )
    assert answer.status_code == 422
    problems = {(p["line"], p["field"]) for p in answer.json()["detail"]}
    assert problems == {
        (3, "contact_phone"),
        (4, "country"),
        (5, "number"),
        (6, "contact_email"),
    }
    assert client.get("/api/v1/customers", headers=manager).json()["count"] == 0
    devices = client.post(
        "/api/v1/devices/import",
        content=b"serial,model,type,customer_number\nX,M,toaster,1\nY,M,mfp,999\n",
        headers={**auth("admin"), **CSV},
    )
    assert devices.status_code == 422
    assert {(p["line"], p["field"]) for p in devices.json()["detail"]} == {
        (2, "type"),
        (3, "customer_number"),
    }
    for body in (b"", b"bogus\n1\n", b"number,name\n1,\x00\n", b"number,name\n1,\xff\n"):
        answer = client.post("/api/v1/customers/import", content=body, headers={**manager, **CSV})
        assert answer.status_code == 422, body
        assert answer.json()["detail"][0]["line"] >= 1


def test_roles_and_media_types(client: TestClient, auth: Auth) -> None:
    refused = client.post(
        "/api/v1/customers/import", content=CUSTOMERS.encode(), headers={**auth("operator"), **CSV}
    )
    assert refused.status_code == 403
    by_manager = client.post(
        "/api/v1/devices/import", content=DEVICES.encode(), headers={**auth("manager"), **CSV}
    )
    assert by_manager.status_code == 403
    assert client.get("/api/v1/customers/export", headers=auth("operator")).status_code == 403
    json_body = client.post("/api/v1/customers/import", json={}, headers=auth("manager"))
    assert json_body.status_code == 415
    uploaded = client.post(
        "/api/v1/customers/import",
        files={"file": ("c.csv", CUSTOMERS.encode(), "text/csv")},
        headers=auth("manager"),
    )
    assert uploaded.status_code == 200, uploaded.text


def test_a_huge_file_is_refused_before_it_is_read(settings: ServerSettings) -> None:
    small = settings.model_copy(update={"incident_import_max_bytes": 2048})
    with TestClient(create_app(small)) as client:
        from sqlmodel import Session as DbSession

        from server import crud

        with DbSession(client.app.state.engine) as session:  # type: ignore[attr-defined]
            crud.create_user(session, username="m", role="manager", password=PASSWORD)
        token = client.post(
            "/api/v1/auth/token", data={"username": "m", "password": PASSWORD}
        ).json()["access_token"]
        huge = "number,name\n" + "".join(f"{i},Customer {i}\n" for i in range(10_000))

        def chunks() -> object:
            data = huge.encode()
            for start in range(0, len(data), 1024):
                yield data[start : start + 1024]

        answer = client.post(
            "/api/v1/customers/import",
            content=chunks(),  # type: ignore[arg-type]
            headers={"Authorization": f"Bearer {token}", **CSV},
        )
        assert answer.status_code == 413
        assert "incident_import_max_bytes" in answer.json()["detail"]
        count = client.get(
            "/api/v1/customers", headers={"Authorization": f"Bearer {token}"}
        ).json()["count"]
        assert count == 0
