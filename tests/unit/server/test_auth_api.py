"""Login throttling and lockout, API tokens, logout: on the real app and a real database."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit, crud
from server.config import ServerSettings
from server.logins import LOCKED_DETAIL, LoginPolicy, clear_failures
from server.main import create_app
from tests.fixtures.api_auth import PASSWORD
from tests.fixtures.clock import Clock
from tests.fixtures.route_roles import with_audit_routes

Auth = Callable[[str], dict[str, str]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(settings: ServerSettings, clock: Clock) -> Iterator[TestClient]:
    """The app with a strict login policy (3 failures), no slow-down and a hand-moved clock."""
    app = with_audit_routes(create_app(settings))
    app.state.login_policy = LoginPolicy(
        max_failures=3, ip_max_failures=10, delay_step_s=0.0, clock=clock
    )
    with TestClient(app) as test_client:
        yield test_client


def login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/api/v1/auth/token", data={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_dump(engine: Engine) -> str:
    with engine.connect() as connection:
        return repr(connection.execute(sa.text("SELECT * FROM audit_entry")).all())


def entries(engine: Engine, action: str) -> list[Any]:
    with Session(engine) as session:
        rows, _ = audit.list_entries(session, action=action, limit=1000)
        return [row.model_copy() for row in rows]


@pytest.fixture
def alice(engine: Engine) -> str:
    with Session(engine) as session:
        crud.create_user(session, username="alice", role="operator", password=PASSWORD)
    return "alice"


# Login, its audit, throttling.


def test_logins_are_audited_without_the_password(
    client: TestClient, engine: Engine, alice: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert login(client, alice, "wrong-password-1").status_code == 401
    answer = login(client, alice)
    assert answer.status_code == 200
    token = answer.json()["access_token"]
    failed = entries(engine, "login_failed")
    assert len(failed) == 1
    assert failed[0].actor == "anonymous"
    assert failed[0].target == "user:alice"
    assert failed[0].source_ip == "testclient"
    assert '"username":"alice"' in failed[0].details
    (ok,) = entries(engine, "login")
    assert (ok.actor, ok.target, ok.source_ip) == ("alice", "user:alice", "testclient")
    dump = audit_dump(engine)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "audit #3 login by alice" in logged  # after alice's creation and the failure
    for secret in ("wrong-password-1", PASSWORD, token):
        assert secret not in dump
        assert secret not in logged


def test_lockout_after_failures_answers_429_with_retry_after(
    client: TestClient, alice: str
) -> None:
    for _ in range(3):
        answer = login(client, alice, "wrong-password")
        assert answer.status_code == 401
        assert answer.json()["detail"] == "wrong user name or password"
    locked = login(client, alice)  # even the right password waits out the lock
    assert locked.status_code == 429
    assert locked.json() == {"detail": f"{LOCKED_DETAIL}: try again in 15 minutes"}
    assert locked.headers["Retry-After"] == str(15 * 60)


def test_lockout_does_not_reveal_whether_the_user_exists(
    client: TestClient, alice: str, clock: Clock
) -> None:
    answers = {}
    for name in (alice, "nobody"):
        for _ in range(3):
            assert login(client, name, "wrong-password").status_code == 401
        answers[name] = login(client, name, "wrong-password")
    assert answers[alice].status_code == answers["nobody"].status_code == 429
    assert answers[alice].json() == answers["nobody"].json()
    assert answers[alice].headers["Retry-After"] == answers["nobody"].headers["Retry-After"]


def test_lockout_expires(client: TestClient, alice: str, clock: Clock) -> None:
    for _ in range(3):
        login(client, alice, "wrong-password")
    clock.advance(10 * 60)
    locked = login(client, alice)
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == str(5 * 60)
    clock.advance(5 * 60 + 1)
    assert login(client, alice).status_code == 200


def test_a_successful_login_resets_the_count(client: TestClient, alice: str) -> None:
    for _ in range(2):
        assert login(client, alice, "wrong-password").status_code == 401
    assert login(client, alice).status_code == 200
    for _ in range(2):
        assert login(client, alice, "wrong-password").status_code == 401
    assert login(client, alice).status_code == 200


def test_failures_outside_the_window_do_not_add_up(
    client: TestClient, alice: str, clock: Clock
) -> None:
    for _ in range(2):
        login(client, alice, "wrong-password")
    clock.advance(15 * 60 + 1)
    for _ in range(2):
        assert login(client, alice, "wrong-password").status_code == 401
    assert login(client, alice).status_code == 200


def test_one_address_trying_many_names_is_locked(
    client: TestClient, alice: str, clock: Clock
) -> None:
    client.app.state.login_policy = replace(  # type: ignore[attr-defined]
        client.app.state.login_policy,  # type: ignore[attr-defined]
        max_failures=10,
        ip_max_failures=4,
    )
    for name in ("root", "admin", "operator", "guest"):
        assert login(client, name, "123456").status_code == 401
    locked = login(client, alice)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) == 15 * 60


def test_failures_are_audited_once_per_name_address_and_window(
    client: TestClient, engine: Engine, alice: str, clock: Clock
) -> None:
    """A flood of anonymous failures adds a bounded number of audit entries, with counts."""
    for _ in range(3):  # the first failure, then the one that locks the name
        assert login(client, alice, "wrong-password").status_code == 401
    for _ in range(50):  # locked: refused without a password check or an audit entry
        assert login(client, alice, "wrong-password").status_code == 429
    first, locking = reversed(entries(engine, "login_failed"))
    assert '"failures":1' in first.details
    assert '"locked_until"' in locking.details
    assert login(client, "nobody", "x").status_code == 401
    assert login(client, "nobody", "y").status_code == 401
    assert len(entries(engine, "login_failed")) == 3

    clock.advance(16 * 60)  # the lock and the window are over: a new window, its first entry
    assert login(client, alice, "wrong-password").status_code == 401
    newest = entries(engine, "login_failed")[0]
    assert '"failures":1' in newest.details
    assert len(entries(engine, "login_failed")) == 4


def test_an_anonymous_flood_adds_a_bounded_number_of_entries(
    client: TestClient, engine: Engine, alice: str
) -> None:
    """8 clients, 400 wrong logins for a handful of names: a few entries, not 400."""
    names = [alice, "root", "admin", "nobody"]

    def flood(worker: int) -> None:
        for attempt in range(50):
            login(client, names[(worker + attempt) % len(names)], f"guess-{attempt}")

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = entries(engine, "login_failed")
    # At most: each name's first failure and its lock, and the address's lock.
    assert len(failed) <= 2 * len(names) + 1
    assert len(failed) < 400 / 10


def test_an_addresss_lock_spares_names_that_logged_in_from_it(
    client: TestClient, engine: Engine, alice: str
) -> None:
    """A guesser behind a shared NAT address does not lock out a colleague's right password."""
    with Session(engine) as session:
        crud.create_user(session, username="bob", role="operator", password=PASSWORD)
    assert login(client, alice).status_code == 200  # alice works from this address
    for name in ("root", "admin", "guest", "oracle", "test", "pi", "user", "ftp", "www", "x"):
        assert login(client, name, "123456").status_code == 401
    assert login(client, alice).status_code == 200
    refused = login(client, "bob")  # never logged in from here: held back, told how long
    assert refused.status_code == 429
    assert refused.json()["detail"] == f"{LOCKED_DETAIL}: try again in 15 minutes"
    assert refused.headers["Retry-After"] == str(15 * 60)
    assert login(client, alice, "wrong-password").status_code == 401  # her own typos count


