"""A rule made over the API keeps its signing secret in the database, encrypted with the
server's key: delivery signs with it, never shows it; an older rule's secret file still works."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.config import ServerSettings
from server.models.notify import NotifyRuleRecord
from server.notify.delivery import SIGNATURE_HEADER, post_webhook, verify
from server.notify.destinations import DestinationPolicy
from server.notify.rules import NotifyRule
from server.notify.store import all_rules, secret_path
from shared.errors import ConfigError
from tests.fixtures.api_auth import Auth

URL = "http://203.0.113.7/hook"  # a public address: the default policy lets it through


def _post(rule: NotifyRule) -> list[httpx.Request]:
    """POST a test message for ``rule`` to a mock receiver; the requests it got."""
    got: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        got.append(request)
        return httpx.Response(204)

    async def post() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            await post_webhook(rule, {"kind": "test"}, 1, 1e9, client, DestinationPolicy())

    asyncio.run(post())
    return got


def _rule(engine: Engine, settings: ServerSettings, name: str) -> NotifyRule:
    return next(r for r in all_rules(engine, settings) if r.name == name)


def test_a_rule_s_secret_signs_its_webhook_and_is_never_shown(
    client: TestClient, auth: Auth, settings: ServerSettings, engine: Engine
) -> None:
    made = client.post(
        "/api/v1/notify/rules", json={"name": "hook", "webhook_url": URL}, headers=auth("admin")
    )
    secret = made.json()["secret"]
    rule = _rule(engine, settings, "hook")
    assert rule.secret_file is None
    for shown in (repr(rule), str(rule), str(rule.public()), rule.model_dump_json()):
        assert secret not in shown
    [request] = _post(rule)
    assert verify(secret.encode(), request.headers[SIGNATURE_HEADER], request.content, now=1e9)


def test_another_key_is_a_delivery_error_naming_the_key_not_a_crash(
    client: TestClient, auth: Auth, settings: ServerSettings, engine: Engine, tmp_path: Path
) -> None:
    client.post(
        "/api/v1/notify/rules", json={"name": "hook", "webhook_url": URL}, headers=auth("admin")
    )
    other = settings.model_copy(update={"mfa_key_file": tmp_path / "other.key"})
    rule = _rule(engine, other, "hook")  # the rules load all the same
    with pytest.raises(ConfigError) as caught:
        _post(rule)
    assert str(caught.value) == (
        f"notify rule 'hook': the MFA key {tmp_path / 'other.key'} does not decrypt a stored secret"
    )


def test_an_older_rule_with_a_secret_file_still_signs_and_its_file_goes_with_it(
    client: TestClient, auth: Auth, settings: ServerSettings, engine: Engine
) -> None:
    path = secret_path(settings, "old-hook")
    path.parent.mkdir(parents=True)
    path.write_text("older-secret\n")
    spec = NotifyRule(name="old-hook", webhook_url=URL, secret_file=path).model_dump(mode="json")
    with Session(engine) as db:
        db.add(NotifyRuleRecord(name="old-hook", spec=spec, created_by="root"))
        db.commit()
    [request] = _post(_rule(engine, settings, "old-hook"))
    assert verify(b"older-secret", request.headers[SIGNATURE_HEADER], request.content, now=1e9)
    gone = client.delete("/api/v1/notify/rules/old-hook", headers=auth("admin"))
    assert gone.status_code == 204
    assert not path.exists()
