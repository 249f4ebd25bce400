"""Access scoped by customer and region, and the site role: lists, exports and KPIs hold
only the user's fleet, what lies outside is 404, the console shows the same; the scope
is set with ``fieldlink user add/scope`` and ``PATCH /api/v1/users/{name}``.

(Every route asked about another customer's things: ``test_route_roles``.)
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from server import crud
from server.api.deps import SESSION_COOKIE
from tests.fixtures.api_auth import PASSWORD, Auth, engine_of
from tests.fixtures.cli import fieldlink
from tests.fixtures.scoped_fleet import Side, build_fleet, scoped_auth


@pytest.fixture
def fleet(client: TestClient, tmp_path: Path) -> tuple[Side, Side]:
    return build_fleet(engine_of(client), tmp_path / "recordings")


def _ids(answer: object, key: str = "device_id") -> set[str]:
    items = answer.json()["items"]  # type: ignore[attr-defined]
    return {str(item[key]) for item in items}


def test_a_customer_scoped_operator_lists_only_their_fleet(
    client: TestClient, auth: Auth, fleet: tuple[Side, Side]
) -> None:
    ours, theirs = fleet
    dealer = scoped_auth(client, "dealer", "operator", customers=[ours.number])
    everyone = auth("operator")
    get = client.get
    assert _ids(get("/api/v1/devices", headers=dealer), "id") == {ours.device_id}
    assert _ids(get("/api/v1/devices", headers=everyone), "id") == {
        ours.device_id,
        theirs.device_id,
    }
    assert get("/api/v1/devices?q=HI-0202", headers=dealer).json()["count"] == 0
    assert _ids(get("/api/v1/incidents", headers=dealer)) == {ours.device_id}
    assert _ids(get("/api/v1/alerts", headers=dealer)) == {ours.device_id}
    assert _ids(get("/api/v1/sessions", headers=dealer)) == {ours.device_id}
    assert _ids(get("/api/v1/calls", headers=dealer)) == {ours.device_id}
    assert _ids(get("/api/v1/customers", headers=dealer), "number") == {ours.number}
    assert len(_ids(get("/api/v1/customers", headers=everyone), "number")) == 2
    similar = get("/api/v1/incidents/similar?error_code=DICOM_PEER", headers=dealer).json()
    assert similar["any_model"]["count"] == 1
    everyone_similar = get("/api/v1/incidents/similar?error_code=DICOM_PEER", headers=everyone)
    assert everyone_similar.json()["any_model"]["count"] == 2
    notes = get("/api/v1/knowledge?q=DICOM", headers=dealer).json()
    assert {hit.get("device_id") for hit in notes["items"]} == {ours.device_id}
    assert notes["count"] == 1
    # Their things are not there at all: 404, as for what does not exist.
    for path in (
        f"/api/v1/devices/{theirs.device_id}",
        f"/api/v1/devices/{theirs.device_id}/telemetry",
        f"/api/v1/sessions/{theirs.session_id}",
        f"/api/v1/sessions/{theirs.session_id}/recording",
        f"/api/v1/incidents/{theirs.incident_id}",
        f"/api/v1/customers/{theirs.number}",
        f"/api/v1/calls/{theirs.call_id}",
    ):
        hidden = get(path, headers=dealer)
        assert hidden.status_code == 404, path
        assert theirs.name not in hidden.text
        assert get(path, headers=auth("admin")).status_code == 200, path


def test_the_screen_pop_lookup_matches_only_in_scope(
    client: TestClient, auth: Auth, fleet: tuple[Side, Side]
) -> None:
    ours, theirs = fleet
    dealer = scoped_auth(client, "dealer", "operator", customers=[ours.number])
    their_phone = "/api/v1/lookup?ani=%2B44207946" + "0202"
    mine = "/api/v1/lookup?ani=%2B44207946" + "0101"
    assert client.get(their_phone, headers=auth("operator")).json()["devices"]
    nothing = client.get(their_phone, headers=dealer).json()
    assert nothing["devices"] == []
    assert nothing["customer"] is None
    assert [d["id"] for d in client.get(mine, headers=dealer).json()["devices"]] == [ours.device_id]
    keyed = client.get(f"{their_phone}&customer_no={theirs.number}", headers=dealer).json()
    assert keyed["customer_numbers"] == []


def test_exports_and_kpis_of_a_region_scoped_manager_cover_their_region(
    client: TestClient, auth: Auth, fleet: tuple[Side, Side]
) -> None:
    ours, theirs = fleet
    emea = scoped_auth(client, "emea-lead", "manager", regions=[ours.region.lower()])
    rows = list(
        csv.DictReader(io.StringIO(client.get("/api/v1/incidents/export", headers=emea).text))
    )
    assert {row["device_id"] for row in rows} == {ours.device_id}
    everyone = client.get("/api/v1/incidents/export", headers=auth("manager")).text
    assert theirs.device_id in everyone
    customers = client.get("/api/v1/customers/export", headers=emea).text
    assert ours.name in customers
    assert theirs.name not in customers
    scoped = client.get("/api/v1/kpis?group_by=region", headers=emea).json()
    whole = client.get("/api/v1/kpis?group_by=region", headers=auth("manager")).json()
    assert scoped["total"]["incidents_closed"] == 1
    assert whole["total"]["incidents_closed"] == 2
    assert scoped["calls"]["calls"] == 1
    assert whole["calls"]["calls"] == 2
    # Imports and new customers add to the whole fleet: not for a scoped user.
    refused = client.post("/api/v1/customers", json={"number": "9", "name": "N"}, headers=emea)
    assert refused.status_code == 403


def test_a_site_user_sees_their_devices_and_the_sessions_on_them(
    client: TestClient, fleet: tuple[Side, Side]
) -> None:
    ours, theirs = fleet
    site = scoped_auth(client, "alpine-it", "site", customers=[ours.number])
    assert _ids(client.get("/api/v1/devices", headers=site), "id") == {ours.device_id}
    detail = client.get(f"/api/v1/devices/{ours.device_id}", headers=site).json()
    assert detail["incidents"] == []
    assert {s["id"] for s in detail["sessions"]} == {ours.session_id, ours.waiting_session_id}
    waiting = client.get("/api/v1/sessions?state=awaiting_consent", headers=site).json()
    assert [(s["id"], s["operator"], s["reason"], s["incident_id"]) for s in waiting["items"]] == [
        (ours.waiting_session_id, "someone", "look at Alpine Print", ours.open_incident_id)
    ]
    # Sessions of another operator on their devices: readable, with the recording.
    one = client.get(f"/api/v1/sessions/{ours.session_id}", headers=site)
    assert one.status_code == 200
    recording = client.get(f"/api/v1/sessions/{ours.session_id}/recording", headers=site)
    assert recording.status_code == 200
    assert recording.text.startswith('{"version": 2')
    assert client.get(f"/api/v1/sessions/{theirs.session_id}", headers=site).status_code == 404
    # What a site user may not do at all: 403 whatever the device.
    for method, path, body in (
        ("POST", f"/api/v1/devices/{ours.device_id}/sessions", {"reason": "x"}),
        ("GET", "/api/v1/incidents", None),
        ("GET", "/api/v1/kpis", None),
        ("GET", "/api/v1/alerts", None),
        ("GET", "/api/v1/users", None),
        ("POST", f"/api/v1/sessions/{ours.session_id}/exec", {"command": "id"}),
    ):
        answer = client.request(method, path, headers=site, json=body)
        assert answer.status_code == 403, (method, path, answer.text)


def test_a_scope_names_known_customers_and_a_site_user_needs_one(
    client: TestClient, auth: Auth, fleet: tuple[Side, Side]
) -> None:
    ours, theirs = fleet
    admin = auth("admin")
    with Session(engine_of(client)) as session:
        with pytest.raises(crud.InvalidInput, match="at least one customer"):
            crud.create_user(session, username="lonely", role="site", password=PASSWORD)
        crud.create_user(session, username="olga", role="operator", password=PASSWORD)
    bad = client.patch("/api/v1/users/olga", json={"customers": ["C-9999"]}, headers=admin)
    assert bad.status_code == 422
    assert "no customer 'C-9999'" in bad.text
    hostile = client.patch("/api/v1/users/olga", json={"regions": ["EU;DROP"]}, headers=admin)
    assert hostile.status_code == 422
    unbound = client.patch("/api/v1/users/olga", json={"role": "site"}, headers=admin)
    assert unbound.status_code == 422
    site = client.patch(
        "/api/v1/users/olga", json={"role": "site", "customers": [ours.number]}, headers=admin
    )
    assert site.status_code == 200, site.text
    assert site.json()["customers"] == [ours.number]
    left_unbound = client.patch("/api/v1/users/olga", json={"customers": []}, headers=admin)
    assert left_unbound.status_code == 422
    back = client.patch(
        "/api/v1/users/olga",
        json={"role": "operator", "customers": [], "regions": ["apac"]},
        headers=admin,
    )
    assert back.status_code == 200, back.text
    assert (back.json()["customers"], back.json()["regions"]) == ([], ["APAC"])
    audit = client.get("/api/v1/audit?action=user.scope", headers=admin).json()
    assert len(audit["items"]) == 2
    olga = scoped_auth(client, "olga2", "operator", regions=["APAC"])
    assert _ids(client.get("/api/v1/devices", headers=olga), "id") == {theirs.device_id}


def test_fieldlink_user_add_and_scope(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndatabase_url = "sqlite:///{tmp_path / "db.sqlite"}"\nstate_dir = "{tmp_path}"\n'
    )
    c = ["--config", str(config)]
    for number in ("C-1001", "C-1002"):
        assert fieldlink("customer", "add", number, "--name", f"N {number}", *c).returncode == 0
    added = fieldlink(
        "user", "add", "dealer", "--role", "operator", "--customers", "C-1001,C-1002",
        "--regions", "EU,APAC", *c, stdin="s3cret-pass\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == (
        "created operator dealer (customers C-1001,C-1002 and regions APAC,EU)"
    )
    unbound = fieldlink("user", "add", "it", "--role", "site", *c, stdin="s3cret-pass\n")
    assert unbound.returncode != 0
    assert unbound.stderr.strip().splitlines() == [
        "error: a site user must be bound to at least one customer (--customers)"
    ]
    unknown = fieldlink("user", "scope", "dealer", "--customers", "C-4242", *c)
    assert (
        unknown.stderr.strip() == "error: customers: no customer 'C-4242' (fieldlink customer list)"
    )
    narrowed = fieldlink("user", "scope", "dealer", "--customers", "C-1001", *c)
    assert narrowed.stdout.strip() == "dealer sees (customers C-1001 and regions APAC,EU)"
    cleared = fieldlink("user", "scope", "dealer", "--clear", *c)
    assert cleared.stdout.strip() == "dealer sees everything"
    assert "user.scope" in fieldlink("audit", "list", "--action", "user.scope", *c).stdout


def _console_login(client: TestClient, name: str) -> None:
    answer = client.post(
        "/login", data={"username": name, "password": PASSWORD, "next": "/"}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    assert client.cookies.get(SESSION_COOKIE)


def test_the_console_shows_a_scoped_user_only_their_fleet(
    client: TestClient, fleet: tuple[Side, Side]
) -> None:
    ours, theirs = fleet
    scoped_auth(client, "dealer", "operator", customers=[ours.number])
    _console_login(client, "dealer")
    desk = client.get("/desk")
    assert ours.device_id in desk.text
    assert theirs.device_id not in desk.text
    assert theirs.name not in desk.text
    assert client.get(f"/devices/{theirs.device_id}").status_code == 404
    assert client.get(f"/sessions/{theirs.session_id}").status_code == 404
    assert theirs.device_id not in client.get("/incidents?state=").text
    assert theirs.name not in client.get("/customers").text
    assert client.get(f"/customers/{theirs.number}").status_code == 404
    found = client.get(f"/desk/find?q={theirs.device_id}").json()
    assert found["count"] == 0


def test_the_console_of_a_site_user(client: TestClient, fleet: tuple[Side, Side]) -> None:
    ours, theirs = fleet
    scoped_auth(client, "alpine-it", "site", customers=[ours.number])
    _console_login(client, "alpine-it")
    assert client.get("/desk", follow_redirects=False).headers["location"] == "/site"
    page = client.get("/site")
    assert ours.device_id in page.text
    assert ours.waiting_session_id in page.text
    assert theirs.device_id not in page.text
    device = client.get(f"/devices/{ours.device_id}")
    assert device.status_code == 200
    assert 'data-open="session-dialog"' not in device.text
    assert client.get(f"/sessions/{ours.session_id}").status_code == 200
    assert client.get(f"/devices/{theirs.device_id}").status_code == 404
    for page_path in ("/incidents", "/customers", "/dashboard", "/admin"):
        assert client.get(page_path).status_code == 403, page_path


def test_a_scoped_operator_opens_no_session_outside_their_scope(
    client: TestClient, fleet: tuple[Side, Side]
) -> None:
    """The session repository checks the scope itself, so the API and the SSH gateway
    (which opens sessions by the operator's key) both refuse: as if there were no device."""
    from datetime import timedelta

    from server.models import Device, RemoteSession
    from server.sessions.repository import insert_session
    from shared.errors import NotFound
    from shared.ids import utcnow

    ours, theirs = fleet
    scoped_auth(client, "dealer", "operator", customers=[ours.number])
    with Session(engine_of(client)) as db:  # enrolled, so that only the scope refuses
        for side in fleet:
            device = db.get(Device, side.device_id)
            assert device is not None
            device.ssh_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA"
            db.add(device)
        db.commit()
    now = utcnow()
    for device_id, incident_id in (
        (theirs.device_id, None),
        (ours.device_id, theirs.open_incident_id),
    ):
        row = RemoteSession(
            id=f"ses-try-{device_id}",
            device_id=device_id,
            operator="dealer",
            reason="a look",
            incident_id=incident_id,
            created_at=now,
            expires_at=now + timedelta(minutes=1),
        )
        with Session(engine_of(client)) as db, pytest.raises(NotFound):
            insert_session(db, row, source_ip=None, per_device=5, per_operator=5)
    answer = client.post(
        f"/api/v1/devices/{theirs.device_id}/sessions",
        json={"reason": "a look"},
        headers=scoped_auth(client, "dealer2", "operator", customers=[ours.number]),
    )
    assert answer.status_code == 404


def test_the_admin_page_sets_a_users_scope(
    client: TestClient, auth: Auth, fleet: tuple[Side, Side]
) -> None:
    from server.api.deps import csrf_token_for

    ours, _theirs = fleet
    auth("admin")  # user admin1
    _console_login(client, "admin1")
    csrf = csrf_token_for(client.cookies.get(SESSION_COOKIE) or "")
    unbound = client.post(
        "/admin/users",
        data={"csrf_token": csrf, "username": "it", "role": "site", "password": PASSWORD},
    )
    assert unbound.status_code == 422
    assert "at least one customer" in unbound.text
    added = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "username": "it",
            "role": "site",
            "password": PASSWORD,
            "customers": ours.number,
        },
        follow_redirects=False,
    )
    assert added.status_code == 303, added.text
    changed = client.post(
        "/admin/users/it",
        data={
            "csrf_token": csrf,
            "role": "operator",
            "disabled": "no",
            "customers": "",
            "regions": "EU, APAC",
        },
        follow_redirects=False,
    )
    assert changed.status_code == 303, changed.text
    with Session(engine_of(client)) as db:
        user = crud.get_user(db, username="it")
        assert user is not None
        assert (user.role, user.customers, user.regions) == ("operator", None, "APAC,EU")
    page = client.get("/admin")
    assert 'value="APAC,EU"' in page.text


