"""Maintenance windows on SQLite and PostgreSQL, and ``fieldlink window`` against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
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
from server.crud.customers import create_customer
from server.ingest.incidents import apply_fault_incidents
from server.main import create_app
from server.maintenance.records import covered
from server.models import DeviceCreate, Incident
from server.models.customer import CustomerCreate
from tests.fixtures.api_auth import engine_of, make_auth
from tests.fixtures.cli import declare_commands, fieldlink
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import ServerProcess
from tests.fixtures.server_app import app_settings

pytestmark = pytest.mark.integration
URL = "/api/v1/maintenance-windows"


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = app_settings(tmp_path, database_url)
    with TestClient(create_app(settings)) as test_client:
        with Session(engine_of(test_client)) as db:
            create_customer(db, data=CustomerCreate(number="C-1", name="Clinic"))
            for device_id, site in (("mfp-a", "Ward 3"), ("mfp-b", "Lobby")):
                crud.create_device(
                    db,
                    data=DeviceCreate(
                        id=device_id, serial=device_id, model="C3000", type="mfp",
                        customer_number="C-1", site=site,
                    ),
                )  # fmt: skip
        yield test_client


def _fault(device_id: str, at: datetime) -> dict[str, Any]:
    return {
        "device_id": device_id, "code": "SC-541", "raised_at": at, "message": "fuser",
        "open": True, "cleared_at": None, "source": "device", "severity": "critical",
    }  # fmt: skip


def test_a_site_window_silences_that_site_only_on_both_databases(client: TestClient) -> None:
    auth = make_auth(client)
    # Every day 01:00-03:00 in Tokyo (16:00-18:00 UTC), for the Ward 3 site.
    made = client.post(
        URL,
        json={
            "customer_number": "C-1", "site": "Ward 3", "start": "2026-01-01T01:00:00",
            "timezone": "Asia/Tokyo", "duration_minutes": 120, "rrule": "FREQ=DAILY",
        },
        headers=auth("operator"),
    )  # fmt: skip
    assert made.status_code == 201, made.text
    inside = datetime(2026, 6, 1, 16, 30, tzinfo=UTC)
    outside = inside + timedelta(hours=3)
    engine: Engine = engine_of(client)
    with engine.connect() as conn:
        found = covered(conn, [("mfp-a", inside), ("mfp-a", outside), ("mfp-b", inside)])
    assert found == {("mfp-a", inside): made.json()["id"]}
    with engine.begin() as conn:
        apply_fault_incidents(conn, [_fault("mfp-a", inside), _fault("mfp-b", inside)], [])
        apply_fault_incidents(conn, [{**_fault("mfp-a", outside), "code": "SC-542"}], [])
    with Session(engine) as db:
        rows = db.execute(
            sa.select(Incident.device_id, Incident.error_code).order_by(Incident.device_id)  # type: ignore[arg-type]
        ).all()
    assert [tuple(r) for r in rows] == [("mfp-a", "SC-542"), ("mfp-b", "SC-541")]


@pytest.fixture
def server(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", mosquitto.url) as process:
        yield process


def test_fieldlink_window_plans_lists_and_removes_over_the_api(
    tmp_path: Path, server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = server.cli("user", "add", "otto", "--role", "operator", stdin="otto-password\n")
    assert made.returncode == 0, made.stderr
    server.register("mfp-w-1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
    env["FIELDLINK_CREDENTIALS"] = str(tmp_path / "credentials.json")
    login = subprocess.run(
        [sys.executable, "-m", "shared", "login", "--server", server.url, "--user", "otto"],
        input="otto-password\n", capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    declare_commands(monkeypatch)

    def window(*args: str) -> Any:
        return fieldlink(
            "window", *args, env={"FIELDLINK_CREDENTIALS": env["FIELDLINK_CREDENTIALS"]}
        )

    added = window(
        "add", "--device", "mfp-w-1", "--start", "2026-12-13T02:00:00", "--minutes", "90",
        "--rrule", "FREQ=WEEKLY;BYDAY=SU", "--tz", "Europe/Berlin", "--reason", "firmware",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("window 1 for mfp-w-1; next (UTC): ")
    listed = window("list", "--device", "mfp-w-1")
    assert listed.returncode == 0, listed.stderr
    assert "FREQ=WEEKLY;BYDAY=SU" in listed.stdout
    assert "Europe/Berlin" in listed.stdout
    hostile = window(
        "add", "--device", "mfp-w-1", "--start", "2026-12-13T02:00:00", "--minutes", "5",
        "--rrule", "FREQ=SECONDLY",
    )  # fmt: skip
    assert hostile.returncode != 0
    assert hostile.stderr.count("\n") == 1
    assert "FREQ must be DAILY" in hostile.stderr
    refused = window(
        "add", "--device", "mfp-w-1", "--start", "2026-12-13T02:00:00", "--minutes", "5",
        "--preapprove-sessions",
    )  # fmt: skip
    assert refused.returncode != 0
    assert "administrator" in refused.stderr
    gone = window("delete", "1")
    assert gone.returncode == 0, gone.stderr
    assert window("list").stdout.count("mfp-w-1") == 0
