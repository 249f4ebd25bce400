"""ASA from the recorded calls per month, device type and region: dashboard, CSV, CLI table."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.cli.kpi import format_report
from server.kpi.calls import CALL_TABLE
from server.kpi.compute import compute_kpis
from server.models import Device
from tests.fixtures.api_auth import PASSWORD

JAN = datetime(2026, 1, 10, 9, tzinfo=UTC)
FEB = datetime(2026, 2, 10, 9, tzinfo=UTC)
PERIOD = {"from": "2026-01-01", "through": "2026-03-31"}


def _calls(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(
            Device(id="mfp-1", serial="S1", model="m", type="mfp", customer="c", region="north")
        )
        session.add(
            Device(id="srv-1", serial="S2", model="m", type="server", customer="c", region="south")
        )
        session.commit()
    rows = [
        (JAN, 20.0, "mfp-1"),
        (JAN + timedelta(days=1), 40.0, "srv-1"),
        (FEB, 90.0, "mfp-1"),
        (FEB + timedelta(days=1), None, None),  # unanswered, no device
    ]
    with engine.begin() as connection:
        connection.execute(
            sa.insert(CALL_TABLE),
            [
                {
                    "ani": "+41445551234",
                    "started_at": started,
                    "answered_at": None if wait is None else started + timedelta(seconds=wait),
                    "device_id": device,
                }
                for started, wait, device in rows
            ],
        )


def _manager(client: TestClient, engine: Engine) -> None:
    with Session(engine) as session:
        crud.create_user(session, username="mona", role="manager", password=PASSWORD)
    answer = client.post(
        "/login",
        data={"username": "mona", "password": PASSWORD, "next": "/dashboard"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def test_the_dashboard_charts_and_exports_asa_from_calls_per_month(
    client: TestClient, engine: Engine
) -> None:
    _calls(engine)
    _manager(client, engine)
    page = client.get("/dashboard", params=PERIOD)
    assert page.status_code == 200
    chart = '<div class="charts" id="call-charts">\n    <figure class="chart" data-series='
    assert chart + '"calls_asa_seconds">' in page.text
    found = re.search(r'id="trend-data">(.*?)</script>', page.text, re.S)
    assert found is not None
    trends = json.loads(found.group(1))
    assert trends["months"] == ["2026-01", "2026-02", "2026-03"]
    assert trends["series"]["calls_asa_seconds"] == [30.0, 90.0, None]
    assert trends["kinds"]["calls_asa_seconds"] == "seconds"
    assert "3 of 4 calls answered" in page.text

    answer = client.get("/dashboard/export.csv", params=PERIOD)
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    cells = {
        (r["group_by"], r["key"]): (r["calls"], r["calls_answered"], r["calls_asa_seconds"])
        for r in rows
    }
    assert cells[("month", "2026-01")] == ("2", "2", "30")
    assert cells[("month", "2026-02")] == ("2", "1", "90")
    assert cells[("month", "2026-03")] == ("0", "0", "")
    assert cells[("device_type", "mfp")] == ("2", "2", "55")
    assert cells[("device_type", "server")] == ("1", "1", "40")
    assert cells[("region", "north")] == ("2", "2", "55")
    assert cells[("region", "south")] == ("1", "1", "40")
    assert cells[("region", "")] == ("1", "0", "")  # the call with no device
    assert cells[("total", "")] == ("4", "3", "50")


def test_the_cli_table_has_a_column_for_asa_from_calls(engine: Engine) -> None:
    _calls(engine)
    with engine.connect() as connection:
        report = compute_kpis(
            connection,
            start=datetime(2026, 1, 1, tzinfo=UTC),
            end=datetime(2026, 3, 1, tzinfo=UTC),
            group_by="month",
        )
    lines = format_report(report).splitlines()
    header = re.split(r"\s{2,}", lines[3].strip())  # headings have single spaces
    column = header.index("asa-c s")
    by_key = {line.split()[0]: line.split() for line in lines[5:] if line[:1].isdigit()}
    assert by_key["2026-01"][column] == "30"
    assert by_key["2026-02"][column] == "90"
    total = next(line.split() for line in lines if line.startswith("total"))
    assert total[column] == "50"
    assert any("asa-c s: mean time from ring to answer" in line for line in lines)
