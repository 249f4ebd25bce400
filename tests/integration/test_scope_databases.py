"""Scoped access on SQLite and PostgreSQL: the scope's filters (a device's region falls back
to its customer's, KPIs over the scoped fleet, the knowledge base's notes) and every route
asked about another customer's things, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import Session

from server.main import create_app
from server.models import Device
from tests.fixtures.api_auth import engine_of, make_auth
from tests.fixtures.route_roles import check_out_of_scope_is_hidden
from tests.fixtures.scoped_fleet import build_fleet, scoped_auth, scoped_users
from tests.fixtures.server_app import app_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = app_settings(tmp_path, database_url)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_scoped_lists_and_kpis(client: TestClient, tmp_path: Path) -> None:
    ours, theirs = build_fleet(engine_of(client), tmp_path / "recordings")
    with Session(engine_of(client)) as db:  # our device's own region wins over its customer's
        device = db.get(Device, ours.device_id)
        assert device is not None
        device.region = "apac"
        db.add(device)
        db.commit()
    apac = scoped_auth(client, "apac-lead", "manager", regions=["APAC"])
    listed = client.get("/api/v1/devices", headers=apac).json()
    assert {d["id"] for d in listed["items"]} == {ours.device_id, theirs.device_id}
    eu = scoped_auth(client, "eu-lead", "manager", regions=["eu"])
    assert client.get("/api/v1/devices", headers=eu).json()["count"] == 0
    both = scoped_auth(client, "dealer", "manager", customers=[theirs.number], regions=["APAC"])
    kpis = client.get("/api/v1/kpis?group_by=region", headers=both).json()
    assert kpis["total"]["incidents_closed"] == 1
    # Their device has no region (its incident: group None); the call of their customer
    # is grouped by the customer's region (APAC), with no incident.
    closed = {g["key"]: g["incidents_closed"] for g in kpis["groups"]}
    assert closed[None] == 1
    assert sum(closed.values()) == 1
    whole = client.get("/api/v1/kpis?group_by=month", headers=make_auth(client)("manager")).json()
    assert whole["total"]["incidents_closed"] == 2
    notes = client.get("/api/v1/knowledge?q=restarted", headers=both).json()
    assert {hit["device_id"] for hit in notes["items"]} == {theirs.device_id}
    assert notes["count"] == 1


def test_every_route_hides_another_customers_things(client: TestClient, tmp_path: Path) -> None:
    ours, theirs = build_fleet(engine_of(client), tmp_path / "recordings")
    checked = check_out_of_scope_is_hidden(
        client, scoped_users(client, ours), theirs, allowed={503}
    )
    assert checked > 100


def test_the_scoped_knowledge_search_resolves_the_scope_in_its_own_statement(
    client: TestClient, tmp_path: Path
) -> None:
    ours, theirs = build_fleet(engine_of(client), tmp_path / "recordings")
    dealer = scoped_auth(client, "dealer", "manager", customers=[theirs.number])
    eu = scoped_auth(client, "eu-lead", "manager", regions=["eu"])
    latam = scoped_auth(client, "latam-lead", "manager", regions=["latam"])
    site = scoped_auth(client, "ours-op", "operator", customers=[ours.number])
    engine = engine_of(client)
    executed: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        executed.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        notes = client.get("/api/v1/knowledge?q=restarted", headers=dealer).json()
        none = client.get("/api/v1/knowledge?q=restarted", headers=latam).json()
        europe = client.get("/api/v1/knowledge?q=restarted", headers=eu).json()
        own = client.get("/api/v1/knowledge?q=restarted", headers=site).json()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert {hit["device_id"] for hit in notes["items"]} == {theirs.device_id}
    assert notes["count"] == 1
    assert {hit["device_id"] for hit in own["items"]} == {ours.device_id}
    assert none["count"] == 0
    assert {hit["device_id"] for hit in europe["items"]} == {ours.device_id}
    searches = [(s, p) for s, p in executed if "incident" in s and ("fts" in s or "@@" in s)]
    assert len(searches) == 4
    for statement, parameters in searches:
        assert "FROM device" in statement  # the scope as a subquery
        values = parameters.values() if isinstance(parameters, dict) else parameters
        assert not any(theirs.device_id in str(v) or ours.device_id in str(v) for v in values)
    # No statement of its own fetches the scope's device ids first.
    assert not any(s.lstrip().startswith("SELECT device.id") for s, _ in executed)
