"""The console's session cookie and its CSRF token; the console pages' access rules."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.websockets import WebSocketDisconnect

from server import crud
from server.api.deps import (
    CSRF_DETAIL,
    SESSION_COOKIE,
    csrf_token_for,
    csrf_token_valid,
)
from server.config import ServerSettings
from server.main import create_app
from server.models import AuditEntry
from tests.fixtures.api_auth import PASSWORD


def _user(engine: Engine, name: str, role: str) -> None:
    with Session(engine) as session:
        crud.create_user(session, username=name, role=role, password=PASSWORD)


def _login(client: TestClient, name: str, next_path: str = "/desk") -> str:
    """Log in through the console's form; the CSRF token of the new session."""
    answer = client.post(
        "/login",
        data={"username": name, "password": PASSWORD, "next": next_path},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == next_path
    cookie = client.cookies.get(SESSION_COOKIE)
    assert cookie
    return csrf_token_for(cookie)


@pytest.fixture
def operator(client: TestClient, engine: Engine) -> str:
    _user(engine, "olga", "operator")
    return _login(client, "olga")


def test_login_sets_an_httponly_strict_cookie_that_is_secure_only_over_https(
    settings: ServerSettings,
) -> None:
    with TestClient(create_app(settings)) as plain:
        _user(plain.app.state.engine, "olga", "operator")  # type: ignore[attr-defined]
        answer = plain.post(
            "/login", data={"username": "olga", "password": PASSWORD}, follow_redirects=False
        )
        header = answer.headers["set-cookie"]
        assert header.startswith(f"{SESSION_COOKIE}=flk_")
        assert "HttpOnly" in header
        assert "SameSite=strict" in header
        assert "Secure" not in header
        assert re.search(r"Max-Age=3600", header)
    with TestClient(create_app(settings), base_url="https://testserver") as tls:
        answer = tls.post(
            "/login", data={"username": "olga", "password": PASSWORD}, follow_redirects=False
        )
        assert "Secure" in answer.headers["set-cookie"]


def test_the_cookie_reads_the_api(client: TestClient, operator: str) -> None:
    answer = client.get("/api/v1/auth/me")
    assert answer.status_code == 200
    assert answer.json()["username"] == "olga"


def test_unsafe_requests_with_the_cookie_need_the_csrf_token(
    client: TestClient, operator: str
) -> None:
    body = {"name": "script", "password": PASSWORD}
    for headers in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": ""}):
        refused = client.post("/api/v1/auth/tokens", json=body, headers=headers)
        assert refused.status_code == 403, headers
        assert refused.json() == {"detail": CSRF_DETAIL}
    accepted = client.post("/api/v1/auth/tokens", json=body, headers={"X-CSRF-Token": operator})
    assert accepted.status_code == 201, accepted.text
    # Other unsafe methods too.
    token_id = accepted.json()["id"]
    assert client.delete(f"/api/v1/auth/tokens/{token_id}").status_code == 403
    deleted = client.delete(f"/api/v1/auth/tokens/{token_id}", headers={"X-CSRF-Token": operator})
    assert deleted.status_code == 204


def test_one_sessions_csrf_token_does_not_fit_another(
    client: TestClient, engine: Engine, operator: str
) -> None:
    _user(engine, "paul", "operator")
    other = TestClient(client.app)
    paul_csrf = _login(other, "paul")
    refused = client.post(
        "/api/v1/auth/tokens",
        json={"name": "x", "password": PASSWORD},
        headers={"X-CSRF-Token": paul_csrf},
    )
    assert refused.status_code == 403


def test_a_plain_form_post_may_carry_the_token_as_a_field(
    client: TestClient, engine: Engine, operator: str
) -> None:
    cookie = client.cookies.get(SESSION_COOKIE)
    assert cookie
    # Without the field the session stays (403), with it the token is revoked.
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
    assert client.get("/api/v1/auth/me").status_code == 200
    answer = client.post("/logout", data={"csrf_token": operator}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    assert f'{SESSION_COOKIE}=""' in answer.headers["set-cookie"]
    # The token is dead even if the browser kept the cookie.
    again = TestClient(client.app, cookies={SESSION_COOKIE: cookie})
    assert again.get("/api/v1/auth/me").status_code == 401
    with Session(engine) as session:
        logouts = session.exec(select(AuditEntry).where(AuditEntry.action == "logout")).all()
    assert [e.actor for e in logouts] == ["olga"]
    assert cookie not in logouts[0].details


def test_bearer_callers_need_no_csrf_token(client: TestClient, operator: str, auth: object) -> None:
    headers = auth("operator")  # type: ignore[operator]
    # A bearer token wins over the cookie the client also holds: no CSRF check.
    answer = client.post(
        "/api/v1/auth/tokens", json={"name": "script", "password": PASSWORD}, headers=headers
    )
    assert answer.status_code == 201
    assert answer.json()["username"] == "operator1"


def test_a_dead_cookie_is_401_like_no_credentials(client: TestClient) -> None:
    client.cookies.set(SESSION_COOKIE, "flk_not-a-token")
    assert client.get("/api/v1/auth/me").status_code == 401
    assert client.post("/api/v1/auth/tokens", json={"name": "x"}).status_code == 401


def test_csrf_tokens_are_bound_to_the_session() -> None:
    token = csrf_token_for("flk_a")
    assert token != "flk_a"
    assert "flk_a" not in token
    assert csrf_token_valid("flk_a", token)
    assert not csrf_token_valid("flk_b", token)
    assert not csrf_token_valid("flk_a", None)
    assert not csrf_token_valid("flk_a", "")
    assert not csrf_token_valid("flk_a", token[:-1])


# The console's log-in form.


def test_a_wrong_password_shows_the_form_again(client: TestClient, engine: Engine) -> None:
    _user(engine, "olga", "operator")
    answer = client.post("/login", data={"username": "olga", "password": "wrong password"})
    assert answer.status_code == 401
    assert "Wrong user name or password." in answer.text
    assert SESSION_COOKIE not in client.cookies


def test_a_log_in_posted_from_another_site_is_refused(client: TestClient, engine: Engine) -> None:
    _user(engine, "olga", "operator")
    answer = client.post(
        "/login",
        data={"username": "olga", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "/\\evil"])
def test_log_in_never_redirects_to_another_site(
    client: TestClient, engine: Engine, target: str
) -> None:
    _user(engine, "olga", "operator")
    answer = client.post(
        "/login",
        data={"username": "olga", "password": PASSWORD, "next": target},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/"


# Pages and roles.


def test_pages_without_a_session_go_to_the_log_in_form(client: TestClient) -> None:
    for path in ("/", "/desk", "/devices/x", "/devices/x/health", "/dashboard", "/admin",
                 "/admin/audit"):  # fmt: skip
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=")
    answer = client.get("/desk?q=abc", follow_redirects=False)
    assert answer.headers["location"] == "/login?next=%2Fdesk%3Fq%3Dabc"


def test_operators_neither_see_nor_open_admin_or_dashboard(
    client: TestClient, operator: str
) -> None:
    desk = client.get("/desk")
    assert desk.status_code == 200
    assert 'href="/admin"' not in desk.text
    assert 'href="/dashboard"' not in desk.text
    for path in ("/admin", "/admin/devices", "/admin/audit", "/dashboard", "/dashboard/export.csv"):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "Not allowed" in answer.text
    refused = client.post(
        "/admin/users",
        data={"csrf_token": operator, "username": "eve", "role": "admin", "password": "x" * 12},
    )
    assert refused.status_code == 403


def test_admins_see_and_use_the_admin_pages(client: TestClient, engine: Engine) -> None:
    _user(engine, "ada", "admin")
    csrf = _login(client, "ada")
    desk = client.get("/desk")
    assert 'href="/admin"' in desk.text
    assert 'href="/dashboard"' in desk.text
    for path in ("/admin", "/admin/devices", "/admin/audit"):
        assert client.get(path).status_code == 200, path
    form = {"username": "newbie", "role": "operator", "password": "long enough pw"}
    assert client.post("/admin/users", data=form).status_code == 403  # no CSRF field
    created = client.post("/admin/users", data={**form, "csrf_token": csrf}, follow_redirects=False)
    assert created.status_code == 303
    promoted = client.post(
        "/admin/users/newbie",
        data={"csrf_token": csrf, "role": "manager", "disabled": "no"},
        follow_redirects=False,
    )
    assert promoted.status_code == 303
    with Session(engine) as session:
        user = crud.get_user(session, username="newbie")
        assert user is not None
        assert user.role == "manager"
        actions = [e.action for e in session.exec(select(AuditEntry)).all()]
    assert "user.create" in actions
    assert "user.role" in actions
    # An admin cannot lock themselves out.
    selfish = client.post(
        "/admin/users/ada", data={"csrf_token": csrf, "role": "operator", "disabled": "no"}
    )
    assert selfish.status_code == 422
    assert "cannot change your own role" in selfish.text


def test_bad_user_forms_answer_422_with_the_reason(client: TestClient, engine: Engine) -> None:
    _user(engine, "ada", "admin")
    csrf = _login(client, "ada")
    short = client.post(
        "/admin/users",
        data={"csrf_token": csrf, "username": "bob", "role": "operator", "password": "short"},
    )
    assert short.status_code == 422
    assert "at least 8 characters" in short.text


# WebSockets: bearer, or the cookie from this origin only.


def _close_code(client: TestClient, headers: dict[str, str]) -> int:
    with (
        client.websocket_connect("/api/v1/sessions/ses-0/terminal", headers=headers) as socket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        socket.receive_bytes()
    return closed.value.code


def test_a_socket_takes_the_cookie_only_from_the_same_origin(
    client: TestClient, operator: str
) -> None:
    sockets = client
    # 4404: authenticated, and the session does not exist; 4401: not authenticated.
    assert _close_code(sockets, {"Origin": "http://testserver"}) == 4404
    assert _close_code(sockets, {"Origin": "https://evil.example"}) == 4401
    assert _close_code(sockets, {"Origin": "http://testserver.evil.example"}) == 4401
    assert _close_code(sockets, {}) == 4401


# What the pages answer.


def test_pages_cannot_be_framed_or_cached(client: TestClient, operator: str) -> None:
    for path in ("/login", "/desk", "/incidents"):
        answer = client.get(path)
        assert answer.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store"


def test_unknown_things_get_a_404_page(client: TestClient, operator: str) -> None:
    for path in ("/devices/nope", "/devices/nope/health", "/sessions/ses-nope"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "Not found" in answer.text


def test_desk_ignores_filter_values_it_does_not_know(client: TestClient, operator: str) -> None:
    answer = client.get("/desk", params={"online": "maybe", "type": "toaster", "status": "x"})
    assert answer.status_code == 200
    assert "0 devices" in answer.text
    assert client.get("/desk/fleet", params={"q": "zzz"}).status_code == 200


def test_another_operators_session_page_is_403(
    client: TestClient, engine: Engine, operator: str
) -> None:
    from datetime import timedelta

    from server.models import Device, RemoteSession
    from shared.ids import utcnow

    with Session(engine) as session:
        session.add(Device(id="mfp-1", serial="S1", model="m", type="mfp", customer="c"))
        session.flush()
        session.add(
            RemoteSession(
                id="ses-1",
                device_id="mfp-1",
                operator="someone-else",
                reason="r",
                expires_at=utcnow() + timedelta(minutes=5),
            )
        )
        session.commit()
    answer = client.get("/sessions/ses-1")
    assert answer.status_code == 403
    assert "Not allowed" in answer.text


def test_a_manager_exports_the_dashboard_as_csv(client: TestClient, engine: Engine) -> None:
    _user(engine, "mona", "manager")
    _login(client, "mona")
    page = client.get("/dashboard", params={"from": "2026-01-01", "through": "2026-03-31"})
    assert page.status_code == 200
    assert "2026-01-01 through 2026-03-31" in page.text
    assert "ASA, recorded calls" in page.text
    assert "0 of 0 calls answered" in page.text
    answer = client.get(
        "/dashboard/export.csv", params={"from": "2026-01-01", "through": "2026-03-31"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    lines = answer.text.splitlines()
    assert lines[0].startswith("group_by,key,incidents_closed,")
    assert [line.split(",")[1] for line in lines if line.startswith("month,")] == [
        "2026-01",
        "2026-02",
        "2026-03",
    ]
    assert next(line for line in lines if line.startswith("total,")).startswith("total,,0,")
    backwards = client.get("/dashboard", params={"from": "2026-03-01", "through": "2026-01-01"})
    assert "The period must end after it starts." in backwards.text


def test_the_dashboard_export_never_hands_a_formula_to_the_spreadsheet(
    client: TestClient, engine: Engine
) -> None:
    from datetime import UTC, datetime

    from server.incidents.records import create_incident
    from server.models import Device, IncidentCreate

    region = '=HYPERLINK("http://evil.example","x")'
    with Session(engine) as session:
        session.add(
            Device(id="mfp-9", serial="S9", model="m", type="mfp", customer="c", region=region)
        )
        session.commit()
        at = datetime(2026, 2, 3, 10, tzinfo=UTC)
        create_incident(
            session,
            data=IncidentCreate(
                device_id="mfp-9", opened_at=at, restored_at=at, closed_at=at, resolution="remote"
            ),
        )
    _user(engine, "mona", "manager")
    _login(client, "mona")
    answer = client.get(
        "/dashboard/export.csv", params={"from": "2026-01-01", "through": "2026-03-31"}
    )
    assert answer.status_code == 200
    import csv
    import io

    rows = list(csv.reader(io.StringIO(answer.text)))
    regions = [row[1] for row in rows if row and row[0] == "region"]
    assert "'" + region in regions
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row[:2])


def test_the_desk_box_finds_the_caller_like_the_api(
    client: TestClient, engine: Engine, operator: str
) -> None:
    from server.models import Device

    with Session(engine) as session:
        for number, (phone, customer) in enumerate(
            [("+44 20 7946 0018", "St. Mary Hospital"), ("+1 312 555 0142", "Northwind")]
        ):
            session.add(
                Device(
                    id=f"mfp-{number}",
                    serial=f"SN73{number}",
                    model="m",
                    type="mfp",
                    customer=customer,
                    contact_phone=phone,
                )
            )
        session.commit()

    def found(q: str) -> list[str]:
        answer = client.get("/desk/find", params={"q": q})
        assert answer.status_code == 200
        ids = [d["id"] for d in answer.json()["items"]]
        api = client.get("/api/v1/devices", params={"q": q}).json()["items"]
        assert ids == [d["id"] for d in api], q  # the same answer as the API's q
        return ids

    assert found("0044-20-7946-0018") == ["mfp-0"]
    assert found("(312) 555-0142") == ["mfp-1"]
    assert found("mary") == ["mfp-0"]
    assert found("sn73") == ["mfp-0", "mfp-1"]
    # A literal "%" is text, not a wildcard (the API's q takes it as a wildcard).
    assert client.get("/desk/find", params={"q": "%%"}).json()["items"] == []
    assert found("nobody") == []
    logged_out = TestClient(client.app)
    assert logged_out.get("/desk/find", params={"q": "mary"}).status_code == 401


def test_a_console_user_changes_their_password(client: TestClient, engine: Engine) -> None:
    _user(engine, "carl", "operator")
    csrf = _login(client, "carl")
    assert "Your account: carl" in client.get("/account").text
    base = {"current_password": PASSWORD, "new_password": "new console pw"}
    assert (
        client.post("/account", data={**base, "new_password_again": "new console pw"}).status_code
        == 403
    )
    differ = client.post(
        "/account", data={**base, "new_password_again": "other", "csrf_token": csrf}
    )
    assert differ.status_code == 422
    assert "differ" in differ.text
    wrong = client.post(
        "/account",
        data={**base, "current_password": "not it at all", "new_password_again": "new console pw",
              "csrf_token": csrf},
    )  # fmt: skip
    assert wrong.status_code == 401
    done = client.post(
        "/account",
        data={**base, "new_password_again": "new console pw", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert client.get("/api/v1/auth/me").status_code == 200  # this login goes on
    with Session(engine) as session:
        actions = [e.action for e in session.exec(select(AuditEntry)).all()]
    assert "user.password_change" in actions


def test_after_a_reset_the_console_only_offers_the_password_change(
    client: TestClient, engine: Engine
) -> None:
    _user(engine, "ada", "admin")
    _user(engine, "carl", "operator")
    csrf = _login(client, "ada")
    page = client.post("/admin/users/carl/password-reset", data={"csrf_token": csrf})
    assert page.status_code == 200
    temporary = page.text.split("One-time password for carl: ")[1].split(" ")[0]
    other = TestClient(client.app)
    answer = other.post(
        "/login", data={"username": "carl", "password": temporary, "next": "/desk"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.headers["location"] == "/account"
    assert other.get("/desk", follow_redirects=False).headers["location"] == "/account"
    removed = client.post("/admin/users/carl/remove", data={"csrf_token": csrf})
    assert removed.status_code == 200
    assert "User carl removed." in removed.text
    with Session(engine) as session:
        assert crud.get_user(session, username="carl") is None


def test_a_watched_printers_session_page_offers_its_web_panel_and_no_terminal(
    client: TestClient, engine: Engine, operator: str
) -> None:
    from datetime import timedelta

    from server.models import Device, RemoteSession
    from shared.ids import utcnow

    with Session(engine) as session:
        session.add(Device(id="server-gw", serial="G", model="m", type="server", customer="c"))
        session.add(Device(id="mfp-1", serial="S1", model="m", type="mfp", customer="c"))
        session.add(
            Device(id="mfp-3f-east", serial="S2", model="m", type="mfp", customer="c",
                   via="server-gw")
        )  # fmt: skip
        session.flush()
        for sid, device_id in (("ses-1", "mfp-3f-east"), ("ses-2", "mfp-1")):
            session.add(
                RemoteSession(id=sid, device_id=device_id, operator="olga", reason="r",
                              state="active", expires_at=utcnow() + timedelta(minutes=5))
            )  # fmt: skip
        session.commit()
    page = client.get("/sessions/ses-1")
    assert page.status_code == 200
    assert 'data-forward-only="yes"' in page.text
    assert 'id="web-panel"' in page.text
    assert "fieldlink connect mfp-3f-east web" in page.text
    assert re.search(r'class="card terminal-card"[^>]*hidden', page.text)
    assert re.search(r'id="diagnostics"[^>]*hidden', page.text)
    # A device with its own agent keeps its terminal.
    own = client.get("/sessions/ses-2")
    assert 'data-forward-only="no"' in own.text
    assert not re.search(r'class="card terminal-card"[^>]*hidden', own.text)
