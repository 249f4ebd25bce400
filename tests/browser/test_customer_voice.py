"""The customer's voice end to end in a real browser (issue 16): close an incident, open its
survey link as the customer on a phone in two languages, answer as a detractor, find the
follow-up on the desk and on the call pop-up, close it, and see NPS and CSAT move."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.fixtures.console import Console, axe_violations, login, shoot

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at desktop width."""
    opened = browser.new_context(viewport={"width": 1280, "height": 900})
    opened.set_default_timeout(15_000)
    yield opened
    opened.close()


def _voice_tiles(page: Any, period: str) -> dict[str, str]:
    page.goto(f"{period}#voice")
    return {
        name: page.locator(f'[data-voice="{name}"]').inner_text()
        for name in ("nps", "csat_on_site", "response_rate")
    }


def test_a_detractor_is_called_back_and_moves_the_nps(
    browser: Any, context: Any, console: Console, artifacts: Path, axe_source: str
) -> None:
    opened = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    with console.api("operator") as api:
        created = api.post(
            "/api/v1/incidents",
            json={
                "device_id": "demo-0001",
                "opened_at": opened,
                "answered_at": opened,
                "channel": "phone",
                "symptom": "prints streaked",
            },
        )
        assert created.status_code == 201, created.text
        incident = created.json()["id"]
    today = datetime.now(UTC).date().isoformat()
    period = f"{console.url}/dashboard?from={today}&through={today}"

    page = context.new_page()
    login(page, console, "manager")
    before = _voice_tiles(page, period)

    # The desk closes the case as a dispatch: a survey link comes with it.
    page.goto(f"{console.url}/incidents?state=open&device_id=demo-0001")
    page.get_by_role("button", name=f"Close incident {incident}").click()
    page.locator("#c-resolution").select_option("dispatch")
    with page.expect_navigation():  # the page reloads once the incident is closed
        page.get_by_role("button", name="Close incident", exact=True).click()
    page.goto(f"{console.url}/incidents?state=closed&device_id=demo-0001")
    link = page.locator(f'[data-survey-incident="{incident}"]')
    expect(link).to_be_visible()
    survey_url = link.get_attribute("href")
    assert survey_url
    assert re.search(r"/survey/[A-Za-z0-9_-]{43}$", survey_url)

    # The customer, on a phone, without logging in: Japanese first, then German.
    # bypass_csp: axe-core is injected as a script, which the page's own CSP refuses.
    phone = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, bypass_csp=True
    )
    try:
        customer = phone.new_page()
        requests: list[str] = []
        customer.on("request", lambda r: requests.append(r.url))
        customer.goto(survey_url + "?lang=ja")
        expect(customer.locator("h1")).to_have_text("サービスはいかがでしたか？")  # noqa: RUF001
        on_site = "技術者の訪問対応にどの程度満足されましたか？"  # noqa: RUF001
        expect(customer.get_by_text(on_site)).to_be_visible()
        assert customer.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(customer, artifacts, "survey-phone-ja")
        customer.get_by_role("link", name="Deutsch").click()
        expect(customer.locator("h1")).to_have_text("Wie waren wir?")
        assert axe_violations(customer, axe_source) == []
        customer.locator('label:has(input[name="recommend"][value="2"])').click()
        customer.locator('label:has(input[name="sat_on_site"][value="1"])').click()
        customer.locator('label:has(input[name="sat_call_center"][value="3"])').click()
        customer.get_by_label("Möchten Sie uns noch etwas mitteilen? (optional)").fill(
            "Der Techniker kam zwei Tage zu spät."
        )
        customer.get_by_role("button", name="Absenden").click()
        expect(customer.locator("#outcome")).to_contain_text("Vielen Dank!")
        expect(customer.locator("#outcome")).to_contain_text("ruft Sie zurück")
        shoot(customer, artifacts, "survey-phone-de-thanks")
        assert all(url.startswith(console.url) for url in requests), requests
        # The link answers once.
        customer.goto(survey_url)
        expect(customer.locator("#outcome")).to_contain_text("answered already")
    finally:
        phone.close()

    # The desk: the follow-up waits in the call-back queue...
    page.goto(console.url + "/desk")
    item = page.locator("li.callback", has_text=f"#{incident} demo-0001")
    expect(item).to_contain_text("recommend 2; on_site 1")
    expect(item).to_contain_text("Der Techniker kam zwei Tage zu spät.")
    shoot(page, artifacts, "desk-call-back", full_page=False)
    # ...and on the pop-up when that customer calls.
    page.goto(console.url + "/desk/call?" + urlencode({"ani": "+44 20 7946 0001"}))
    page.wait_for_url(re.compile(r".*/devices/demo-0001\?call=\d+$"))
    card = page.locator("#customer-voice")
    expect(card).to_contain_text("recommend 2/10")
    expect(card).to_contain_text("Open follow-up")
    shoot(page, artifacts, "screen-pop-low-score", full_page=False)

    # Called back: the follow-up is closed with what was done.
    page.goto(console.url + "/desk")
    item = page.locator("li.callback", has_text=f"#{incident} demo-0001")
    item.get_by_label("What was done").fill("Called back, apologised, engineer revisit booked")
    item.get_by_role("button", name="Close follow-up").click()
    expect(item).to_have_count(0)
    with console.api("operator") as api:
        closed = api.get("/api/v1/followups", params={"state": "closed"}).json()["items"]
    ours = [f for f in closed if f["incident_id"] == incident]
    assert ours
    assert ours[0]["note"] == "Called back, apologised, engineer revisit booked"

    # The dashboard's figures of today moved.
    after = _voice_tiles(page, period)
    assert after["nps"] != before["nps"] or before["nps"] == "-100"
    assert after["csat_on_site"] != before["csat_on_site"] or before["csat_on_site"] == "1.00 / 5"
    assert after["nps"] != "—"
    shoot(page, artifacts, "dashboard-voice")
