"""Accounts after creation, over the API: list, disable, re-role, remove, passwords.

The part of tests/unit/server/test_users_api.py that leaves the test's process
(it runs on PostgreSQL too); the in-process rest stays there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.logins import LoginPolicy, clear_failures
from server.main import create_app
from tests.fixtures.api_auth import PASSWORD
from tests.fixtures.server_app import app_settings


def _login(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/auth/token", data={"username": name, "password": password})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_accounts_and_login_limits_on_each_database(database_url: str, tmp_path: Path) -> None:
    """The same flows on SQLite and PostgreSQL: throttle keys, unlock, disable, remove."""
    settings = app_settings(tmp_path, database_url)
    app = create_app(settings)
    app.state.login_policy = LoginPolicy(max_failures=3, ip_max_failures=5, delay_step_s=0.0)
    with TestClient(app) as client:
        engine: Engine = app.state.engine
        with Session(engine) as session:
            for name, role in (("root_1", "admin"), ("olga", "operator")):
                crud.create_user(session, username=name, role=role, password=PASSWORD)
        admin = _bearer(_login(client, "root_1").json()["access_token"])
        for name in ("a", "b", "c", "d", "e"):
            assert _login(client, name, "guess").status_code == 401
        assert _login(client, "olga").status_code == 429  # the address is locked for her
        assert _login(client, "root_1").status_code == 200  # a known client is not
        with Session(engine) as session:
            assert clear_failures(session, username="a") == ["testclient"]
            session.commit()
        olga = _bearer(_login(client, "olga").json()["access_token"])
        assert client.patch("/api/v1/users/olga", json={"disabled": True}, headers=admin).json()[
            "disabled"
        ]
        assert client.get("/api/v1/auth/me", headers=olga).status_code == 401
        assert client.delete("/api/v1/users/olga", headers=admin).status_code == 204
        assert [
            u["username"] for u in client.get("/api/v1/users", headers=admin).json()["items"]
        ] == ["root_1"]