def test_an_admin_is_never_scoped(client: TestClient, auth: Auth, fleet: tuple[Side, Side]) -> None:
    """An admin manages users, devices and reads the whole audit log: a scope on one would
    promise a limit that those pages do not keep, so none is accepted."""
    ours, _theirs = fleet
    admin = auth("admin")
    with Session(engine_of(client)) as session:
        with pytest.raises(crud.InvalidInput, match="an admin sees the whole fleet"):
            crud.create_user(
                session, username="ada", role="admin", password=PASSWORD, customers=[ours.number]
            )
        crud.create_user(
            session, username="otto", role="operator", password=PASSWORD, regions=["emea"]
        )
    scoped = client.patch("/api/v1/users/admin1", json={"regions": ["emea"]}, headers=admin)
    assert scoped.status_code == 422
    assert "an admin sees the whole fleet" in scoped.text
    promoted = client.patch("/api/v1/users/otto", json={"role": "admin"}, headers=admin)
    assert promoted.status_code == 422
    assert "lift otto's scope first" in promoted.text
    lifted = client.patch(
        "/api/v1/users/otto", json={"role": "admin", "regions": []}, headers=admin
    )
    assert lifted.status_code == 200, lifted.text
    assert (lifted.json()["role"], lifted.json()["regions"]) == ("admin", [])
