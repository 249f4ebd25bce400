"""Shared fixtures of the integration tests: the device's web panel (the sessions tests) and
the incidents and KPI API in process (test_kpi_api, test_incident_csv_safety)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.incidents_api import Auth, engine_of, make_auth, start_client
from tests.fixtures.kpi_reference import add_devices
from tests.fixtures.web_panel import web_panel_server


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The server app in process on a fresh SQLite file, with the reference devices."""
    with start_client(tmp_path, "a.db") as test_client:
        add_devices(engine_of(test_client))
        yield test_client


@pytest.fixture
def auth(client: TestClient) -> Auth:
    """Bearer headers for a user of the given role, made on first use."""
    return make_auth(client)


@pytest.fixture(scope="module")
def web_panel() -> Iterator[int]:
    """The device's own web panel: an HTTP server on loopback (its port)."""
    with web_panel_server() as port:
        yield port
