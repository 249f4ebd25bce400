"""Two-factor logins (TOTP, recovery codes) over the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
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
from tests.fixtures.clock import Clock
from tests.fixtures.server_app import app_settings


@pytest.fixture
def clock() -> Clock:
    """TOTP steps are 30 s: five seconds into one."""
    return Clock(datetime(2026, 11, 23, 9, 0, 5, tzinfo=UTC))


def make_client(settings: ServerSettings, clock: Clock) -> TestClient:
    app = create_app(settings)
    app.state.login_policy = LoginPolicy(
        max_failures=3, ip_max_failures=50, delay_step_s=0.0, clock=clock
    )
    return TestClient(app)


@pytest.fixture
def mfa_settings(database_url: str, tmp_path: Path) -> ServerSettings:
    return app_settings(tmp_path, database_url, mfa_required_roles=["admin"])


@pytest.fixture
def client(mfa_settings: ServerSettings, clock: Clock) -> Iterator[TestClient]:
    with make_client(mfa_settings, clock) as test_client:
        yield test_client


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


# Minting a long-lived API token asks for the second factor too (issue 15).


def mint(client: TestClient, headers: dict[str, str], otp: str | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"name": "nightly export", "password": PASSWORD, **extra}
    if otp is not None:
        body["otp"] = otp
    return client.post("/api/v1/auth/tokens", json=body, headers=headers)


def test_minting_an_api_token_needs_the_code_too(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    add_user(engine, "kim")
    add_user(engine, "lou")
    secret, codes = enrol(client, bearer(login(client, "kim")), clock)
    clock.advance(30)
    headers = bearer(login(client, "kim", totp(secret, clock)))
    # The password alone (a stolen session and a shoulder-surfed password) is not enough.
    asked = mint(client, headers)
    assert asked.status_code == 401
    assert asked.headers["x-fieldlink-mfa"] == "required"
    assert "two-factor code is required" in asked.json()["detail"]
    wrong = mint(client, headers, "000000" if totp(secret, clock) != "000000" else "111111")
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "the code is wrong"
    # The code that logged in is spent: not again within its window.
    assert mint(client, headers, totp(secret, clock)).status_code == 401
    # (Each wrong try counted like a failed login: start a new lockout window.)
    clock.advance(16 * 60)
    # The wrong password with a good code is a wrong password (and does not spend the code).
    code = totp(secret, clock)
    bad_pw = mint(client, headers, code, password="not-the-password")
    assert bad_pw.json()["detail"] == "the password is wrong"
    made = mint(client, headers, code)
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "kim"
    assert mint(client, headers, code).status_code == 401  # replayed
    clock.advance(16 * 60)
    # A recovery code does once.
    assert mint(client, headers, codes[0]).status_code == 201
    assert mint(client, headers, codes[0]).status_code == 401
    how = sorted(json.loads(e.details)["second_factor"] for e in actions(engine, "token.create"))
    assert how == ["recovery_code", "totp"]
    assert codes[0] not in dump(engine, "audit_entry")
    # A user without two-factor login mints with the password, as before.
    assert mint(client, bearer(login(client, "lou"))).status_code == 201
    # Wrong codes lock the name like wrong passwords (max_failures=3 here).
    for guess in ("222222", "333333"):
        assert mint(client, headers, guess).status_code in (401, 429)
    locked = mint(client, headers, totp(secret, clock))
    assert locked.status_code == 429
    assert "Retry-After" in locked.headers
    assert len(actions(engine, "token.create")) == 3


# The console: the QR code, the token page.


def console_login(client: TestClient, name: str, secret: str, clock: Clock) -> str:
    """Log ``name`` in on the console with a fresh code; the page's CSRF token."""
    import re

    client.cookies.clear()
    console_password(client, name)
    clock.advance(30)
    assert console_code(client, totp(secret, clock)).status_code == 303
    page = client.get("/account")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def test_the_console_enrolment_shows_the_uri_as_a_qr_code(
    client: TestClient, engine: Engine
) -> None:
    import re
    from urllib.parse import unquote

    from tests.fixtures.qr import drawn_modules, encoded_modules

    add_user(engine, "nell")
    client.cookies.clear()
    assert console_password(client, "nell").status_code == 303
    page = client.get("/account")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    shown = client.post("/account/mfa", data={"csrf_token": csrf.group(1), "password": PASSWORD})
    assert shown.status_code == 200
    svg = re.search(r"<svg[^>]*>.*?</svg>", shown.text, re.S)
    assert svg is not None
    assert 'role="img"' in svg.group(0)
    assert 'aria-label="QR code for your authenticator app"' in svg.group(0)
    assert "<script" not in svg.group(0)
    assert "http" not in svg.group(0).replace("http://www.w3.org/2000/svg", "")
    uri = re.search(r'href="(otpauth://[^"]+)"', shown.text)
    secret = re.search(r'id="mfa-secret">([A-Z2-7]+)<', shown.text)
    assert uri is not None
    assert secret is not None
    uri_text = uri.group(1).replace("&amp;", "&")
    assert f"secret={secret.group(1)}" in unquote(uri_text)
    assert drawn_modules(svg.group(0)) == encoded_modules(uri_text)