def test_unlock_lifts_the_names_lock_and_its_addresses(
    client: TestClient, engine: Engine, alice: str
) -> None:
    with Session(engine) as session:
        crud.create_user(session, username="bob", role="operator", password=PASSWORD)
    for name in ("root", "admin", "guest", "oracle", "test", "pi", "user", "ftp", "www"):
        assert login(client, name, "123456").status_code == 401
    for _ in range(3):
        assert login(client, alice, "wrong-password").status_code in (401, 429)
    assert login(client, alice).status_code == 429
    assert login(client, "bob").status_code == 429  # the address is locked too
    with Session(engine) as session:
        assert clear_failures(session, username=alice) == ["testclient"]
        session.commit()
    assert login(client, alice).status_code == 200
    assert login(client, "bob").status_code == 200


def test_failures_slow_down_then_cap() -> None:
    policy = LoginPolicy(delay_step_s=0.25, max_delay_s=2.0)
    assert [policy.delay_after(n) for n in range(1, 7)] == [0.0, 0.25, 0.5, 1.0, 2.0, 2.0]
    assert LoginPolicy(delay_step_s=0).delay_after(5) == 0.0


def test_policy_from_settings_keeps_defaults(settings: ServerSettings) -> None:
    assert LoginPolicy.from_settings(settings) == LoginPolicy()


def test_wrong_logins_answer_later_and_later(client: TestClient, alice: str) -> None:
    """The slow-down is applied: the route waits the policy's delay (the wait is recorded)."""
    slept: list[float] = []

    async def recording_sleep(delay: float) -> None:
        slept.append(delay)

    client.app.state.login_policy = replace(  # type: ignore[attr-defined]
        client.app.state.login_policy,  # type: ignore[attr-defined]
        delay_step_s=0.25,
        sleep=recording_sleep,
    )
    for _ in range(3):
        login(client, alice, "wrong-password")
    assert login(client, alice).status_code == 429
    assert slept == [0.25, 0.5]


# API tokens and logout.


