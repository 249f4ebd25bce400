"""The CTI screen-pop and the customers' pages, through the console's own session cookie."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.models import Call
from tests.fixtures.api_auth import PASSWORD
from tests.fixtures.customers import fleet as _fleet

Auth = Callable[[str], dict[str, str]]


def _login(client: TestClient, engine: Engine) -> None:
    with Session(engine) as session:
        crud.create_user(session, username="olga", role="operator", password=PASSWORD)
    answer = client.post(
        "/login", data={"username": "olga", "password": PASSWORD}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


def _pop(client: TestClient, **params: Any) -> str:
    answer = client.get("/desk/call", params=params, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"])


def test_the_screen_pop_opens_what_the_number_matched(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    _fleet(client, auth)
    _login(client, engine)
    one = _pop(client, ani="+81 3-1234-5678", call_id="pbx-1")
    assert one.startswith("/devices/imaging-a1?call=")
    # The Berlin customer has no contact: each device phone matches one device...
    assert _pop(client, ani="+49 30 7654321").startswith("/devices/imaging-b2?call=")
    # ...and the customer number keyed into the IVR, with an unknown phone: the customer.
    several = _pop(client, ani="+44 20 7946 0000", customer_no="5000")
    assert several.startswith("/customers/5000?call=")
    nothing = _pop(client, ani='=HYPERLINK("x")', customer_no="<script>", call_id="'; --")
    assert nothing.startswith("/desk?call=")
    nul = client.get("/desk/call", params={"ani": "+81\x00"}, follow_redirects=False)
    assert nul.status_code == 422  # the request guard: no call recorded for it
    call_id = int(one.split("=")[-1])
    with Session(engine) as session:
        call = session.get(Call, call_id)
        assert call is not None
        assert (call.ani_e164, call.device_id, call.customer_number) == (
            "+81312345678",
            "imaging-a1",
            "4711",
        )
        assert (call.operator, call.external_id) == ("olga", "pbx-1")
        assert call.answered_at is not None
    page = client.get(several)
    assert page.status_code == 200
    assert "Berlin Labs" in page.text
    assert "imaging-b1" in page.text
    listed = client.get("/customers?q=berlin")
    assert "/customers/5000" in listed.text
    assert client.get("/customers/nope").status_code == 404
    desk = client.get(nothing)
    assert 'id="call-banner"' in desk.text
    assert "/static/call.js" in desk.text


def test_the_screen_pop_needs_a_login(client: TestClient) -> None:
    answer = client.get("/desk/call", params={"ani": "+81312345678"}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")
