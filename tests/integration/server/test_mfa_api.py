"""Two-factor logins (TOTP, recovery codes) over the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import audit, crud, mfa
from server.config import ServerSettings
from server.logins import LoginPolicy
from server.main import create_app
from tests.fixtures.api_auth import PASSWORD


class Clock:
    """A clock the test moves by hand (the login policy's: TOTP steps follow it)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 9, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_client(settings: ServerSettings, clock: Clock) -> TestClient:
    app = create_app(settings)
    app.state.login_policy = LoginPolicy(
        max_failures=3, ip_max_failures=50, delay_step_s=0.0, clock=clock
    )
    return TestClient(app)


@pytest.fixture
def mfa_settings(database_url: str, tmp_path: Path) -> ServerSettings:
    return ServerSettings(
        database_url=database_url,
        broker_url="mqtt://127.0.0.1:1",
        state_dir=tmp_path / "state",
        ssh_gateway_port=-1,
        mfa_required_roles=["admin"],
    )


@pytest.fixture
def client(mfa_settings: ServerSettings, clock: Clock) -> Iterator[TestClient]:
    with make_client(mfa_settings, clock) as test_client:
        yield test_client


@pytest.fixture
def engine(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


def add_user(engine: Engine, name: str, role: str = "operator") -> str:
    with Session(engine) as session:
        crud.create_user(session, username=name, role=role, password=PASSWORD)
    return name


def login(client: TestClient, name: str, otp: str | None = None, password: str = PASSWORD) -> Any:
    data = {"username": name, "password": password}
    if otp is not None:
        data["otp"] = otp
    return client.post("/api/v1/auth/token", data=data)


def bearer(answer: Any) -> dict[str, str]:
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def enrol(client: TestClient, headers: dict[str, str], clock: Clock) -> tuple[str, list[str]]:
    """Enrol an authenticator; its secret and the recovery codes."""
    begun = client.post("/api/v1/auth/mfa", json={"password": PASSWORD}, headers=headers)
    assert begun.status_code == 200, begun.text
    secret = begun.json()["secret"]
    assert begun.json()["otpauth_uri"].startswith("otpauth://totp/")
    code = pyotp.TOTP(secret).at(clock.now)
    done = client.post("/api/v1/auth/mfa/confirm", json={"code": code}, headers=headers)
    assert done.status_code == 200, done.text
    return secret, done.json()["recovery_codes"]


def totp(secret: str, clock: Clock) -> str:
    return pyotp.TOTP(secret).at(clock.now)


def dump(engine: Engine, table: str) -> str:
    with engine.connect() as connection:
        return repr(connection.execute(sa.text(f"SELECT * FROM {table}")).all())  # noqa: S608


def actions(engine: Engine, action: str) -> list[Any]:
    with Session(engine) as session:
        rows, _ = audit.list_entries(session, action=action, limit=1000)
        return [row.model_copy() for row in rows]


def test_enrol_confirm_then_log_in_with_a_code(
    client: TestClient, engine: Engine, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_user(engine, "alice")
    headers = bearer(login(client, "alice"))
    status = client.get("/api/v1/auth/mfa", headers=headers).json()
    assert status == {
        "enabled": False,
        "pending": False,
        "required": False,
        "recovery_codes_left": 0,
    }
    # Enrolment needs the password again.
    wrong = client.post("/api/v1/auth/mfa", json={"password": "not-it-at-all"}, headers=headers)
    assert wrong.status_code == 401
    begun = client.post("/api/v1/auth/mfa", json={"password": PASSWORD}, headers=headers)
    secret = begun.json()["secret"]
    assert "issuer=fieldlink" in begun.json()["otpauth_uri"]
    # Not active until confirmed: the password alone still logs in.
    assert client.get("/api/v1/auth/mfa", headers=headers).json()["pending"] is True
    assert login(client, "alice").status_code == 200
    bad = client.post("/api/v1/auth/mfa/confirm", json={"code": "000000"}, headers=headers)
    assert bad.status_code == 401
    first = totp(secret, clock)
    done = client.post("/api/v1/auth/mfa/confirm", json={"code": first}, headers=headers)
    assert done.status_code == 200
    codes = done.json()["recovery_codes"]
    assert len(codes) == mfa.RECOVERY_CODES == len(set(codes))
    status = client.get("/api/v1/auth/mfa", headers=headers).json()
    assert status == {
        "enabled": True,
        "pending": False,
        "required": False,
        "recovery_codes_left": 10,
    }
    assert client.get("/api/v1/auth/me", headers=headers).json()["mfa_enabled"] is True
    # The password alone no longer logs in: the answer asks for the code.
    asked = login(client, "alice")
    assert asked.status_code == 401
    assert asked.headers["x-fieldlink-mfa"] == "required"
    assert "two-factor code is required" in asked.json()["detail"]
    # The code used to confirm is spent: not again in the same step.
    replay = login(client, "alice", first)
    assert replay.status_code == 401
    assert replay.json()["detail"] == "wrong two-factor code"
    clock.advance(30)
    fresh = totp(secret, clock)
    ok = login(client, "alice", fresh)
    assert ok.status_code == 200
    (entry,) = [e for e in actions(engine, "login") if '"password+totp"' in e.details]
    assert entry.actor == "alice"
    # ...and a code that logged in once never does again (replay).
    assert login(client, "alice", fresh).status_code == 401
    # A code from the step before (clock drift) is fine if not spent; older ones are not.
    clock.advance(30)
    assert login(client, "alice", totp(secret, clock)).status_code == 200
    # The wrong password with the right code is still just a wrong password.
    clock.advance(30)
    wrong_pw = login(client, "alice", totp(secret, clock), password="wrong-password-1")
    assert wrong_pw.json()["detail"] == "wrong user name or password"
    # The secret and recovery codes are never stored, logged or audited in the clear.
    stored = dump(engine, "user_mfa") + dump(engine, "mfa_recovery_code")
    trail = dump(engine, "audit_entry")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for text in (secret, *codes):
        assert text not in stored
        assert text not in trail
        assert text not in logged
    for action in ("mfa.enrol", "mfa.enable"):
        assert [e.actor for e in actions(engine, action)] == ["alice"]
    assert len(actions(engine, "mfa_check_failed")) == 1


def test_a_recovery_code_logs_in_once(client: TestClient, engine: Engine, clock: Clock) -> None:
    add_user(engine, "bob")
    _secret, codes = enrol(client, bearer(login(client, "bob")), clock)
    typed = codes[0].upper().replace("-", " ")  # as a person might type it
    assert login(client, "bob", typed).status_code == 200
    again = login(client, "bob", codes[0])
    assert again.status_code == 401
    assert again.json()["detail"] == "wrong two-factor code"
    assert login(client, "bob", codes[1]).status_code == 200
    with Session(engine) as session:
        user = crud.get_user(session, username="bob")
        assert user is not None
        assert mfa.status(session, client.app.state.settings, user).recovery_codes_left == 8  # type: ignore[attr-defined]
    assert [e for e in actions(engine, "login") if "password+recovery_code" in e.details]


def test_wrong_codes_lock_the_name_like_wrong_passwords(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    add_user(engine, "carol")
    secret, _codes = enrol(client, bearer(login(client, "carol")), clock)
    clock.advance(30)
    for guess in ("111111", "222222", "333333"):
        answer = login(client, "carol", guess)
        assert answer.status_code in (401, 429)
    locked = login(client, "carol", totp(secret, clock))
    assert locked.status_code == 429
    assert "Retry-After" in locked.headers
    failed = actions(engine, "login_failed")
    assert failed
    assert all('"bad_second_factor"' in e.details for e in failed)
    assert any("locked_until" in e.details for e in failed)
    clock.advance(15 * 60 + 1)
    assert login(client, "carol", totp(secret, clock)).status_code == 200


def test_a_disabled_user_gets_nothing_even_with_the_code(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    add_user(engine, "dave")
    add_user(engine, "root", role="admin")
    secret, _ = enrol(client, bearer(login(client, "dave")), clock)
    with Session(engine) as session:
        from server import accounts

        accounts.set_disabled(session, username="dave", disabled=True, actor="root")
    clock.advance(30)
    answer = login(client, "dave", totp(secret, clock))
    assert answer.status_code == 401
    assert answer.json()["detail"] == "wrong user name or password"


def test_turning_it_off_needs_a_code(client: TestClient, engine: Engine, clock: Clock) -> None:
    add_user(engine, "erin")
    headers = bearer(login(client, "erin"))
    secret, _ = enrol(client, headers, clock)
    clock.advance(30)
    wrong = client.post("/api/v1/auth/mfa/disable", json={"code": "123456"}, headers=headers)
    assert wrong.status_code == 401
    code = totp(secret, clock)
    assert (
        client.post("/api/v1/auth/mfa/disable", json={"code": code}, headers=headers).status_code
        == 204
    )
    assert login(client, "erin").status_code == 200
    assert [e.actor for e in actions(engine, "mfa.disable")] == ["erin"]


def test_a_role_that_requires_it_may_only_enrol_and_an_admin_resets_it(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    add_user(engine, "root", role="admin")
    answer = login(client, "root")
    assert answer.json()["mfa_enrolment_required"] is True
    headers = bearer(answer)
    refused = client.get("/api/v1/users", headers=headers)
    assert refused.status_code == 403
    assert "requires two-factor login" in refused.json()["detail"]
    assert client.get("/api/v1/auth/mfa", headers=headers).json()["required"] is True
    secret, _codes = enrol(client, headers, clock)
    assert client.get("/api/v1/users", headers=headers).status_code == 200
    # One's own required second factor is not turned off by oneself.
    clock.advance(30)
    kept = client.post(
        "/api/v1/auth/mfa/disable", json={"code": totp(secret, clock)}, headers=headers
    )
    assert kept.status_code == 409
    # An admin resets another user's (lost phone); audited.
    add_user(engine, "frank")
    frank_secret, _ = enrol(client, bearer(login(client, "frank")), clock)
    assert login(client, "frank").status_code == 401
    clock.advance(30)
    operator = bearer(login(client, "frank", totp(frank_secret, clock)))
    assert client.delete("/api/v1/users/frank/mfa", headers=operator).status_code == 403
    assert client.delete("/api/v1/users/frank/mfa", headers=headers).status_code == 204
    assert client.delete("/api/v1/users/nobody/mfa", headers=headers).status_code == 404
    assert login(client, "frank").status_code == 200
    (reset,) = actions(engine, "mfa.reset")
    assert (reset.actor, reset.target) == ("root", "user:frank")
    listed = client.get("/api/v1/users", headers=headers).json()["items"]
    assert {u["username"]: u["mfa_enabled"] for u in listed} == {"root": True, "frank": False}


def test_the_key_file_is_private(
    mfa_settings: ServerSettings, client: TestClient, engine: Engine, clock: Clock
) -> None:
    add_user(engine, "gina")
    enrol(client, bearer(login(client, "gina")), clock)
    key = mfa.key_path(mfa_settings)
    assert key.stat().st_mode & 0o077 == 0


# The console: the password, then the code on a second form.


def console_password(client: TestClient, name: str) -> Any:
    return client.post(
        "/login",
        data={"username": name, "password": PASSWORD, "next": "/desk"},
        follow_redirects=False,
    )


def console_code(client: TestClient, code: str) -> Any:
    return client.post("/login/code", data={"code": code, "next": "/desk"}, follow_redirects=False)


def test_the_console_asks_for_the_code_after_the_password(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    add_user(engine, "hana")
    secret, codes = enrol(client, bearer(login(client, "hana")), clock)
    client.cookies.clear()
    step = console_password(client, "hana")
    assert step.status_code == 200
    assert 'action="/login/code"' in step.text
    assert "fieldlink_session" not in step.cookies
    pending = step.cookies["fieldlink_mfa"]
    # The token between the steps opens nothing: not as a bearer, not as a session cookie.
    assert (
        client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pending}"}).status_code
        == 401
    )
    wrong = console_code(client, "123456")
    assert wrong.status_code == 401
    assert "Wrong code." in wrong.text
    clock.advance(30)
    ok = console_code(client, totp(secret, clock))
    assert ok.status_code == 303
    assert ok.headers["location"] == "/desk"
    assert client.get("/desk", follow_redirects=False).status_code == 200
    assert any('"password+totp"' in e.details for e in actions(engine, "login"))
    # The pending token ended with the login: the same step cannot be completed again.
    client.cookies.clear()
    client.cookies.set("fieldlink_mfa", pending, path="/login/code")
    again = console_code(client, codes[0])
    assert again.status_code == 401
    assert "log in again" in again.text


def test_the_console_locks_after_wrong_codes(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    add_user(engine, "ivan")
    secret, _ = enrol(client, bearer(login(client, "ivan")), clock)
    client.cookies.clear()
    console_password(client, "ivan")
    for guess in ("111111", "222222"):
        assert console_code(client, guess).status_code == 401
    locked = console_code(client, "333333")
    assert locked.status_code in (401, 429)
    clock.advance(30)
    final = console_code(client, totp(secret, clock))
    assert final.status_code == 429
    assert "Retry-After" in final.headers


def test_a_role_that_requires_it_goes_to_the_account_page(
    client: TestClient, engine: Engine
) -> None:
    add_user(engine, "boss", role="admin")
    client.cookies.clear()
    answer = console_password(client, "boss")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/account"
    assert client.get("/desk", follow_redirects=False).headers["location"] == "/account"
    page = client.get("/account")
    assert page.status_code == 200
    assert "Your role requires two-factor login" in page.text


def test_an_admin_resets_it_from_the_admin_page(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    import re

    add_user(engine, "jo")
    add_user(engine, "chief", role="admin")
    enrol(client, bearer(login(client, "jo")), clock)
    secret, _ = enrol(client, bearer(login(client, "chief")), clock)
    client.cookies.clear()
    console_password(client, "chief")
    clock.advance(30)
    assert console_code(client, totp(secret, clock)).status_code == 303
    page = client.get("/admin")
    assert page.status_code == 200
    assert 'action="/admin/users/jo/mfa-reset"' in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    refused = client.post("/admin/users/jo/mfa-reset", follow_redirects=False)
    assert refused.status_code == 403  # no CSRF token
    done = client.post(
        "/admin/users/jo/mfa-reset", data={"csrf_token": csrf.group(1)}, follow_redirects=False
    )
    assert done.status_code == 303
    assert login(client, "jo").status_code == 200
    (reset,) = actions(engine, "mfa.reset")
    assert (reset.actor, reset.target) == ("chief", "user:jo")
