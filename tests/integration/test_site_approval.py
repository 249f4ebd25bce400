"""A site's approval from the web, end to end: the real server, a TLS Mosquitto, real agents.

A site user (or an admin) approves or denies a session awaiting consent with
``POST /api/v1/sessions/{id}/approve|deny``; the decision reaches the agent as a
signed ``session.decide`` and the agent enforces it: under ``consent = "required"``
the session goes active (or closes with the denial's reason), under
``consent = "local"`` the web approval is refused and audited as such. A forged
or unsigned decision published on the device's command topic is refused by the
agent. An operator gets 403. A one-time approval link approves once; a reused or
expired link gets a page that says so and changes nothing.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import paho.mqtt.client as mqtt
import pytest

from shared import topics
from shared.ids import new_id, utcnow
from shared.models import Command, dump_message
from shared.signing import generate_command_key, sign_command
from tests.fixtures.center import (
    OPERATOR_PASSWORD,
    TlsBroker,
    add_operator,
    enrolled_agent,
    operator_token,
    secure_center,
)
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until

pytestmark = pytest.mark.integration

REQUIRED = {"consent": "required", "approval_timeout_s": 120}


class Site:
    """The server, two devices (consent required, consent local) and the people involved."""

    def __init__(
        self,
        server: ServerProcess,
        broker: TlsBroker,
        required: tuple[str, AgentProcess],
        local: tuple[str, AgentProcess, Path],
    ) -> None:
        self.server = server
        self.broker = broker
        self.required_id, self.required_agent = required
        self.local_id, self.local_agent, self.local_state = local
        self.tokens: dict[str, str] = {}

    def token(self, username: str) -> str:
        if username not in self.tokens:
            self.tokens[username] = operator_token(self.server, username)
        return self.tokens[username]

    def call(self, method: str, path: str, user: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.server.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {self.token(user)}"},
            timeout=60,
            **kwargs,
        )

    def open(self, device_id: str, reason: str = "fuser error, please let me in") -> str:
        answer = self.call(
            "POST", f"/devices/{device_id}/sessions", "olga", json={"reason": reason}
        )
        assert answer.status_code == 201, answer.text
        session_id = str(answer.json()["id"])
        self.wait_state(session_id, "awaiting_consent")
        return session_id

    def local_agent_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``fieldlink agent ...`` on the consent-local device (the site's own panel)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINK_")}
        env["FIELDLINK_STATE_DIR"] = str(self.local_state)
        return subprocess.run(
            [sys.executable, "-m", "shared", "agent", *args,
             "--config", str(self.local_agent.config)],
            capture_output=True, text=True, env=env, timeout=30, check=False,
        )  # fmt: skip

    def session(self, session_id: str) -> dict[str, Any]:
        answer = self.call("GET", f"/sessions/{session_id}", "olga")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def wait_state(self, session_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        wait_until(lambda: self.session(session_id)["state"] in states, timeout=timeout)
        return self.session(session_id)

    def audit(self, action: str, session_id: str) -> list[dict[str, Any]]:
        entries = self.server.api("GET", "/audit", params={"action": action, "limit": 200})
        return [e for e in entries["items"] if e["details"].get("session_id") == session_id]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres])]
)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    tmp_path = tmp_path_factory.mktemp("approval")
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'fieldlink.db'}"
    else:
        database_url = request.getfixturevalue("postgres_cluster").create_database()
    for name in ("required", "local"):
        (tmp_path / name).mkdir()
    with (
        secure_center(tmp_path, database_url) as (server, broker),
        enrolled_agent(
            server, tmp_path / "required", "AP-1", customer="St. Mary", policy=REQUIRED
        ) as (required_id, required_agent, _),
        enrolled_agent(
            server, tmp_path / "local", "AP-2", customer="St. Mary",
            policy={"consent": "local", "approval_timeout_s": 120},
        ) as (local_id, local_agent, _),
    ):  # fmt: skip
        add_operator(server, "olga")
        customer = server.api("GET", f"/devices/{required_id}")["customer_number"]
        add_operator(server, "sam", role="site", customers=customer)
        add_operator(server, "otto")
        yield Site(
            server,
            broker,
            (required_id, required_agent),
            (local_id, local_agent, tmp_path / "local" / "agent-state"),
        )


def test_a_site_user_approves_from_the_web_and_the_session_goes_active(site: Site) -> None:
    sid = site.open(site.required_id)
    answer = site.call("POST", f"/sessions/{sid}/approve", "sam", json={"max_duration_s": 600})
    assert answer.status_code == 200, answer.text
    approved = answer.json()
    assert approved["approved_by"] == "sam"
    assert approved["approved_via"] == "web"
    assert approved["approved_at"] is not None
    active = site.wait_state(sid, "active")
    assert active["approved_by"] == "sam"
    ran = site.call("POST", f"/sessions/{sid}/exec", "olga", json={"command": "echo approved"})
    assert ran.json()["stdout"] == "approved\n"
    [entry] = site.audit("session.approve", sid)
    assert entry["actor"] == "sam"
    assert entry["details"]["via"] == "web"
    assert entry["details"]["max_duration_s"] == 600
    # A second decision on a session past consent is refused, and so is a deny.
    again = site.call("POST", f"/sessions/{sid}/deny", "sam", json={"reason": "late"})
    assert again.status_code == 409, again.text
    closed = site.call("DELETE", f"/sessions/{sid}", "olga")
    assert closed.json()["state"] == "closed"


def test_a_web_denial_closes_the_session_with_its_reason(site: Site) -> None:
    sid = site.open(site.required_id)
    denied = httpx.post(
        f"{site.server.url}/api/v1/sessions/{sid}/deny",
        headers={"Authorization": f"Bearer {site.server.token}"},
        json={"reason": "ward rounds until 14:00"},
        timeout=60,
    )
    assert denied.status_code == 200, denied.text
    closed = site.wait_state(sid, "closed")
    assert closed["close_reason"] == "site_denied"
    assert "denied by admin" in closed["detail"]
    assert "ward rounds until 14:00" in closed["detail"]
    assert closed["started_at"] is None
    assert closed["approved_by"] is None
    [entry] = site.audit("session.deny", sid)
    assert (entry["actor"], entry["details"]["reason"]) == ("admin", "ward rounds until 14:00")


def test_consent_local_ignores_a_web_approval_and_the_audit_says_so(site: Site) -> None:
    sid = site.open(site.local_id)
    answer = site.call("POST", f"/sessions/{sid}/approve", "sam")
    assert answer.status_code == 409, answer.text
    assert "local" in answer.json()["detail"]
    [refused] = site.audit("session.approve.refused", sid)
    assert refused["actor"] == "sam"
    assert refused["details"]["refused"] == "local_consent"
    assert site.session(sid)["state"] == "awaiting_consent"
    assert site.session(sid)["approved_by"] is None
    assert "only a local approval" in site.local_agent.log_path.read_text()
    # The device's own approval still counts, and is recorded as local.
    local = site.local_agent_cli("approve", sid)
    assert local.returncode == 0, local.stderr
    active = site.wait_state(sid, "active")
    assert active["approved_via"] == "local"
    assert active["approved_by"] == f"on the device {site.local_id}"
    wait_until(lambda: site.audit("session.approve", sid), timeout=10)
    site.call("DELETE", f"/sessions/{sid}", "olga")


def test_an_operator_may_not_approve_and_a_stranger_gets_404(site: Site) -> None:
    sid = site.open(site.required_id)
    for user in ("olga", "otto"):  # its own operator, another operator
        answer = site.call("POST", f"/sessions/{sid}/approve", user)
        assert answer.status_code == 403, answer.text
    missing = site.call("POST", f"/sessions/ses-{new_id()}/approve", "sam")
    assert missing.status_code == 404, missing.text
    unauthenticated = httpx.post(f"{site.server.url}/api/v1/sessions/{sid}/approve", timeout=10)
    assert unauthenticated.status_code == 401
    # A disabled site user is refused too.
    customer = site.server.api("GET", f"/devices/{site.required_id}")["customer_number"]
    done = site.server.cli(
        "user", "add", "sid", "--role", "site", "--customers", customer,
        stdin=f"{OPERATOR_PASSWORD}\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = operator_token(site.server, "sid")
    assert site.server.cli("user", "disable", "sid").returncode == 0
    disabled = httpx.post(
        f"{site.server.url}/api/v1/sessions/{sid}/approve",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert disabled.status_code == 401, disabled.text
    assert site.session(sid)["state"] == "awaiting_consent"
    assert site.audit("session.approve", sid) == []
    site.call("DELETE", f"/sessions/{sid}", "olga")


def _server_link(site: Site) -> mqtt.Client:
    """An MQTT client with the server's own certificate: what a forger would need, short of
    the command key."""
    pki = site.server.directory / "state" / "pki"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
        client_id=f"forger-{time.monotonic_ns()}",
        protocol=mqtt.MQTTv311,
    )
    client.tls_set(
        ca_certs=str(pki / "ca.pem"),
        certfile=str(pki / "server-client.pem"),
        keyfile=str(pki / "server-client.key"),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    return client


def test_a_forged_or_unsigned_decision_is_refused_by_the_agent(site: Site) -> None:
    sid = site.open(site.required_id)
    refusals: list[dict[str, Any]] = []
    client = _server_link(site)

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        event = json.loads(message.payload)
        if event.get("type") == "command.refused":
            refusals.append(event["body"])

    client.on_message = on_message
    client.connect("127.0.0.1", site.broker.port, keepalive=30)
    client.loop_start()
    try:
        client.subscribe(topics.events(site.required_id), qos=1)
        time.sleep(0.5)
        now = utcnow()

        def command() -> Command:
            return Command(
                id=new_id(), type="session.decide", issued_at=now,
                expires_at=now + timedelta(seconds=60),
                device_id=site.required_id,
                body={"session_id": sid, "verdict": "approve", "approver": "mallory",
                      "via": "web"},
            )  # fmt: skip

        forged = sign_command(generate_command_key(), command())
        unsigned = command()
        for message in (forged, unsigned):
            client.publish(topics.cmd(site.required_id), dump_message(message), qos=1)
        wait_until(lambda: len(refusals) >= 2, timeout=15)
    finally:
        client.loop_stop()
        client.disconnect()
    assert {r["reason"] for r in refusals} <= {"bad_signature", "unsigned", "expired"}
    assert {r["id"] for r in refusals} == {forged.id, unsigned.id}
    time.sleep(1)
    session = site.session(sid)
    assert session["state"] == "awaiting_consent"
    assert session["approved_by"] is None
    site.call("DELETE", f"/sessions/{sid}", "olga")


def test_an_approval_link_approves_once(site: Site) -> None:
    sid = site.open(site.required_id, reason="replace the drum unit")
    made = site.call("POST", f"/sessions/{sid}/approval-link", "olga")
    assert made.status_code == 201, made.text
    url = made.json()["url"]
    assert url.startswith(f"{site.server.url}/approve/")
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200
    assert "replace the drum unit" in page.text
    assert site.required_id in page.text
    assert "olga" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    approved = httpx.post(url, data={"decision": "approve", "name": "Nurse Kim"}, timeout=60)
    assert approved.status_code == 200, approved.text
    assert "Approved" in approved.text
    active = site.wait_state(sid, "active")
    assert active["approved_via"] == "link"
    assert active["approved_by"] == "Nurse Kim (link from olga)"
    [entry] = site.audit("session.approve", sid)
    assert entry["details"]["link_created_by"] == "olga"
    # Used: a second use changes nothing and says so.
    again = httpx.post(url, data={"decision": "deny"}, timeout=30)
    assert again.status_code == 410
    assert "used already" in again.text
    assert site.session(sid)["state"] == "active"
    assert httpx.get(url, timeout=10).status_code == 410
    # The token is not in the access log.
    token = url.rsplit("/", 1)[1]
    assert token not in site.server.log_path.read_text()
    site.call("DELETE", f"/sessions/{sid}", "olga")


def test_an_expired_or_unknown_link_changes_nothing(site: Site) -> None:
    sid = site.open(site.required_id)
    made = site.call("POST", f"/sessions/{sid}/approval-link", "olga", json={"ttl_s": 1})
    assert made.status_code == 201, made.text
    url = made.json()["url"]
    wait_until(lambda: httpx.get(url, timeout=10).status_code == 410, timeout=10)
    expired = httpx.post(url, data={"decision": "approve"}, timeout=30)
    assert expired.status_code == 410
    assert "expired" in expired.text
    unknown = httpx.post(
        f"{site.server.url}/approve/{'x' * 43}", data={"decision": "approve"}, timeout=30
    )
    assert unknown.status_code == 404
    assert "not valid" in unknown.text
    assert site.session(sid)["state"] == "awaiting_consent"
    assert len(site.audit("session.approval_link.refused", sid)) == 1
    # Another operator may not make a link for olga's session; a site user may not at all.
    assert site.call("POST", f"/sessions/{sid}/approval-link", "otto").status_code == 403
    assert site.call("POST", f"/sessions/{sid}/approval-link", "sam").status_code == 403
    site.call("DELETE", f"/sessions/{sid}", "olga")


def test_a_window_that_pre_approves_sessions_lets_them_in_without_asking(site: Site) -> None:
    from datetime import UTC, datetime, timedelta

    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    window = site.server.api(
        "POST",
        "/maintenance-windows",
        json={"device_id": site.required_id, "start": start, "duration_minutes": 30,
              "reason": "firmware roll-out", "preapprove_sessions": True},
    )  # fmt: skip
    try:
        answer = site.call(
            "POST", f"/devices/{site.required_id}/sessions", "olga", json={"reason": "update"}
        )
        assert answer.status_code == 201, answer.text
        sid = str(answer.json()["id"])
        active = site.wait_state(sid, "active", "closed")
        assert active["state"] == "active", active
        assert active["approved_by"] == f"maintenance-window:{window['id']}"
        [entry] = site.audit("session.approve", sid)
        assert entry["details"]["window"] == window["id"]
        assert site.call("DELETE", f"/sessions/{sid}", "olga").json()["state"] == "closed"
    finally:
        removed = httpx.delete(
            f"{site.server.url}/api/v1/maintenance-windows/{window['id']}",
            headers={"Authorization": f"Bearer {site.server.token}"},
            timeout=30,
        )
        assert removed.status_code == 204, removed.text
