"""``/api/v1/notify``: admins list, add, remove and test rules and read the outbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server import secretbox
from server.config import ServerSettings
from server.models import AuditEntry
from server.models.notify import NotifyRuleRecord
from server.notify.rules import NotifyRule
from server.notify.store import SEALED_SECRET
from tests.fixtures.api_auth import Auth

URL = "https://bot:hunter2@hooks.example/fieldlink?token=abc"


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    """A server with one ``[[server.notify]]`` rule."""
    return ServerSettings(
        database_url=f"sqlite:///{tmp_path / 'fieldlink.db'}",
        broker_url="mqtt://127.0.0.1:1",
        state_dir=tmp_path / "state",
        ssh_gateway_port=-1,
        notify_interval_s=3600,
        smtp={"host": "127.0.0.1", "port": 1},
        notify=[NotifyRule(name="from-toml", email_to=["it@example.com"])],
    )


def _actions(engine: Engine) -> list[str]:
    with Session(engine) as db:
        return [
            e.action
            for e in db.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()
            if e.action.startswith("notify.")
        ]


def test_an_admin_adds_a_webhook_rule_and_sees_its_secret_once(
    client: TestClient, auth: Auth, settings: ServerSettings, engine: Engine
) -> None:
    admin = auth("admin")
    body = {"name": "ops-hook", "events": ["fault", "consent"], "webhook_url": URL}
    made = client.post("/api/v1/notify/rules", json=body, headers=admin)
    assert made.status_code == 201, made.text
    created = made.json()
    secret = created["secret"]
    assert len(secret) >= 32
    assert "hunter2" not in made.text
    assert "abc" not in created["rule"]["webhook_url"]
    assert not (settings.state_dir / "notify").exists()  # kept in the database, encrypted
    with Session(engine) as db:
        [record] = db.exec(select(NotifyRuleRecord)).all()
    sealed = record.spec[SEALED_SECRET]
    assert secret not in str(record.spec)
    assert secretbox.decrypt(settings, sealed) == secret
    listed = client.get("/api/v1/notify/rules", headers=admin).json()
    assert [(r["name"], r["origin"]) for r in listed["items"]] == [
        ("from-toml", "config"),
        ("ops-hook", "database"),
    ]
    assert secret not in str(listed)
    assert "hunter2" not in str(listed)
    again = client.post("/api/v1/notify/rules", json=body, headers=admin)
    assert again.status_code == 409
    clash = client.post(
        "/api/v1/notify/rules",
        json={"name": "from-toml", "email_to": ["a@b.example"]},
        headers=admin,
    )
    assert clash.status_code == 409
    gone = client.delete("/api/v1/notify/rules/ops-hook", headers=admin)
    assert gone.status_code == 204
    assert client.delete("/api/v1/notify/rules/ops-hook", headers=admin).status_code == 404
    assert client.delete("/api/v1/notify/rules/from-toml", headers=admin).status_code == 409
    assert _actions(engine) == ["notify.rule_add", "notify.rule_delete"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"name": "x", "webhook_url": "file:///etc/passwd"}, "http:// or https://"),
        ({"name": "x", "webhook_url": "gopher://h.example/"}, "http:// or https://"),
        ({"name": "x"}, "webhook_url or email_to"),
        ({"name": "x", "email_to": ["a@b.example"], "events": ["rain"]}, "events must be"),
        ({"name": "../../etc/x", "email_to": ["a@b.example"]}, "letters, digits"),
    ],
)
def test_a_bad_rule_is_a_422_saying_why_and_writes_nothing(
    client: TestClient, auth: Auth, settings: ServerSettings, body: dict[str, object], says: str
) -> None:
    answer = client.post("/api/v1/notify/rules", json=body, headers=auth("admin"))
    assert answer.status_code == 422
    assert says in answer.text
    assert not (settings.state_dir / "notify").exists() or not any(
        (settings.state_dir / "notify").iterdir()
    )


def test_a_test_message_is_queued_and_shown_in_the_outbox(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    admin = auth("admin")
    queued = client.post("/api/v1/notify/rules/from-toml/test", headers=admin)
    assert queued.status_code == 202
    assert queued.json() == {"rule": "from-toml", "queued": 1}
    outbox = client.get("/api/v1/notify/outbox", headers=admin).json()
    assert outbox["count"] == 1
    [item] = outbox["items"]
    assert (item["rule"], item["channel"], item["status"]) == ("from-toml", "email", "queued")
    assert client.post("/api/v1/notify/rules/nope/test", headers=admin).status_code == 404
    assert _actions(engine) == ["notify.test"]


def test_operators_and_managers_cannot_see_or_change_rules(client: TestClient, auth: Auth) -> None:
    for role in ("operator", "manager"):
        headers = auth(role)
        assert client.get("/api/v1/notify/rules", headers=headers).status_code == 403
        assert client.get("/api/v1/notify/outbox", headers=headers).status_code == 403
        made = client.post(
            "/api/v1/notify/rules", json={"name": "x", "email_to": ["a@b.example"]}, headers=headers
        )
        assert made.status_code == 403


def test_a_rule_names_the_language_of_its_e_mails(client: TestClient, auth: Auth) -> None:
    admin = auth("admin")
    body = {"name": "tokyo-desk", "email_to": ["desk@example.jp"], "language": "ja"}
    made = client.post("/api/v1/notify/rules", json=body, headers=admin)
    assert made.status_code == 201, made.text
    assert made.json()["rule"]["language"] == "ja"
    plain = client.post(
        "/api/v1/notify/rules", json={"name": "x", "email_to": ["a@b.example"]}, headers=admin
    )
    assert plain.json()["rule"]["language"] == "en"
    unknown = client.post(
        "/api/v1/notify/rules",
        json={"name": "y", "email_to": ["a@b.example"], "language": "es"},
        headers=admin,
    )
    assert unknown.status_code == 422
