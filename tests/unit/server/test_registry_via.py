"""Devices watched over the network through a site gateway: ``via`` in the registry.

The API (422 with a clear message for a bad gateway), the command line (one line),
and the registry itself on SQLite and PostgreSQL (the ``database_url`` params).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from tests.fixtures.api_auth import PASSWORD
from tests.fixtures.cli import (
    config_fixture,  # noqa: F401 - the `config` fixture
    fieldlink,
)
from tests.fixtures.watched_devices import GATEWAY, PRINTER

Auth = Callable[[str], dict[str, str]]


def test_a_watched_printer_is_registered_via_its_gateway_without_a_token(
    client: TestClient, auth: Auth
) -> None:
    admin = auth("admin")
    assert client.post("/api/v1/devices", json=GATEWAY, headers=admin).status_code == 201
    answer = client.post("/api/v1/devices", json=PRINTER, headers=admin)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["device"]["via"] == "server-site-gw"
    assert body["enrollment_token"] is None
    shown = client.get("/api/v1/devices/mfp-3f-east", headers=admin).json()
    assert shown["via"] == "server-site-gw"
    assert shown["inventory"] is None
    listed = client.get("/api/v1/devices", headers=admin).json()["items"]
    assert {d["id"]: d["via"] for d in listed} == {
        "mfp-3f-east": "server-site-gw",
        "server-site-gw": None,
    }
    # A watched device runs no agent: no enrollment token for it, ever.
    again = client.post("/api/v1/devices/mfp-3f-east/enrollment-token", headers=admin)
    assert again.status_code == 409
    assert "watched via" in again.json()["detail"]


@pytest.mark.parametrize(
    ("via", "message"),
    [
        ("server-nowhere", "no registered gateway 'server-nowhere'"),
        ("mfp-3f-east", "cannot be watched through itself"),
        ("mfp-watched", "is itself watched through 'server-site-gw'"),
        ("Not_An_Id", "via"),
    ],
)
def test_a_bad_gateway_answers_422_with_a_clear_message(
    client: TestClient, auth: Auth, via: str, message: str
) -> None:
    admin = auth("admin")
    client.post("/api/v1/devices", json=GATEWAY, headers=admin)
    client.post(
        "/api/v1/devices", json={**PRINTER, "id": "mfp-watched", "serial": "W-1"}, headers=admin
    )
    answer = client.post("/api/v1/devices", json={**PRINTER, "via": via}, headers=admin)
    assert answer.status_code == 422, answer.text
    assert message in str(answer.json()["detail"])
    assert client.get("/api/v1/devices/mfp-3f-east", headers=admin).status_code == 404


def test_device_add_via_on_the_command_line(config: Path) -> None:
    common = ["--model", "m", "--customer", "Acme", "--config", str(config)]
    gateway = fieldlink(
        "device", "add", "--serial", "GW-1", "--type", "server", "--id", "server-gw", *common
    )
    assert gateway.returncode == 0, gateway.stderr
    done = fieldlink(
        "device", "add", "--serial", "XK-1", "--type", "mfp", "--via", "server-gw", "--json",
        *common,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "id": "mfp-xk-1",
        "via": "server-gw",
        "enrollment_token": None,
    }
    unknown = fieldlink(
        "device", "add", "--serial", "XK-2", "--type", "mfp", "--via", "server-nope", *common
    )
    assert unknown.returncode != 0
    assert "no registered gateway 'server-nope'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert "Traceback" not in unknown.stderr


def test_the_console_shows_the_gateway_inventory_and_a_wrong_serial(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    admin = auth("admin")
    client.post("/api/v1/devices", json=GATEWAY, headers=admin)
    client.post("/api/v1/devices", json=PRINTER, headers=admin)
    with Session(engine) as session:
        device = crud.get_device(session, device_id="mfp-3f-east")
        device.inventory = {"serial": "OTHER-9", "model": "MP C3004", "firmware": "1.2"}
        session.add(device)
        session.commit()
    login = client.post(
        "/login",
        data={"username": "admin1", "password": PASSWORD, "next": "/desk"},
        follow_redirects=False,
    )
    assert login.status_code == 303, login.text
    page = client.get("/devices/mfp-3f-east").text
    assert 'href="/devices/server-site-gw"' in page
    assert 'data-mismatch="true"' in page
    assert "OTHER-9" in page
    assert "MP C3004" in page
    gateway_page = client.get("/devices/server-site-gw").text
    assert 'href="/devices/mfp-3f-east"' in gateway_page
    desk = client.get("/desk").text
    assert "via <a" in desk
    # The admin's device list: the gateway, the wrong serial, no enrollment token to
    # offer for a watched printer; the registration form offers the gateways for "via".
    admin_page = client.get("/admin/devices").text
    assert 'name="via"' in admin_page
    assert '<option value="server-site-gw">' in admin_page
    assert '<option value="mfp-3f-east">' not in admin_page
    assert "reports serial OTHER-9" in admin_page
    assert 'data-token="mfp-3f-east"' not in admin_page
    assert 'data-token="server-site-gw"' in admin_page
