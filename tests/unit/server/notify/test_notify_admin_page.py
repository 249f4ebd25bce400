"""The admin's notifications page: add a rule (its secret shown once), test it, remove it."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.models import AuditEntry
from server.models.notify import NotifyOutbox, NotifyRuleRecord
from tests.fixtures.api_auth import PASSWORD


def _login(client: TestClient, engine: Engine, name: str, role: str) -> str:
    with Session(engine) as session:
        crud.create_user(session, username=name, role=role, password=PASSWORD)
    client.cookies.clear()
    answer = client.post("/login", data={"username": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    page = client.get("/account").text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


def test_an_admin_adds_tests_and_removes_a_webhook_rule(client: TestClient, engine: Engine) -> None:
    csrf = _login(client, engine, "ada", "admin")
    page = client.get("/admin/notify")
    assert page.status_code == 200
    assert "No rule yet" in page.text
    added = client.post(
        "/admin/notify/rules",
        data={
            "csrf_token": csrf,
            "name": "helpdesk",
            "events": ["fault", "consent"],
            "severity": "error",
            "device_types": ["imaging"],
            "customers": "4711, Acme",
            "webhook_url": "https://user:pw@hooks.example/fieldlink?token=abc",
        },
    )
    assert added.status_code == 200, added.text
    secret = added.text.split('<code id="rule-secret">', 1)[1].split("<", 1)[0]
    assert len(secret) >= 32
    listed = client.get("/admin/notify").text
    assert 'data-rule="helpdesk"' in listed
    assert secret not in listed  # shown once
    assert "pw@" not in listed
    assert "token=abc" not in listed
    tested = client.post(
        "/admin/notify/rules/helpdesk/test", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert tested.status_code == 303
    assert _count(engine, NotifyOutbox.__table__) == 1  # type: ignore[attr-defined]
    assert "data-message=" in client.get("/admin/notify").text
    removed = client.post(
        "/admin/notify/rules/helpdesk/delete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert removed.status_code == 303
    assert _count(engine, NotifyRuleRecord.__table__) == 0  # type: ignore[attr-defined]
    with Session(engine) as session:
        actions = session.exec(sa.select(AuditEntry.action)).all()  # type: ignore[call-overload]
    assert {"notify.rule_add", "notify.rule_delete"} <= {a for (a,) in actions}


def test_bad_rules_get_a_clear_error_and_nothing_is_stored(
    client: TestClient, engine: Engine
) -> None:
    csrf = _login(client, engine, "ada", "admin")
    for data, says in (
        ({"name": "x", "webhook_url": "file:///etc/passwd"}, "http"),
        ({"name": "bad name!", "email_to": "a@b.example"}, "name"),
        ({"name": "big", "hold_s": "999999"}, "hold_s"),
        ({"name": "nothing"}, ""),
    ):
        answer = client.post("/admin/notify/rules", data={"csrf_token": csrf, **data})
        assert answer.status_code == 422, (data, answer.text[:300])
        assert 'role="alert"' in answer.text
        assert says in answer.text
    assert _count(engine, NotifyRuleRecord.__table__) == 0  # type: ignore[attr-defined]


def test_only_an_admin_with_the_csrf_token_changes_rules(
    client: TestClient, engine: Engine
) -> None:
    csrf = _login(client, engine, "mona", "manager")
    assert client.get("/admin/notify").status_code == 403
    refused = client.post(
        "/admin/notify/rules", data={"csrf_token": csrf, "name": "r", "email_to": "a@b.example"}
    )
    assert refused.status_code == 403
    _login(client, engine, "ada", "admin")
    forged = client.post("/admin/notify/rules", data={"name": "r", "email_to": "a@b.example"})
    assert forged.status_code == 403
    assert _count(engine, NotifyRuleRecord.__table__) == 0  # type: ignore[attr-defined]
