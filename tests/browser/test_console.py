"""What the console must show in a real browser (issue 6): an operator finds the caller's
device and works in a remote session, a manager reads the dashboard and exports it, an
operator cannot reach the admin pages; every page at 1280 and 768 px passes axe-core."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.fixtures.console import WIDTHS, Console, axe_violations, login, shoot

pytestmark = [pytest.mark.browser, pytest.mark.integration]

#: demo-0001's contact phone as `fieldlink demo` registers it, written as a caller would say it.
CALLER = "+44 20 7946 0001"


def test_operator_finds_the_caller_and_works_in_a_session(
    page: Any, console: Console, artifacts: Path
) -> None:
    login(page, console, "operator")
    shoot(page, artifacts, "desk")
    page.get_by_label("Serial, device id, customer, site or the caller's phone number").fill(CALLER)
    match = page.locator("#find-results a.match")
    expect(match).to_have_count(1)
    expect(match).to_contain_text("St. Mary Hospital")
    shoot(page, artifacts, "desk-who-is-calling", full_page=False)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/devices/demo-0001$"))
    expect(page.locator("#device-badges")).to_contain_text("online")
    shoot(page, artifacts, "device")

    page.get_by_role("button", name="Open session").click()
    page.get_by_label("Reason (recorded and shown to the site)").fill("caller: viewer frozen")
    page.locator("#session-form").get_by_role("button", name="Open session").click()
    page.wait_for_url(re.compile(r".*/sessions/ses-\w+$"))
    status = page.locator("#terminal-status")
    expect(status).to_contain_text("Connected", timeout=30_000)
    expect(page.locator(".steps li.current")).to_have_text("active")
    terminal = page.locator("#terminal .xterm-rows")
    expect(terminal).to_contain_text("#", timeout=10_000)  # the shell's prompt
    page.locator("#terminal").click()
    page.keyboard.type("echo hello\n")
    # A row of its own that is just "hello": the command's output, not its echo.
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('#terminal .xterm-rows > div'))
                .some(row => row.textContent.trim() === 'hello')"""
    )
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, artifacts, "session", full_page=False)
    page.get_by_role("button", name="Uptime and load").click()
    expect(page.locator("#diag-output")).to_contain_text("[exit status 0]", timeout=20_000)
    shoot(page, artifacts, "session-diagnostics")

    page.get_by_role("button", name="Close session").click()
    expect(page.locator("#state")).to_have_text("closed")
    expect(page.locator("#close-reason")).to_have_text("closed: operator")
    player = page.locator("#player .ap-player")
    expect(player).to_be_visible(timeout=15_000)
    player.click()  # play
    expect(page.locator("#player .ap-term")).to_contain_text("hello", timeout=15_000)
    shoot(page, artifacts, "session-recording")


def test_manager_reads_the_dashboard_and_exports_it(
    page: Any, console: Console, artifacts: Path
) -> None:
    login(page, console, "manager")
    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(re.compile(r".*/dashboard$"))
    closed = page.locator('[data-kpi="incidents_closed"]')
    assert int(closed.inner_text().replace(",", "")) > 100  # a year of demo incidents
    expect(page.locator('[data-kpi="self_resolution_rate"]')).to_contain_text("%")
    charts = page.locator("#trend-charts .chart")
    expect(charts).to_have_count(5)
    for index in range(5):
        chart = charts.nth(index)
        expect(chart.locator("canvas")).to_have_count(1)
        assert int(chart.get_attribute("data-points") or 0) >= 6, chart.inner_text()
    # Each figure's formula is a click away.
    tile = page.locator(".tile", has=page.locator('[data-kpi="downtime_saved_hours"]'))
    tile.get_by_text("Formula").click()
    expect(tile.locator("code")).to_contain_text("baseline_ttr")
    expect(page.get_by_role("region", name="By device type").last).to_contain_text("imaging")
    shoot(page, artifacts, "dashboard")
    shoot(page, artifacts, "dashboard-window", full_page=False)

    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    months = [r for r in rows if r["group_by"] == "month"]
    total = next(r for r in rows if r["group_by"] == "total")
    assert len(months) >= 12
    assert int(total["incidents_closed"]) == int(closed.inner_text().replace(",", ""))
    assert sum(int(r["incidents_closed"]) for r in months) == int(total["incidents_closed"])


def test_an_operator_cannot_open_the_admin_pages(
    page: Any, console: Console, artifacts: Path
) -> None:
    login(page, console, "operator")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Desk")).to_be_visible()
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    expect(nav.get_by_role("link", name="Dashboard")).to_have_count(0)
    for path in ("/admin", "/admin/devices", "/admin/audit", "/dashboard"):
        answer = page.goto(console.url + path)
        assert answer is not None
        assert answer.status == 403, path
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    shoot(page, artifacts, "forbidden")


def test_admin_pages_work(page: Any, console: Console, artifacts: Path) -> None:
    login(page, console, "admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    expect(page.get_by_role("region", name="Users", exact=True)).to_contain_text("operator")
    shoot(page, artifacts, "admin-users")
    page.get_by_role("link", name="Devices").click()
    page.get_by_label("Serial").fill("BRW-0042")
    page.get_by_label("Model").fill("Imagio MP 6055")
    page.get_by_label("Customer").fill("Browser Test Clinic")
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#token-result")).to_contain_text("fieldlink agent enroll --server")
    shoot(page, artifacts, "admin-devices")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.locator("#verify-result")).to_contain_text("intact", ignore_case=True)
    entries = page.get_by_role("region", name="Audit entries", exact=True)
    expect(entries).to_contain_text("device.register")
    shoot(page, artifacts, "admin-audit")


PAGES = {
    "operator": ["/login", "/desk", "/devices/demo-0000", "/incidents"],
    "manager": ["/dashboard"],
    "admin": ["/admin", "/admin/devices", "/admin/audit"],
}


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_and_passes_axe(
    browser: Any, console: Console, artifacts: Path, axe_source: str, width: int
) -> None:
    console.seed_history("demo-0000")
    problems: dict[str, Any] = {}
    for user, paths in PAGES.items():
        context = browser.new_context(viewport={"width": width, "height": 1000})
        page = context.new_page()
        if paths[0] == "/login":
            page.goto(console.url + "/login")
            shoot(page, artifacts, f"login-{width}")
            if found := axe_violations(page, axe_source):
                problems[f"/login @ {width}"] = {"axe": found}
            paths = paths[1:]
        login(page, console, user)
        for path in paths:
            page.goto(console.url + path)
            page.wait_for_load_state("networkidle")
            name = path.strip("/").replace("/", "-") or "home"
            shoot(page, artifacts, f"{name}-{width}")
            found = axe_violations(page, axe_source)
            overflow = page.evaluate("document.documentElement.scrollWidth") - width
            if found or overflow > 1:
                problems[f"{path} @ {width}"] = {"axe": found, "overflow_px": overflow}
        context.close()
    assert problems == {}
