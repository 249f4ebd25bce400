"""A site's approval in a real browser (issue 15): a site user sees a session awaiting consent
on the device page, approves it, and watches it go active; an admin denies another from the
session page. The center is the production one (TLS Mosquitto, a real agent whose policy says
``consent = "required"``), not the demo (its simulated devices ask no consent)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from playwright.sync_api import expect

from tests.fixtures.center import (
    OPERATOR_PASSWORD,
    add_operator,
    enrolled_agent,
    operator_token,
    secure_center,
)
from tests.fixtures.console import axe_violations, shoot
from tests.fixtures.processes import ServerProcess, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    tmp_path = tmp_path_factory.mktemp("approval-console")
    with (
        secure_center(tmp_path, f"sqlite:///{tmp_path / 'fieldlink.db'}") as (server, _broker),
        enrolled_agent(
            server, tmp_path, "AC-1", customer="St. Mary",
            policy={"consent": "required", "approval_timeout_s": 120},
        ) as (device_id, _agent, _),
    ):  # fmt: skip
        add_operator(server, "olga")
        customer = server.api("GET", f"/devices/{device_id}")["customer_number"]
        add_operator(server, "sam", role="site", customers=customer)
        yield server, device_id


def open_session(server: ServerProcess, device_id: str, reason: str) -> str:
    token = operator_token(server, "olga")
    answer = httpx.post(
        f"{server.url}/api/v1/devices/{device_id}/sessions",
        headers={"Authorization": f"Bearer {token}"},
        json={"reason": reason},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    session_id = str(answer.json()["id"])

    def state() -> str:
        return str(server.api("GET", f"/sessions/{session_id}")["state"])

    wait_until(lambda: state() == "awaiting_consent", timeout=30)
    return session_id


def log_in(browser: Any, server: ServerProcess, user: str, password: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto(server.url + "/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/(desk|site)$"))  # a site user lands on /site
    return page


def test_a_site_user_approves_on_the_device_page_and_sees_the_session_go_active(
    browser: Any,
    site: tuple[ServerProcess, str],
    artifacts: Path,
    axe_source: str,
) -> None:
    server, device_id = site
    session_id = open_session(server, device_id, "fuser error SC-541, customer waiting")
    page = log_in(browser, server, "sam", OPERATOR_PASSWORD)
    try:
        page.goto(f"{server.url}/devices/{device_id}")
        row = page.locator(f'tr[data-session-row="{session_id}"]')
        expect(row).to_contain_text("awaiting consent")
        expect(row).to_contain_text("fuser error SC-541")
        form = row.get_by_role("form", name=f"Approve or deny session {session_id}")
        expect(form.get_by_role("button", name="Approve")).to_be_visible()
        assert axe_violations(page, axe_source) == []
        shoot(page, artifacts, "approval-device-page")
        form.get_by_role("button", name="Approve").click()
        expect(row.locator(f'[data-state-of="{session_id}"]')).to_contain_text(
            "active", timeout=30_000
        )
        expect(row).to_contain_text("approved by sam (web)")
        expect(form).to_have_count(0)
        shoot(page, artifacts, "approval-device-page-active")
    finally:
        page.context.close()
    detail = server.api("GET", f"/sessions/{session_id}")
    assert (detail["state"], detail["approved_by"]) == ("active", "sam")
    server.api("DELETE", f"/sessions/{session_id}")


def test_an_admin_denies_on_the_session_page_with_a_reason(
    browser: Any, site: tuple[ServerProcess, str]
) -> None:
    server, device_id = site
    session_id = open_session(server, device_id, "firmware update")
    page = log_in(browser, server, "admin", "admin-password")
    try:
        page.goto(f"{server.url}/sessions/{session_id}")
        form = page.get_by_role("form", name=f"Approve or deny session {session_id}")
        form.get_by_label("Reason (if you deny)").fill("not during ward rounds")
        form.get_by_role("button", name="Deny").click()
        expect(page.locator("#state")).to_contain_text("closed", timeout=30_000)
        expect(page.locator("#state-detail")).to_contain_text("not during ward rounds")
    finally:
        page.context.close()
    detail = server.api("GET", f"/sessions/{session_id}")
    assert detail["close_reason"] == "site_denied"
