"""Accounts after creation, over the API: list, disable, re-role, remove, passwords."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit, crud
from tests.fixtures.api_auth import PASSWORD

Auth = Callable[[str], dict[str, str]]


def _entries(engine: Engine, action: str) -> list[Any]:
    with Session(engine) as session:
        rows, _ = audit.list_entries(session, action=action, limit=100)
        return [row.model_copy() for row in rows]


def _login(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/auth/token", data={"username": name, "password": password})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_admins_list_users_without_their_hashes(client: TestClient, auth: Auth) -> None:
    auth("operator")
    answer = client.get("/api/v1/users", headers=auth("admin"))
    assert answer.status_code == 200
    page = answer.json()
    assert page["count"] == 2
    assert [u["username"] for u in page["items"]] == ["admin1", "operator1"]
    assert "password_hash" not in answer.text
    assert client.get("/api/v1/users", headers=auth("manager")).status_code == 403


def test_disabling_revokes_tokens_and_is_audited(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    operator = auth("operator")
    admin = auth("admin")
    answer = client.patch("/api/v1/users/operator1", json={"disabled": True}, headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["disabled"] is True
    assert client.get("/api/v1/auth/me", headers=operator).status_code == 401
    assert _login(client, "operator1").status_code == 401
    (entry,) = _entries(engine, "user.disable")
    assert (entry.actor, entry.target) == ("admin1", "user:operator1")
    # Enabling again does not bring the old tokens back.
    client.patch("/api/v1/users/operator1", json={"disabled": False}, headers=admin)
    assert client.get("/api/v1/auth/me", headers=operator).status_code == 401
    assert _login(client, "operator1").status_code == 200
    assert len(_entries(engine, "user.enable")) == 1


def test_roles_change_and_the_last_admin_stays(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    admin = auth("admin")
    auth("operator")
    changed = client.patch("/api/v1/users/operator1", json={"role": "manager"}, headers=admin)
    assert changed.json()["role"] == "manager"
    (entry,) = _entries(engine, "user.role")
    assert '"from":"operator"' in entry.details
    assert '"to":"manager"' in entry.details
    for body in ({"disabled": True}, {"role": "operator"}):
        refused = client.patch("/api/v1/users/admin1", json=body, headers=admin)
        assert refused.status_code == 409, body
    assert client.delete("/api/v1/users/admin1", headers=admin).status_code == 409
    bad = client.patch("/api/v1/users/operator1", json={"role": "root"}, headers=admin)
    assert bad.status_code == 422
    assert client.patch("/api/v1/users/ghost", json={}, headers=admin).status_code == 404


def test_removing_a_user_takes_their_tokens(client: TestClient, engine: Engine, auth: Auth) -> None:
    operator = auth("operator")
    admin = auth("admin")
    assert client.delete("/api/v1/users/operator1", headers=admin).status_code == 204
    assert client.get("/api/v1/auth/me", headers=operator).status_code == 401
    assert client.delete("/api/v1/users/operator1", headers=admin).status_code == 404
    (entry,) = _entries(engine, "user.remove")
    assert entry.target == "user:operator1"
    with Session(engine) as session:  # the name is free again
        crud.create_user(session, username="operator1", role="operator", password=PASSWORD)


def test_changing_ones_password_ends_the_other_logins(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    here = auth("operator")
    elsewhere = _bearer(_login(client, "operator1").json()["access_token"])
    body = {"current_password": PASSWORD, "new_password": "a much better one"}
    wrong = client.post(
        "/api/v1/auth/password", json={**body, "current_password": "nope-nope"}, headers=here
    )
    assert wrong.status_code == 401
    short = client.post("/api/v1/auth/password", json={**body, "new_password": "x"}, headers=here)
    assert short.status_code == 422
    assert client.post("/api/v1/auth/password", json=body, headers=here).status_code == 204
    assert client.get("/api/v1/auth/me", headers=here).status_code == 200
    assert client.get("/api/v1/auth/me", headers=elsewhere).status_code == 401
    assert _login(client, "operator1").status_code == 401
    assert _login(client, "operator1", "a much better one").status_code == 200
    (entry,) = _entries(engine, "user.password_change")
    dump = repr(_entries(engine, "user.password_change")) + repr(_entries(engine, "login"))
    assert entry.actor == "operator1"
    assert PASSWORD not in dump
    assert "a much better one" not in dump


def test_a_reset_password_must_be_changed_before_anything_else(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    old = auth("operator")
    reset = client.post("/api/v1/users/operator1/password-reset", headers=auth("admin"))
    assert reset.status_code == 200
    temporary = reset.json()["temporary_password"]
    assert client.get("/api/v1/auth/me", headers=old).status_code == 401  # tokens revoked
    assert _login(client, "operator1").status_code == 401  # the old password is gone
    answer = _login(client, "operator1", temporary)
    assert answer.json()["password_change_required"] is True
    limited = _bearer(answer.json()["access_token"])
    refused = client.get("/api/v1/devices", headers=limited)
    assert refused.status_code == 403
    assert "new password is required" in refused.json()["detail"]
    assert client.get("/api/v1/auth/me", headers=limited).json()["must_change_password"] is True
    changed = client.post(
        "/api/v1/auth/password",
        json={"current_password": temporary, "new_password": "mine from now on"},
        headers=limited,
    )
    assert changed.status_code == 204
    assert client.get("/api/v1/devices", headers=limited).status_code == 200
    (entry,) = _entries(engine, "user.password_reset")
    assert temporary not in repr(entry)
