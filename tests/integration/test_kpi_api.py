"""The incidents and KPI API over HTTP: recording, closing, bad input, CSV, roles."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.incidents_api import (
    HEADER,
    OPENED,
    Auth,
    engine_of,
    import_csv,
    make_auth,
    start_client,
)
from tests.fixtures.kpi_reference import add_devices

pytestmark = pytest.mark.integration


def count(client: TestClient, auth: Auth) -> int:
    answer = client.get("/api/v1/incidents", headers=auth("operator"))
    assert answer.status_code == 200, answer.text
    total: int = answer.json()["count"]
    return total


def test_operator_records_closes_and_finds_an_incident(client: TestClient, auth: Auth) -> None:
    operator = auth("operator")
    created = client.post(
        "/api/v1/incidents",
        json={
            "device_id": "mfp-a",
            "opened_at": "2026-03-02T10:00:00+01:00",
            "channel": "phone",
            "symptom": "paper jam in tray 2",
            "external_id": "CC-1",
        },
        headers=operator,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["state"] == "open"
    assert body["opened_at"] == OPENED
    assert body["down_at"] == OPENED
    assert body["device_type"] == "mfp"
    assert body["session_ids"] == []
    closed = client.patch(
        f"/api/v1/incidents/{body['id']}",
        json={
            "resolution": "phone",
            "restored_at": "2026-03-02T09:40:00Z",
            "closed_at": "2026-03-02T09:45:00Z",
        },
        headers=operator,
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["state"] == "closed"
    assert closed.json()["resolution"] == "phone"
    fetched = client.get(f"/api/v1/incidents/{body['id']}", headers=operator).json()
    assert fetched["restored_at"] == "2026-03-02T09:40:00Z"
    reopened = client.patch(
        f"/api/v1/incidents/{body['id']}", json={"closed_at": None}, headers=operator
    )
    assert reopened.json()["state"] == "open"
    assert client.get("/api/v1/incidents/999", headers=operator).status_code == 404


def test_list_filters_and_pages(client: TestClient, auth: Auth) -> None:
    operator = auth("operator")
    for day, device, resolution in ((2, "mfp-a", "remote"), (3, "mfp-b", None), (4, "mfp-a", None)):
        data = {"device_id": device, "opened_at": f"2026-03-0{day}T08:00:00Z"}
        if resolution:
            data |= {
                "resolution": resolution,
                "restored_at": f"2026-03-0{day}T09:00:00Z",
                "closed_at": f"2026-03-0{day + 3}T09:00:00Z",
            }
        assert client.post("/api/v1/incidents", json=data, headers=operator).status_code == 201

    def listed(**params: str) -> list[str]:
        answer = client.get("/api/v1/incidents", params=params, headers=operator)
        assert answer.status_code == 200, answer.text
        return [i["opened_at"][8:10] for i in answer.json()["items"]]

    assert listed() == ["04", "03", "02"]
    assert listed(device_id="mfp-a") == ["04", "02"]
    assert listed(customer="Globex") == ["03"]
    assert listed(state="open") == ["04", "03"]
    assert listed(state="closed", resolution="remote") == ["02"]
    assert listed(**{"from": "2026-03-03T08:00:00Z", "to": "2026-03-04"}) == ["03"]
    assert listed(**{"from": "2026-03-05", "on": "closed_at"}) == ["02"]
    assert listed(limit="1", offset="1") == ["03"]
    page = client.get("/api/v1/incidents", params={"limit": 1}, headers=operator).json()
    assert page["count"] == 3
    bad = client.get("/api/v1/incidents", params={"state": "pending"}, headers=operator)
    assert bad.status_code == 422
    assert "state" in str(bad.json()["detail"])


BAD_INCIDENTS = {
    "device_id": {"device_id": "mfp-nope", "opened_at": OPENED},
    "restored_at": {
        "device_id": "mfp-a",
        "opened_at": OPENED,
        "down_at": "2026-03-02T08:00:00Z",
        "restored_at": "2026-03-02T07:00:00Z",
    },
    "closed_at": {
        "device_id": "mfp-a",
        "opened_at": OPENED,
        "resolution": "phone",
        "restored_at": "2026-03-02T10:00:00Z",
        "closed_at": "2026-03-02T08:00:00Z",
    },
    "resolution": {
        "device_id": "mfp-a",
        "opened_at": OPENED,
        "restored_at": "2026-03-02T10:00:00Z",
        "closed_at": "2026-03-02T11:00:00Z",
    },
    "opened_at": {"device_id": "mfp-a", "opened_at": "2026-03-02T09:00:00"},
    "answered_at": {"device_id": "mfp-a", "opened_at": OPENED, "answered_at": "2026-03-01T00:00Z"},
}


@pytest.mark.parametrize("field", [*BAD_INCIDENTS, "unknown_resolution", "channel", "no_restore"])
def test_bad_incidents_answer_422_naming_the_field(
    client: TestClient, auth: Auth, field: str
) -> None:
    body = BAD_INCIDENTS.get(field)
    if field == "unknown_resolution":
        body, field = (
            {"device_id": "mfp-a", "opened_at": OPENED, "resolution": "magic"},
            "resolution",
        )
    elif field == "channel":
        body = {"device_id": "mfp-a", "opened_at": OPENED, "channel": "pigeon"}
    elif field == "no_restore":
        body = {
            "device_id": "mfp-a",
            "opened_at": OPENED,
            "resolution": "phone",
            "closed_at": "2026-03-02T11:00:00Z",
        }
        field = "restored_at"
    answer = client.post("/api/v1/incidents", json=body, headers=auth("operator"))
    assert answer.status_code == 422, answer.text
    locations = [item["loc"][-1] for item in answer.json()["detail"]]
    assert field in locations, answer.json()
    assert count(client, auth) == 0


def test_bad_updates_answer_422_and_change_nothing(client: TestClient, auth: Auth) -> None:
    operator = auth("operator")
    created = client.post(
        "/api/v1/incidents", json={"device_id": "mfp-a", "opened_at": OPENED}, headers=operator
    ).json()
    url = f"/api/v1/incidents/{created['id']}"
    cases = {
        "resolution": {"closed_at": "2026-03-02T12:00:00Z", "restored_at": "2026-03-02T11:00Z"},
        "restored_at": {"restored_at": "2026-03-01T00:00:00Z"},
        "opened_at": {"opened_at": None},
    }
    for field, change in cases.items():
        answer = client.patch(url, json=change, headers=operator)
        assert answer.status_code == 422, answer.text
        assert field in [item["loc"][-1] for item in answer.json()["detail"]]
    unchanged = client.get(url, headers=operator).json()
    assert unchanged == {**created, "updated_at": unchanged["updated_at"]}
    assert unchanged["updated_at"] == created["updated_at"]


def test_external_id_is_unique(client: TestClient, auth: Auth) -> None:
    body = {"device_id": "mfp-a", "opened_at": OPENED, "external_id": "CC-7"}
    assert client.post("/api/v1/incidents", json=body, headers=auth("operator")).status_code == 201
    again = client.post("/api/v1/incidents", json=body, headers=auth("operator"))
    assert again.status_code == 409
    assert "CC-7" in again.json()["detail"]


GOOD_CSV = "\n".join(
    [
        HEADER,
        "CC-1,mfp-a,2026-03-02T09:00:00Z,2026-03-02T09:00:30Z,2026-03-02T10:00:00Z,"
        "2026-03-02T10:30:00Z,remote,toner smear",
        "CC-2,mfp-b,2026-03-03T09:00:00+01:00,,2026-03-03T20:00:00Z,2026-03-04T08:00:00Z,dispatch,"
        '"fuser error,\nSC-541"',
        "CC-3,imaging-a,2026-03-05T09:00:00Z,,,,,",
        "",
    ]
)


def test_csv_import_is_all_or_nothing_with_every_bad_line(client: TestClient, auth: Auth) -> None:
    bad = "\n".join(
        [
            HEADER,  # line 1
            "CC-1,mfp-a,2026-03-02T09:00:00Z,,,,,ok",  # line 2: fine
            'CC-2,mfp-a,2026-03-02T09:00:00Z,,,,,"two\nlines"',  # lines 3-4: fine
            "CC-3,mfp-zz,2026-03-02T09:00:00Z,,,,,",  # line 5: unknown device
            "CC-4,mfp-a,2026-03-02T09:00:00Z,,2026-03-01T00:00:00Z,,,",  # line 6: restored early
            "CC-5,mfp-a,2026-03-02T09:00:00Z,,,2026-03-03T00:00:00Z,,",  # line 7: no resolution
            "CC-1,mfp-a,2026-03-02T09:00:00Z,,,,,",  # line 8: external_id repeated
            "CC-9,mfp-a,yesterday,,,,,",  # line 9: not a time
            "CC-10,mfp-a,2026-03-02T09:00:00Z,,,,teleport,",  # line 10: unknown resolution
        ]
    )
    status_code, body = import_csv(client, auth, bad)
    assert status_code == 422, body
    assert isinstance(body, dict)
    problems = {(p["line"], p["field"]) for p in body["detail"]}
    assert problems >= {
        (5, "device_id"),
        (6, "restored_at"),
        (7, "resolution"),
        (7, "restored_at"),
        (8, "external_id"),
        (9, "opened_at"),
        (10, "resolution"),
    }
    assert {p["line"] for p in body["detail"]} == {5, 6, 7, 8, 9, 10}
    assert count(client, auth) == 0


def test_csv_header_problems_are_line_1(client: TestClient, auth: Auth) -> None:
    for text in ("device_id,opened_at,colour\n", "external_id,opened_at\n", ""):
        status_code, body = import_csv(client, auth, text)
        assert status_code == 422, text
        assert isinstance(body, dict)
        assert body["detail"][0]["line"] == 1


def test_csv_reimport_is_idempotent_and_updates_changed_rows(
    client: TestClient, auth: Auth
) -> None:
    assert import_csv(client, auth, GOOD_CSV) == (
        200,
        {"rows": 3, "inserted": 3, "updated": 0, "skipped": 0},
    )
    assert import_csv(client, auth, GOOD_CSV) == (
        200,
        {"rows": 3, "inserted": 0, "updated": 0, "skipped": 3},
    )
    changed = GOOD_CSV.replace("toner smear", "toner smear on every page")
    assert import_csv(client, auth, changed) == (
        200,
        {"rows": 3, "inserted": 0, "updated": 1, "skipped": 2},
    )
    assert count(client, auth) == 3
    items = client.get("/api/v1/incidents", headers=auth("operator")).json()["items"]
    by_external = {i["external_id"]: i for i in items}
    assert by_external["CC-1"]["symptom"] == "toner smear on every page"
    assert by_external["CC-2"]["symptom"] == "fuser error,\nSC-541"
    assert by_external["CC-2"]["opened_at"] == "2026-03-03T08:00:00Z"
    assert by_external["CC-3"]["state"] == "open"


def test_multipart_upload_and_wrong_media_type(client: TestClient, auth: Auth) -> None:
    answer = client.post(
        "/api/v1/incidents/import",
        files={"file": ("incidents.csv", GOOD_CSV.encode(), "text/csv")},
        headers=auth("manager"),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["inserted"] == 3
    wrong = client.post(
        "/api/v1/incidents/import",
        content=b"{}",
        headers={**auth("manager"), "Content-Type": "application/json"},
    )
    assert wrong.status_code == 415
    latin1 = client.post(
        "/api/v1/incidents/import",
        content="device_id,opened_at\nmfp-a,2026-03-02T09:00:00Z,\xe9\n".encode("latin-1"),
        headers={**auth("manager"), "Content-Type": "text/csv"},
    )
    assert latin1.status_code == 422


def test_export_round_trip(client: TestClient, auth: Auth, tmp_path: Path) -> None:
    assert import_csv(client, auth, GOOD_CSV)[0] == 200
    exported = client.get("/api/v1/incidents/export", headers=auth("manager"))
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["external_id"] for r in rows] == ["CC-1", "CC-2", "CC-3"]
    assert list(rows[0]) == list(incidents_columns())
    assert rows[1]["symptom"] == "fuser error,\nSC-541"
    assert rows[0]["remote_session_used"] == "false"
    filtered = client.get(
        "/api/v1/incidents/export",
        params={"state": "closed", "from": "2026-03-03", "on": "closed_at"},
        headers=auth("manager"),
    )
    assert [r["external_id"] for r in csv.DictReader(io.StringIO(filtered.text))] == ["CC-2"]
    with start_client(tmp_path, "b.db") as other:
        add_devices(engine_of(other))
        other_auth = make_auth(other)
        assert import_csv(other, other_auth, exported.text)[0] == 200
        again = other.get("/api/v1/incidents/export", headers=other_auth("manager")).text

    def without_id(text: str) -> list[dict[str, str]]:
        return [
            {k: v for k, v in row.items() if k != "id"} for row in csv.DictReader(io.StringIO(text))
        ]

    assert without_id(again) == without_id(exported.text)


def incidents_columns() -> tuple[str, ...]:
    from server.models.incident import CSV_COLUMNS

    return CSV_COLUMNS


def test_kpis_answer_as_kpis_md_shows(client: TestClient, auth: Auth) -> None:
    assert import_csv(client, auth, GOOD_CSV)[0] == 200
    answer = client.get(
        "/api/v1/kpis",
        params={"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "group_by": "month"},
        headers=auth("manager"),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body) == [
        "from",
        "to",
        "group_by",
        "baseline_ttr_hours",
        "baseline_source",
        "total",
        "groups",
        "calls",
    ]
    assert body["from"] == "2026-01-01T00:00:00Z"
    assert body["to"] == "2027-01-01T00:00:00Z"
    assert body["baseline_ttr_hours"] == {"mfp": 24.0, "imaging": 12.0, "server": 8.0}
    assert body["total"]["incidents_closed"] == 2
    assert body["total"]["self_resolution_rate"] == 0.5
    assert body["total"]["downtime_saved_hours"] == 23.0
    assert body["total"]["asa_seconds"] == 30.0
    assert len(body["groups"]) == 12
    assert body["groups"][2]["key"] == "2026-03"
    assert body["groups"][2]["incidents_closed"] == 2
    default = client.get("/api/v1/kpis", headers=auth("admin"))
    assert default.status_code == 200
    assert default.json()["group_by"] == "none"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "from"),
        ({"from": "not a date"}, "from"),
    ],
)
def test_bad_kpi_queries_answer_422(
    client: TestClient, auth: Auth, params: dict[str, str], field: str
) -> None:
    answer = client.get("/api/v1/kpis", params=params, headers=auth("manager"))
    assert answer.status_code == 422, answer.text
    assert field in str(answer.json()["detail"])


def test_roles(client: TestClient, auth: Auth) -> None:
    operator = auth("operator")
    assert client.get("/api/v1/kpis", headers=operator).status_code == 403
    assert client.get("/api/v1/incidents/export", headers=operator).status_code == 403
    imported = client.post(
        "/api/v1/incidents/import",
        content=GOOD_CSV.encode(),
        headers={**operator, "Content-Type": "text/csv"},
    )
    assert imported.status_code == 403
    assert count(client, auth) == 0
    assert client.get("/api/v1/incidents").status_code == 401
    assert client.get("/api/v1/kpis").status_code == 401
    assert client.get("/api/v1/kpis", headers=auth("manager")).status_code == 200
    assert client.get("/api/v1/incidents", headers=auth("manager")).status_code == 200
