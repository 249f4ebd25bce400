"""Issue 14 in a real browser: the specialist an incident was escalated to finds it under
"My incidents" and watches the operator's live terminal, read only, until the operator lets
them type (and takes the keyboard back)."""

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

DEVICE = "demo-0001"
SPECIALIST = "sara"
PASSWORD = "sara-password-1"


@pytest.fixture
def contexts(browser: Any) -> Iterator[list[Any]]:
    made: list[Any] = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        made.append(context)
    yield made
    for context in made:
        context.close()


def _api(console: Console, user: str, password: str) -> httpx.Client:
    answer = httpx.post(
        f"{console.url}/api/v1/auth/token",
        data={"username": user, "password": password},
        timeout=10,
    )
    answer.raise_for_status()
    token = answer.json()["access_token"]
    return httpx.Client(
        base_url=f"{console.url}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_the_specialist_watches_the_operators_terminal_read_only(
    console: Console, contexts: list[Any], artifacts: Path, axe_source: str
) -> None:
    engine = create_engine(f"sqlite:///{console.directory / 'fieldlink.db'}")
    with Session(engine) as db:
        crud.create_user(db, username=SPECIALIST, role="operator", password=PASSWORD)
    engine.dispose()
    operator_api = _api(console, "operator", console.passwords["operator"])
    incident = operator_api.post(
        "/incidents",
        json={"device_id": DEVICE, "opened_at": "2026-11-23T10:00:00Z", "symptom": "fuser"},
    )
    assert incident.status_code == 201, incident.text
    incident_id = incident.json()["id"]
    escalated = operator_api.post(
        f"/incidents/{incident_id}/escalate",
        json={"tier": 2, "assignee": SPECIALIST, "note": "fuser noise after reset"},
    )
    assert escalated.status_code == 200, escalated.text
    opened = operator_api.post(
        f"/devices/{DEVICE}/sessions", json={"reason": "fuser noise", "incident_id": incident_id}
    )
    assert opened.status_code == 201, opened.text
    sid = opened.json()["id"]
    owner, watcher = (context.new_page() for context in contexts)
    errors: list[str] = []
    for page in (owner, watcher):
        page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        login(owner, console, "operator")
        owner.goto(f"{console.url}/sessions/{sid}")
        expect(owner.locator("#terminal-status")).to_contain_text("Connected", timeout=30_000)
        expect(owner.locator("#terminal .xterm-rows")).to_contain_text("#", timeout=10_000)

        watcher.goto(console.url + "/login")
        watcher.get_by_label("User name").fill(SPECIALIST)
        watcher.get_by_label("Password").fill(PASSWORD)
        watcher.get_by_role("button", name="Log in").click()
        watcher.wait_for_url(re.compile(r".*/desk$"))
        mine = watcher.locator("section.my-incidents")
        expect(mine).to_contain_text("fuser noise after reset")
        mine.get_by_role("link", name=f"Watch session {sid} (read only)").click()
        watcher.wait_for_url(re.compile(rf".*/sessions/{sid}/observe$"))
        expect(watcher.locator("#terminal-status")).to_contain_text("Watching operator's terminal")
        expect(owner.locator("#observers")).to_have_text(f"{SPECIALIST} is watching (read only).")

        owner.locator("#terminal").click()
        owner.keyboard.type("echo watched-$((6*7))\n")
        expect(watcher.locator("#terminal .xterm-rows")).to_contain_text("watched-42")
        watcher.locator("#terminal").click()
        watcher.keyboard.type("echo typed-by-the-observer\n")
        owner.keyboard.type("echo after-$((1+1))\n")
        expect(watcher.locator("#terminal .xterm-rows")).to_contain_text("after-2")
        expect(owner.locator("#terminal .xterm-rows")).not_to_contain_text("typed-by-the")
        assert watcher.locator("#close-session").count() == 0

        # the owner hands sara the keyboard, sees her type, and takes it back
        owner.get_by_role("button", name=f"Let {SPECIALIST} type").click()
        expect(watcher.locator("#terminal-status")).to_contain_text("lets you type")
        watcher.locator("#terminal").click()
        watcher.keyboard.type("echo shared-$((2*3))\n")
        expect(owner.locator("#terminal .xterm-rows")).to_contain_text("shared-6")
        expect(owner.locator("#observers")).to_have_text(f"{SPECIALIST} is typing.")
        owner.get_by_role("button", name=f"Take the keyboard back from {SPECIALIST}").click()
        expect(watcher.locator("#terminal-status")).to_contain_text("read only")
        watcher.locator("#terminal").click()
        watcher.keyboard.type("echo taken-$((4+4))\n")
        owner.locator("#terminal").click()
        owner.keyboard.type("echo owner-$((5+5))\n")
        expect(watcher.locator("#terminal .xterm-rows")).to_contain_text("owner-10")
        expect(owner.locator("#terminal .xterm-rows")).not_to_contain_text("taken-8")
        shoot(watcher, artifacts, "session-observer", full_page=False)
        assert axe_violations(watcher, axe_source) == []

        watcher.goto(f"{console.url}/desk")
        expect(owner.locator("#observers")).to_have_text(f"{SPECIALIST} stopped watching.")
        # piet is nobody's specialist: the page is forbidden
        assert httpx.get(f"{console.url}/sessions/{sid}/observe", timeout=10).status_code != 200
    finally:
        operator_api.delete(f"/sessions/{sid}")
        operator_api.close()
    assert errors == [], errors
