"""The audit API: admins only, filters, pages, the chain check; every route declares a role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit
from server.config import ServerSettings
from server.main import create_app
from shared.ids import isoformat_z, utcnow
from tests.fixtures.route_roles import (
    check_a_role_below_the_needed_one_gets_403,
    check_every_api_route_declares_a_role,
    check_no_credentials_gets_401_everywhere,
    with_audit_routes,
)

Auth = Callable[[str], dict[str, str]]


@pytest.fixture
def client(settings: ServerSettings) -> Iterator[TestClient]:
    """The app with the audit routes registered."""
    with TestClient(with_audit_routes(create_app(settings))) as test_client:
        yield test_client


def _seed(engine: Engine) -> None:
    with Session(engine) as session:
        audit.record(session, actor="admin1", action="device.register", target="device:mfp-1")
        audit.record(session, actor="admin1", action="device.revoke", target="device:mfp-1")
        audit.record(session, actor="system", action="session.close", target="session:s1")
        audit.record(
            session,
            actor="device:mfp-1",
            action="device.renew",
            target="device:mfp-1",
            details={"serial": 7},
            source_ip="192.0.2.1",
        )
        session.commit()


@pytest.mark.parametrize("path", ["/api/v1/audit", "/api/v1/audit/verify"])
def test_only_admins_read_the_audit_log(client: TestClient, auth: Auth, path: str) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers=auth("operator")).status_code == 403
    assert client.get(path, headers=auth("manager")).status_code == 403
    assert client.get(path, headers=auth("admin")).status_code == 200


def test_list_filters_and_pages(client: TestClient, engine: Engine, auth: Auth) -> None:
    admin = auth("admin")  # its creation and its login are audited too
    _seed(engine)
    everything = client.get("/api/v1/audit", headers=admin).json()
    assert everything["count"] == 6
    assert [item["action"] for item in everything["items"]][:2] == ["device.renew", "session.close"]
    renew = everything["items"][0]
    assert renew["details"] == {"serial": 7}
    assert renew["source_ip"] == "192.0.2.1"
    assert [item["action"] for item in everything["items"]][-2:] == ["login", "user.create"]

    def count(query: str) -> int:
        answer = client.get(f"/api/v1/audit?{query}", headers=admin)
        assert answer.status_code == 200, answer.text
        total: int = answer.json()["count"]
        return total

    assert count("actor=admin1") == 3  # two seeded and the login
    assert count("action=device.*") == 3
    assert count("action=device.revoke") == 1
    assert count("target=device:mfp-1") == 3
    assert count("actor=nobody") == 0
    soon = isoformat_z(utcnow() + timedelta(minutes=1))
    past = isoformat_z(utcnow() - timedelta(hours=1))
    assert count(f"since={soon}") == 0
    assert count(f"since={past}&until={soon}") == 6
    page = client.get("/api/v1/audit?limit=2&offset=1", headers=admin).json()
    assert page["count"] == 6
    assert [item["id"] for item in page["items"]] == [5, 4]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "offset=-1", "since=yesterday", "since=2026-01-01T00:00:00"]
)
def test_bad_filters_get_422(client: TestClient, auth: Auth, query: str) -> None:
    assert client.get(f"/api/v1/audit?{query}", headers=auth("admin")).status_code == 422


def test_verify_reports_intact_then_the_broken_entry(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    admin = auth("admin")
    _seed(engine)
    intact = client.get("/api/v1/audit/verify", headers=admin).json()
    assert intact == {
        "intact": True,
        "entries": 6,
        "broken_at": None,
        "reason": None,
        "message": "audit log intact: 6 entries",
    }
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE audit_entry SET target = 'device:x' WHERE id = 3"))
    broken = client.get("/api/v1/audit/verify", headers=admin).json()
    assert broken["intact"] is False
    assert broken["broken_at"] == 3
    assert broken["message"] == "audit log BROKEN at entry #3: its content does not match its hash"


# The route-table checks of test_route_roles, run again on the app with the audit routes.


def test_every_api_route_declares_a_role(client: TestClient) -> None:
    check_every_api_route_declares_a_role(client)


def test_no_credentials_gets_401_everywhere(client: TestClient) -> None:
    check_no_credentials_gets_401_everywhere(client)


def test_a_role_below_the_needed_one_gets_403(client: TestClient, auth: Auth) -> None:
    check_a_role_below_the_needed_one_gets_403(client, auth)
