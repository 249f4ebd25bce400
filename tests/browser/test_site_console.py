"""A site user's console in a real browser (issue 15): the hospital's own IT, bound to its
customer, sees only its devices and the sessions on them (live state, reason, operator),
ends a live session an operator opened, and finds nothing of another customer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.fixtures.cli import fieldlink
from tests.fixtures.console import Console, axe_violations, shoot
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SITE_USER = "stmary-it"
SITE_PASSWORD = "site-password-1"


def _api(console: Console, user: str, password: str | None = None) -> Any:
    import httpx2 as httpx

    token = httpx.post(
        f"{console.url}/api/v1/auth/token",
        data={"username": user, "password": password or console.passwords[user]},
        timeout=10,
    ).json()["access_token"]
    return httpx.Client(
        base_url=console.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_a_site_user_sees_their_devices_and_ends_a_session_on_them(
    page: Any, console: Console, artifacts: Path, axe_source: str
) -> None:
    with _api(console, "admin") as admin:
        number = admin.get("/api/v1/devices/demo-0001").json()["customer_number"]
    added = fieldlink(
        "user", "add", SITE_USER, "--role", "site", "--customers", number,
        "--config", str(console.directory / "server.toml"), stdin=SITE_PASSWORD + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    with _api(console, "operator") as operator:
        opened = operator.post(
            "/api/v1/devices/demo-0001/sessions", json={"reason": "toner error, caller on the line"}
        )
        assert opened.status_code == 201, opened.text
        session_id = opened.json()["id"]
        other = operator.post("/api/v1/devices/demo-0002/sessions", json={"reason": "elsewhere"})
        assert other.status_code == 201, other.text

        def active() -> bool:
            return operator.get(f"/api/v1/sessions/{session_id}").json()["state"] == "active"

        wait_until(active, timeout=30, interval=0.25)

    page.goto(console.url + "/login")
    page.get_by_label("User name").fill(SITE_USER)
    page.get_by_label("Password").fill(SITE_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/site$"))
    nav = page.get_by_role("navigation")
    expect(nav.get_by_role("link", name="Your devices")).to_be_visible()
    expect(nav.get_by_role("link", name="Desk")).to_have_count(0)
    expect(nav.get_by_role("link", name="Incidents")).to_have_count(0)
    devices = page.locator("#site-devices")
    expect(devices.get_by_role("link", name="demo-0001")).to_be_visible()
    expect(devices.locator("tbody tr")).to_have_count(1)
    sessions = page.locator("#site-sessions")
    row = sessions.locator("tr", has_text=session_id)
    expect(row).to_contain_text("toner error, caller on the line")
    expect(row).to_contain_text("operator")
    expect(row).to_contain_text("active")
    expect(page.locator("main")).not_to_contain_text("demo-0002")
    expect(page.locator("main")).not_to_contain_text("demo-0000")
    shoot(page, artifacts, "site-console", full_page=False)
    assert axe_violations(page, axe_source) == []

    # Their device's page: no "Open session", its sessions listed.
    page.get_by_role("link", name="demo-0001").first.click()
    page.wait_for_url(re.compile(r".*/devices/demo-0001$"))
    expect(page.get_by_role("button", name="Open session")).to_have_count(0)
    expect(page.locator("main")).to_contain_text(session_id)

    # The live session: they end it, and its page says so.
    page.goto(f"{console.url}/sessions/{session_id}")
    expect(page.locator("#state")).to_contain_text("active")
    expect(page.locator(".terminal-card")).to_be_hidden()
    page.get_by_role("button", name="Close session").click()
    expect(page.locator("#state")).to_contain_text("closed")
    expect(page.locator("#recording-card")).to_be_visible()

    with _api(console, SITE_USER, SITE_PASSWORD) as site:
        closed = site.get(f"/api/v1/sessions/{session_id}").json()
        assert (closed["state"], closed["close_reason"]) == ("closed", "operator")
        listed = site.get("/api/v1/sessions").json()
        assert {s["device_id"] for s in listed["items"]} == {"demo-0001"}
    with _api(console, "admin") as admin:
        asked = admin.get("/api/v1/audit", params={"action": "session.close.request"})
        ended = asked.json()["items"]
        assert any(e["actor"] == SITE_USER for e in ended), ended

    # Another customer's device and session do not exist for them.
    for path in ("/devices/demo-0002", "/devices/demo-0000"):
        answer = page.goto(console.url + path)
        assert answer is not None
        assert answer.status == 404, path
    answer = page.goto(console.url + "/incidents")
    assert answer is not None
    assert answer.status == 403