def test_api_token_lifecycle(client: TestClient, engine: Engine, auth: Auth) -> None:
    headers = auth("operator")
    created = client.post(
        "/api/v1/auth/tokens",
        json={"name": "nightly export", "expires_in_days": 30, "password": PASSWORD},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert token.startswith("flk_")
    assert body["name"] == "nightly export"
    assert body["username"] == "operator1"
    assert body["expires_at"] is not None
    assert client.get("/api/v1/auth/me", headers=bearer(token)).json()["username"] == "operator1"

    listed = client.get("/api/v1/auth/tokens", headers=headers).json()
    assert listed["count"] == 1
    assert listed["items"][0]["id"] == body["id"]
    assert "token" not in listed["items"][0]
    assert token not in repr(listed)

    assert client.delete(f"/api/v1/auth/tokens/{body['id']}", headers=headers).status_code == 204
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401
    assert client.get("/api/v1/auth/tokens", headers=headers).json()["count"] == 0
    everything = client.get("/api/v1/auth/tokens?include_revoked=true", headers=headers).json()
    assert everything["items"][0]["revoked_at"] is not None
    again = client.delete(f"/api/v1/auth/tokens/{body['id']}", headers=headers)
    assert again.status_code == 204

    (made,) = entries(engine, "token.create")
    assert (made.actor, made.target) == ("operator1", f"token:{body['id']}")
    (revoked,) = entries(engine, "token.revoke")
    assert revoked.target == f"token:{body['id']}"
    assert token not in audit_dump(engine)


def test_a_token_without_an_expiry_gets_the_servers_maximum(
    client: TestClient, auth: Auth, clock: Clock
) -> None:
    before = datetime.now(UTC)
    created = client.post(
        "/api/v1/auth/tokens", json={"name": "ci", "password": PASSWORD}, headers=auth("manager")
    )
    assert created.status_code == 201, created.text
    expires = datetime.fromisoformat(created.json()["expires_at"])
    assert timedelta(days=89) < expires - before <= timedelta(days=90, minutes=1)
    beyond = client.post(
        "/api/v1/auth/tokens",
        json={"name": "ci", "password": PASSWORD, "expires_in_days": 91},
        headers=auth("manager"),
    )
    assert beyond.status_code == 422
    assert "at most 90" in beyond.json()["detail"]


def test_a_login_token_alone_cannot_mint_an_api_token(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    """A stolen short-lived token must not become a long-lived one: the password is asked."""
    headers = auth("operator")
    missing = client.post("/api/v1/auth/tokens", json={"name": "x"}, headers=headers)
    assert missing.status_code == 422
    for _ in range(3):
        wrong = client.post(
            "/api/v1/auth/tokens", json={"name": "x", "password": "guess-1234"}, headers=headers
        )
        assert wrong.status_code == 401
    # The guesses count like failed logins: the name is now locked, for minting and logging in.
    locked = client.post(
        "/api/v1/auth/tokens", json={"name": "x", "password": PASSWORD}, headers=headers
    )
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert login(client, "operator1").status_code == 429
    assert len(entries(engine, "password_check_failed")) == 3
    assert entries(engine, "token.create") == []


def test_an_expired_api_token_gets_401(client: TestClient, engine: Engine, auth: Auth) -> None:
    created = client.post(
        "/api/v1/auth/tokens",
        json={"name": "short", "expires_in_days": 1, "password": PASSWORD},
        headers=auth("operator"),
    ).json()
    with Session(engine) as session:
        session.execute(
            sa.text("UPDATE apitoken SET expires_at = :past WHERE id = :id"),
            {"past": datetime(2020, 1, 1), "id": created["id"]},
        )
        session.commit()
    assert client.get("/api/v1/auth/me", headers=bearer(created["token"])).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": "", "password": PASSWORD},
        {"name": "x" * 129, "password": PASSWORD},
        {"name": "a", "expires_in_days": 0, "password": PASSWORD},
        {"name": "a", "expires_in_days": 10**12, "password": PASSWORD},
    ],
)
def test_bad_token_requests_get_422(client: TestClient, auth: Auth, body: dict[str, Any]) -> None:
    answer = client.post("/api/v1/auth/tokens", json=body, headers=auth("operator"))
    assert answer.status_code == 422


def test_others_tokens_admins_only(client: TestClient, auth: Auth) -> None:
    created = client.post(
        "/api/v1/auth/tokens", json={"name": "mine", "password": PASSWORD}, headers=auth("operator")
    )
    token_id = created.json()["id"]
    manager = auth("manager")
    assert client.delete(f"/api/v1/auth/tokens/{token_id}", headers=manager).status_code == 404
    assert client.delete("/api/v1/auth/tokens/999999", headers=manager).status_code == 404
    others = client.get("/api/v1/auth/tokens?username=operator1", headers=manager)
    assert others.status_code == 403
    admin = auth("admin")
    listed = client.get("/api/v1/auth/tokens?username=operator1", headers=admin).json()
    assert [item["id"] for item in listed["items"]] == [token_id]
    assert client.get("/api/v1/auth/tokens?username=ghost", headers=admin).status_code == 404
    assert client.delete(f"/api/v1/auth/tokens/{token_id}", headers=admin).status_code == 204
    token = created.json()["token"]
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401


def test_logout_revokes_the_presented_token(client: TestClient, engine: Engine, alice: str) -> None:
    first = login(client, alice).json()["access_token"]
    second = login(client, alice).json()["access_token"]
    assert client.post("/api/v1/auth/logout", headers=bearer(first)).status_code == 204
    assert client.get("/api/v1/auth/me", headers=bearer(first)).status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(second)).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=bearer(first)).status_code == 401
    (logout,) = entries(engine, "logout")
    assert logout.actor == "alice"
    dump = audit_dump(engine)
    assert first not in dump
    assert second not in dump
