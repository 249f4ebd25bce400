"""Who may approve a session from the web, and one-time approval links, in process.

The decision itself travels to a real agent in tests/integration/test_site_approval.py;
here: the role rules of the approve/deny routes, a link that is unknown, used, expired or
for a session past consent (a page that says so, nothing changed, audited), and that the
token is stored hashed and never logged.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.access_log import redact_path
from server.models import AuditEntry, Device, RemoteSession, SessionApprovalLink, User
from server.security import hash_token
from server.sessions import approval
from shared.errors import Conflict
from shared.ids import utcnow
from tests.fixtures.api_auth import SITE_CUSTOMER, Auth
from tests.fixtures.session_rows import DEVICE_ID, add_device, add_session

DEVICE = Device(
    id="mfp-1", serial="S1", model="m", type="mfp", customer="Clinic", customer_number="C-1001"
)


def user(role: str, *, disabled: bool = False, customers: str | None = None) -> User:
    return User(
        username=f"u-{role}", role=role, password_hash="x", disabled=disabled, customers=customers
    )


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (user("admin"), True),
        (user("site", customers="C-1001"), True),
        (user("site"), False),  # bound to no customer: none
        (user("operator"), False),
        (user("manager"), False),
        (user("admin", disabled=True), False),
        (user("site", disabled=True, customers="C-1001"), False),
    ],
)
def test_who_may_approve(who: User, allowed: bool) -> None:
    assert approval.can_approve(who, DEVICE) is allowed


def test_a_site_user_bound_to_customers_approves_only_theirs() -> None:
    assert approval.can_approve(user("site", customers="C-0001,C-1001"), DEVICE)
    assert not approval.can_approve(user("site", customers="C-2002,C-3003"), DEVICE)


def test_only_admins_and_site_users_reach_the_decision(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    auth("site")  # bound to SITE_CUSTOMER, the device's customer
    add_device(engine, customer_number=SITE_CUSTOMER)
    sid = add_session(engine, state="awaiting_consent")
    for path in (f"/api/v1/sessions/{sid}/approve", f"/api/v1/sessions/{sid}/deny"):
        for role in ("operator", "manager"):
            answer = client.post(path, headers=auth(role))
            assert answer.status_code == 403, (path, role, answer.text)
        assert client.post(path).status_code == 401
        # Unknown session: 404 for those who may approve (sessions are off here: 503 after).
        missing = client.post(path.replace(sid, "ses-0"), headers=auth("site"))
        assert missing.status_code == 404
        off = client.post(path, headers=auth("site"))
        assert off.status_code == 503, off.text
    follow = client.get(f"/api/v1/sessions/{sid}/approval", headers=auth("site"))
    assert follow.status_code == 200
    assert (follow.json()["state"], follow.json()["approved_by"]) == ("awaiting_consent", None)
    assert (
        client.get(f"/api/v1/sessions/{sid}/approval", headers=auth("operator")).status_code == 403
    )
    too_long = client.post(
        f"/api/v1/sessions/{sid}/approve", json={"max_duration_s": -5}, headers=auth("admin")
    )
    assert too_long.status_code == 422


def test_an_approval_link_is_stored_hashed_and_its_page_shows_the_session(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    auth("site")  # bound to SITE_CUSTOMER, the device's customer
    add_device(engine, customer_number=SITE_CUSTOMER)
    sid = add_session(engine, state="awaiting_consent", operator="operator1")
    made = client.post(f"/api/v1/sessions/{sid}/approval-link", headers=auth("operator"))
    assert made.status_code == 201, made.text
    url = made.json()["url"]
    token = url.rsplit("/", 1)[1]
    assert len(token) >= 43
    with Session(engine) as db:
        [link] = db.exec(select(SessionApprovalLink)).all()
        assert link.token_hash == hash_token(token)
        assert token not in link.token_hash
        entry = db.exec(
            select(AuditEntry).where(AuditEntry.action == "session.approval_link")
        ).one()
        assert token not in str(entry.details)
    page = client.get(f"/approve/{token}")
    assert page.status_code == 200
    assert "jam" in page.text
    assert DEVICE_ID in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert redact_path(f"/approve/{token}") == "/approve/[redacted]"
    # Another operator's session: no link for them.
    other = add_session(engine, state="awaiting_consent", operator="someone")
    refused = client.post(f"/api/v1/sessions/{other}/approval-link", headers=auth("operator"))
    assert refused.status_code == 403


def test_a_link_serves_once_and_not_when_expired_or_past_consent(engine: Engine) -> None:
    add_device(engine)
    sid = add_session(engine, state="awaiting_consent")
    with Session(engine, expire_on_commit=False) as db:
        token, expires_at = approval.create_link(
            db, sid, created_by="olga", ttl_s=600, source_ip=None
        )
        view = approval.view_link(db, token)
        assert view.problem is None
        assert view.link is not None
        assert view.link.id is not None
        assert approval.claim_link(db, view.link.id, "approve")
        assert not approval.claim_link(db, view.link.id, "deny")  # single use
        assert approval.view_link(db, token).problem == "used"
        assert approval.view_link(db, "no-such-token").problem == "unknown"

        old, _ = approval.create_link(db, sid, created_by="olga", ttl_s=60, source_ip=None)
        db.execute(
            sa.update(SessionApprovalLink)
            .where(SessionApprovalLink.token_hash == hash_token(old))  # type: ignore[arg-type]
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.commit()
        expired = approval.view_link(db, old)
        assert expired.problem == "expired"
        assert expired.link is not None
        assert expired.link.id is not None
        assert not approval.claim_link(db, expired.link.id, "approve")

        fresh, _ = approval.create_link(db, sid, created_by="olga", ttl_s=None, source_ip=None)
        row = db.get(RemoteSession, sid)
        assert row is not None
        row.state = "active"
        db.add(row)
        db.commit()
        assert approval.view_link(db, fresh).problem == "decided"
        with pytest.raises(Conflict, match="no consent to give"):
            approval.create_link(db, sid, created_by="olga", ttl_s=None, source_ip=None)
    assert expires_at <= utcnow() + timedelta(seconds=600)


def test_a_used_expired_or_unknown_link_gets_a_clear_page_and_changes_nothing(
    client: TestClient, engine: Engine
) -> None:
    add_device(engine)
    sid = add_session(engine, state="awaiting_consent")
    with Session(engine) as db:
        token, _ = approval.create_link(db, sid, created_by="olga", ttl_s=60, source_ip=None)
        link = db.exec(select(SessionApprovalLink)).one()
        assert link.id is not None
        assert approval.claim_link(db, link.id, "approve")
    used = client.post(f"/approve/{token}", data={"decision": "deny"})
    assert used.status_code == 410
    assert "used already" in used.text
    unknown = client.post("/approve/" + "x" * 43, data={"decision": "approve"})
    assert unknown.status_code == 404
    assert "not valid" in unknown.text
    hostile = client.post(f"/approve/{token}", data={"decision": "<script>"})
    assert hostile.status_code == 422
    assert "<script>" not in hostile.text
    with Session(engine) as db:
        row = db.get(RemoteSession, sid)
        assert row is not None
        assert (row.state, row.approved_by) == ("awaiting_consent", None)
        refusals = db.exec(
            select(AuditEntry).where(AuditEntry.action == "session.approval_link.refused")
        ).all()
        assert [json.loads(e.details)["problem"] for e in refusals] == ["used", "unknown"]
