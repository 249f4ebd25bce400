"""The fleet API: register, list, search, show; bad input and missing credentials."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.models import TelemetrySample
from shared.ids import utcnow

Auth = Callable[[str], dict[str, str]]

MFP = {
    "serial": "XK-0042",
    "model": "Imagio MP 6055",
    "type": "mfp",
    "customer": "Acme Offices",
    "site": "Berlin HQ, 3rd floor",
    "region": "emea",
    "contact_phone": "+49 30 1234-5678",
}


def test_admin_registers_a_device_and_gets_a_one_time_token(client: TestClient, auth: Auth) -> None:
    answer = client.post("/api/v1/devices", json=MFP, headers=auth("admin"))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["device"]["id"] == "mfp-xk-0042"
    assert body["device"]["online"] is False
    assert len(body["enrollment_token"]) > 30
    assert "enrollment_token_hash" not in body["device"]


def test_explicit_id_and_conflict(client: TestClient, auth: Auth) -> None:
    first = client.post("/api/v1/devices", json={**MFP, "id": "mfp-0042"}, headers=auth("admin"))
    assert first.status_code == 201
    again = client.post("/api/v1/devices", json={**MFP, "id": "mfp-0042"}, headers=auth("admin"))
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]


def test_bad_registrations_answer_422_naming_the_field(client: TestClient, auth: Auth) -> None:
    cases = {
        "type": {**MFP, "type": "toaster"},
        "id": {**MFP, "id": "Bad_ID"},
        "serial": {k: v for k, v in MFP.items() if k != "serial"},
    }
    for field, body in cases.items():
        answer = client.post("/api/v1/devices", json=body, headers=auth("admin"))
        assert answer.status_code == 422, field
        assert field in str(answer.json()["detail"])
    listed = client.get("/api/v1/devices", headers=auth("admin")).json()
    assert listed["count"] == 0


def test_operator_may_not_register(client: TestClient, auth: Auth) -> None:
    answer = client.post("/api/v1/devices", json=MFP, headers=auth("operator"))
    assert answer.status_code == 403


def test_search_finds_the_caller_by_phone_serial_customer_and_site(
    client: TestClient, auth: Auth
) -> None:
    admin = auth("admin")
    client.post("/api/v1/devices", json=MFP, headers=admin)
    client.post(
        "/api/v1/devices",
        json={
            "serial": "CT-9",
            "model": "Somatom",
            "type": "imaging",
            "customer": "St. Mary Hospital",
            "contact_phone": "0049 40 555 0101",
        },
        headers=admin,
    )
    operator = auth("operator")

    def ids(query: str) -> list[str]:
        answer = client.get("/api/v1/devices", params={"q": query}, headers=operator)
        assert answer.status_code == 200
        return [item["id"] for item in answer.json()["items"]]

    assert ids("30 1234 5678") == ["mfp-xk-0042"]
    assert ids("+49 40 555-0101") == ["imaging-ct-9"]
    assert ids("xk-00") == ["mfp-xk-0042"]
    assert ids("mary") == ["imaging-ct-9"]
    assert ids("3rd floor") == ["mfp-xk-0042"]
    assert ids("nobody") == []
    assert ids("%%") == []  # wildcards are literal characters
    assert ids("_") == []
    typed = client.get("/api/v1/devices", params={"type": "imaging"}, headers=operator).json()
    assert [d["id"] for d in typed["items"]] == ["imaging-ct-9"]
    paged = client.get("/api/v1/devices", params={"limit": 1, "offset": 1}, headers=operator).json()
    assert paged["count"] == 2
    assert [d["id"] for d in paged["items"]] == ["mfp-xk-0042"]


def test_device_detail_and_unknown_device(client: TestClient, auth: Auth) -> None:
    client.post("/api/v1/devices", json=MFP, headers=auth("admin"))
    detail = client.get("/api/v1/devices/mfp-xk-0042", headers=auth("operator"))
    assert detail.status_code == 200
    body = detail.json()
    assert body["telemetry_stats"] == {"received": 0, "missing": 0, "rejected": 0}
    assert body["open_faults"] == []
    missing = client.get("/api/v1/devices/mfp-nope", headers=auth("operator"))
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no device 'mfp-nope'"}


def test_every_api_route_needs_a_token(client: TestClient) -> None:
    for path in ("/api/v1/devices", "/api/v1/devices/x", "/api/v1/devices/x/telemetry"):
        answer = client.get(path)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
    bad = client.get("/api/v1/devices", headers={"Authorization": "Bearer flk_forged"})
    assert bad.status_code == 401


def test_login_with_a_wrong_password_is_refused(client: TestClient, auth: Auth) -> None:
    auth("operator")
    wrong = client.post("/api/v1/auth/token", data={"username": "operator1", "password": "nope"})
    assert wrong.status_code == 401
    unknown = client.post("/api/v1/auth/token", data={"username": "ghost", "password": "nope"})
    assert unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_ops_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    # The fixture's broker URL points nowhere: the database is fine, ingest is not.
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "broker": "disconnected"}
    assert client.get("/metrics").status_code == 200


def test_raw_telemetry_shows_which_timestamps_the_server_replaced(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    """A sample whose ``ts`` was implausible (2099, 1970) is stored at the receive time
    and flagged ``ts_untrusted``: the API shows the flag with the sample."""
    device_id = client.post("/api/v1/devices", json=MFP, headers=auth("admin")).json()["device"][
        "id"
    ]
    now = utcnow()
    with Session(engine) as session:
        for seq, untrusted in ((0, False), (1, True)):
            session.add(
                TelemetrySample(
                    device_id=device_id,
                    boot_id="b1",
                    seq=seq,
                    ts=now - timedelta(seconds=10 - seq),
                    received_at=now,
                    ts_untrusted=untrusted,
                    status="ok",
                )
            )
        session.commit()
    answer = client.get(f"/api/v1/devices/{device_id}/telemetry", headers=auth("operator"))
    assert answer.status_code == 200, answer.text
    samples = answer.json()["samples"]
    assert [(s["seq"], s["ts_untrusted"]) for s in samples] == [(0, False), (1, True)]
