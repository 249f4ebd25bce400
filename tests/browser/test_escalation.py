"""Issue 14 in a real browser: the call center escalates an incident from the incidents
page (tier, specialist, handover note) and the specialist finds it under "My incidents"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import create_engine
from sqlmodel import Session

from server import crud
from tests.fixtures.console import Console, axe_violations, login, shoot

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DEVICE = "demo-0002"
SPECIALIST = "tess"
PASSWORD = "tess-password-1"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def test_an_operator_escalates_an_incident_from_the_incidents_page(
    console: Console, page: Any, artifacts: Path, axe_source: str
) -> None:
    engine = create_engine(f"sqlite:///{console.directory / 'fieldlink.db'}")
    with Session(engine) as db:
        crud.create_user(db, username=SPECIALIST, role="operator", password=PASSWORD)
    engine.dispose()
    token = httpx.post(
        f"{console.url}/api/v1/auth/token",
        data={"username": "operator", "password": console.passwords["operator"]},
        timeout=10,
    ).json()["access_token"]
    api = httpx.Client(
        base_url=f"{console.url}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    created = api.post(
        "/incidents",
        json={"device_id": DEVICE, "opened_at": "2026-11-25T09:00:00Z", "symptom": "paper jam"},
    )
    assert created.status_code == 201, created.text
    incident_id = created.json()["id"]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        login(page, console, "operator")
        page.goto(f"{console.url}/incidents?state=open&device_id={DEVICE}")
        page.get_by_role("button", name=f"Escalate incident {incident_id}").click()
        dialog = page.locator("#escalate-incident")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_label("Tier", exact=True)).to_have_value("2")
        # nobody by that name: the API's refusal is shown in the form, nothing changes
        dialog.get_by_label("Assign to").fill("nobody-here")
        dialog.get_by_label("Handover note").fill("reseated the tray, jam comes back")
        dialog.get_by_role("button", name="Escalate").click()
        expect(dialog.locator("p.error")).to_be_visible()
        assert api.get(f"/incidents/{incident_id}").json()["assignee"] is None
        shoot(page, artifacts, "incident-escalate", full_page=False)
        assert axe_violations(page, axe_source) == []

        dialog.get_by_label("Assign to").fill(SPECIALIST)
        dialog.get_by_role("button", name="Escalate").click()
        page.wait_for_load_state("load")
        line = page.locator(f'[data-escalation="{incident_id}"]')
        expect(line).to_contain_text(f"Tier 2 · {SPECIALIST}: reseated the tray")
        stored = api.get(f"/incidents/{incident_id}").json()
        assert (stored["tier"], stored["assignee"]) == (2, SPECIALIST)
        assert stored["handover_note"] == "reseated the tray, jam comes back"

        page.get_by_role("button", name="Log out").click()
        page.goto(console.url + "/login")
        page.get_by_label("User name").fill(SPECIALIST)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r".*/desk$"))
        expect(page.locator("section.my-incidents")).to_contain_text("reseated the tray")
    finally:
        api.post(
            f"/incidents/{incident_id}/close",
            json={"resolution": "remote", "restored_at": "2026-11-25T10:00:00Z",
                  "closed_at": "2026-11-25T10:00:00Z"},
        )  # fmt: skip
        api.close()
    assert errors == [], errors