def test_the_console_token_page_asks_for_the_code(
    client: TestClient, engine: Engine, clock: Clock
) -> None:
    import re

    add_user(engine, "olly")
    secret, _ = enrol(client, bearer(login(client, "olly")), clock)
    csrf = console_login(client, "olly", secret, clock)
    page = client.get("/account/tokens")
    assert page.status_code == 200
    assert 'name="code"' in page.text
    form = {"csrf_token": csrf, "name": "backup script", "password": PASSWORD}
    refused = client.post("/account/tokens", data=form)
    assert refused.status_code == 401
    assert "two-factor code is required" in refused.text
    wrong = client.post("/account/tokens", data=form | {"code": "12345x"})
    assert wrong.status_code == 401
    assert "the code is wrong" in wrong.text
    assert not actions(engine, "token.create")
    no_csrf = client.post(
        "/account/tokens", data={k: v for k, v in form.items() if k != "csrf_token"}
    )
    assert no_csrf.status_code == 403
    clock.advance(30)
    made = client.post("/account/tokens", data=form | {"code": totp(secret, clock)})
    assert made.status_code == 200, made.text
    token = re.search(r'id="new-token">([^<]+)<', made.text)
    assert token is not None
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token.group(1)}"})
    assert me.json()["username"] == "olly"
    (created,) = actions(engine, "token.create")
    assert json.loads(created.details)["second_factor"] == "totp"
    token_id = created.target.split(":")[1]
    assert f'action="/account/tokens/{token_id}/revoke"' in made.text
    revoked = client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 200
    assert f"Token {token_id} revoked." in revoked.text
    dead = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token.group(1)}"})
    assert dead.status_code == 401
    # Another user's token is not one's own to revoke (404, as in the API).
    add_user(engine, "pia")
    theirs = mint(client, bearer(login(client, "pia"))).json()["id"]
    other = client.post(f"/account/tokens/{theirs}/revoke", data={"csrf_token": csrf})
    assert other.status_code == 404
    assert len(actions(engine, "token.revoke")) == 1


def test_a_role_that_requires_it_reaches_no_token_page_before_enrolling(
    client: TestClient, engine: Engine
) -> None:
    add_user(engine, "quinn", role="admin")
    client.cookies.clear()
    console_password(client, "quinn")
    moved = client.get("/account/tokens", follow_redirects=False)
    assert moved.status_code == 303
    assert moved.headers["location"] == "/account"
    api = client.post(
        "/api/v1/auth/tokens",
        json={"name": "x", "password": PASSWORD},
        headers=bearer(login(client, "quinn")),
    )
    assert api.status_code == 403
