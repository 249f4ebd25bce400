"""The console readable under time pressure (issue 17, "The console"): the terminal shows every
glyph, device states have their own badges, health reads in units, history charts have points
from the first minutes, the dashboard marks the partial month, times are the viewer's."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.fixtures.console import Console, browser_page, login, shoot

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at desktop width, in a time zone that is not UTC."""
    with browser_page(browser, timezone_id="Asia/Tokyo", locale="en-GB") as opened:
        yield opened


#: Counts the pixels of a PNG (base64) that are far brighter than the terminal's background.
_BRIGHT_PIXELS = """async (png) => {
    const image = new Image();
    image.src = "data:image/png;base64," + png;
    await image.decode();
    const canvas = document.createElement("canvas");
    canvas.width = image.width;
    canvas.height = image.height;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const data = context.getImageData(0, 0, image.width, image.height).data;
    let bright = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i] + data[i + 1] + data[i + 2] > 3 * 110) bright += 1;
    }
    return bright;
}"""

#: The on-screen box of each character of the terminal row that reads exactly ``text``.
_GLYPH_BOXES = """(text) => {
    const row = Array.from(document.querySelectorAll("#terminal .xterm-rows > div"))
        .find((r) => r.textContent.trim() === text);
    if (!row) return null;
    const boxes = [];
    const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
            if (node.data[i] === " " || node.data[i] === "\\u00a0") continue;
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const r = range.getBoundingClientRect();
            boxes.push({ch: node.data[i], x: r.left, w: r.width});
        }
    }
    const line = row.getBoundingClientRect();
    return {boxes, y: line.top, h: line.height};
}"""


def open_session(page: Any, console: Console, device: str, reason: str) -> None:
    """From the device page, a session with a live terminal showing the shell's prompt."""
    page.goto(f"{console.url}/devices/{device}")
    page.get_by_role("button", name="Open session").click()
    page.get_by_label("Reason (recorded and shown to the site)").fill(reason)
    page.locator("#session-form").get_by_role("button", name="Open session").click()
    page.wait_for_url(re.compile(r".*/sessions/ses-\w+$"))
    expect(page.locator("#terminal-status")).to_contain_text("Connected", timeout=30_000)
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("#", timeout=10_000)


def test_the_terminal_shows_underscores(page: Any, console: Console, artifacts: Path) -> None:
    login(page, console, "operator")
    open_session(page, console, "demo-0002", "check the architecture")
    page.locator("#terminal").click()
    page.keyboard.type("echo x86_64\n")
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('#terminal .xterm-rows > div'))
                .some(row => row.textContent.trim() === 'x86_64')"""
    )
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, artifacts, "session-underscore", full_page=False)
    line = page.evaluate(_GLYPH_BOXES, "x86_64")
    assert line is not None
    assert [b["ch"] for b in line["boxes"]] == list("x86_64")
    lit = {}
    for index, box in enumerate(line["boxes"]):
        png = page.screenshot(
            clip={"x": box["x"], "y": line["y"], "width": box["w"], "height": line["h"]}
        )
        lit[f"{index}:{box['ch']}"] = page.evaluate(_BRIGHT_PIXELS, base64.b64encode(png).decode())
    # Every glyph leaves ink in its cell, the underscore included (it sits lowest of all).
    assert all(count > 0 for count in lit.values()), lit
    page.get_by_role("button", name="Close session").click()
    expect(page.locator("#state")).to_have_text("closed")


def test_health_reads_in_units_with_the_profile_first(page: Any, console: Console) -> None:
    login(page, console, "operator")
    page.goto(console.url + "/devices/demo-0000")  # the demo's printer
    rows = page.locator("#metrics tr")
    expect(rows.first).to_have_attribute("data-metric", re.compile(r"^mfp\."))
    toner = page.locator('#metrics tr[data-metric="mfp.toner_black_percent"]')
    expect(toner).to_have_text(re.compile(r"^\s*Toner black\s+\d+(\.\d)? %\s*$"))
    expect(toner.locator("td").first).to_have_attribute("title", "mfp.toner_black_percent")
    expect(toner.locator(".bar > span")).to_have_count(1)
    uptime = page.locator('#metrics tr[data-metric="uptime_s"]')
    expect(uptime).to_have_text(re.compile(r"Uptime\s+(\d+ d \d+ h|\d+ h \d+ min|\d+ min)"))
    expect(page.locator('#charts figcaption[title="mfp.toner_black_percent"]')).to_have_text(
        "Toner black"
    )
    # The live refresh (every 5 s) keeps the words: wait for one round, then look again.
    with page.expect_response(re.compile(r".*/devices/demo-0000/health$")):
        pass
    expect(rows.first).to_have_attribute("data-metric", re.compile(r"^mfp\."))
    expect(toner).to_have_text(re.compile(r"^\s*Toner black\s+\d+(\.\d)? %\s*$"))

    page.goto(console.url + "/devices/demo-0001")  # the imaging console
    pacs = page.locator('#metrics tr[data-metric="imaging.dicom_peer_up:pacs"]')
    expect(pacs).to_have_text(re.compile(r"^\s*PACS reachable\s+(yes|no)\s*$"))
    expect(pacs.locator("td").first).to_have_attribute("title", "imaging.dicom_peer_up:pacs")


def test_history_has_points_in_a_devices_first_hour(page: Any, console: Console) -> None:
    login(page, console, "operator")
    page.goto(console.url + "/devices/demo-0001")  # reporting for a few seconds only
    chart = page.locator('#charts .chart[data-metric="cpu_percent"]')
    # 24 h: no finished hourly rollup yet, this hour's raw samples make the line.
    expect(chart).to_have_attribute("data-raw", re.compile(r"^[1-9]\d*$"))
    assert int(chart.get_attribute("data-points") or 0) >= 2
    expect(chart.locator("canvas")).to_have_count(1)
    expect(chart.locator(".empty")).to_be_hidden()
    # 1 h: every raw sample.
    page.get_by_role("button", name="1 h").click()
    expect(page.get_by_role("button", name="1 h")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function(
        """() => { const c = document.querySelector('#charts .chart[data-metric="cpu_percent"]');
                   return c.dataset.points === c.dataset.raw && Number(c.dataset.points) >= 2; }"""
    )
    # 7 days: the hourly rollups of the hours before, then this hour's samples.
    console.seed_history("demo-0001", days=8)
    page.get_by_role("button", name="7 days").click()
    page.wait_for_function(
        """() => { const c = document.querySelector('#charts .chart[data-metric="cpu_percent"]');
                   return Number(c.dataset.points) - Number(c.dataset.raw) >= 24 * 7 - 2; }"""
    )


def test_the_dashboard_marks_the_partial_month(page: Any, console: Console) -> None:
    from datetime import UTC, datetime

    login(page, console, "manager")
    page.goto(console.url + "/dashboard")
    this_month = datetime.now(UTC).strftime("%Y-%m")
    expect(page.locator("#partial-note")).to_contain_text(f"{this_month} is partial")
    charts = page.locator("#trend-charts .chart")
    expect(charts).to_have_count(5)
    for index in range(5):
        expect(charts.nth(index)).to_have_attribute("data-partial", "1")
    data = page.evaluate("JSON.parse(document.getElementById('trend-data').textContent)")
    assert data["months"][-1] == this_month
    assert 0 < data["coverage"][-1] < 1
    assert all(c == 1 for c in data["coverage"][:-1])


UTC_TEXT = re.compile(r"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d) UTC$")


def test_times_are_the_viewers_with_utc_on_hover(page: Any, console: Console) -> None:
    """The browser is in Tokyo (UTC+9, no daylight saving): pages show its times."""
    login(page, console, "operator")
    page.goto(console.url + "/devices/demo-0000")
    seen = page.locator("#last-seen")
    expect(seen).to_have_attribute("title", UTC_TEXT)
    utc = UTC_TEXT.match(seen.get_attribute("title") or "")
    assert utc is not None
    local = seen.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d (GMT\+9|JST)", local), local
    assert int(local[11:13]) == (int(utc.group(4)) + 9) % 24
    assert local[14:16] == utc.group(5)
    # The live refresh keeps it local.
    with page.expect_response(re.compile(r".*/api/v1/devices/demo-0000$")):
        pass
    expect(seen).to_have_text(re.compile(r"(GMT\+9|JST)$"))
    # Rows the desk's fleet list brings in are local too.
    page.goto(console.url + "/desk")
    cell = page.locator("#fleet tbody time").first
    expect(cell).to_have_text(re.compile(r"(GMT\+9|JST)$"))
    expect(cell).to_have_attribute("title", UTC_TEXT)


def test_desk_keyboard_shortcuts(page: Any, console: Console) -> None:
    login(page, console, "operator")
    shortcuts = page.locator("#shortcuts")
    shortcuts.get_by_text("Keyboard shortcuts").click()
    expect(shortcuts).to_contain_text("open the first match")
    expect(shortcuts).to_contain_text("open a session")
    search = page.get_by_label("Serial, device id, customer, site or the caller's phone number")
    page.locator("h1").click()  # focus on the page, not in a field
    page.keyboard.press("/")
    expect(search).to_be_focused()
    page.keyboard.type("demo-000")
    first = page.locator("#find-results a.match").first
    expect(first).to_be_visible()
    href = first.get_attribute("href") or ""
    page.keyboard.press("Control+Enter")
    page.wait_for_url(re.compile(re.escape(href) + "$"))

    page.goto(console.url + "/desk")
    search.fill("+44 20 7946 0001")  # demo-0001's contact, as a caller says it
    expect(page.locator("#find-results a.match")).to_have_count(1)
    page.keyboard.press("Shift+Enter")
    page.wait_for_url(re.compile(r".*/devices/demo-0001\?open=session$"))
    expect(page.locator("#session-dialog")).to_be_visible()
    expect(page.get_by_label("Reason (recorded and shown to the site)")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#session-dialog")).to_be_hidden()
    page.locator("h1").click()
    page.keyboard.press("s")
    expect(page.locator("#session-dialog")).to_be_visible()


#: Device states the pages and the scripts must word alike.
SEEN = "2026-01-01T00:00:00Z"
STATES: list[dict[str, Any]] = [
    {"online": True, "online_reason": "online", "status": "ok", "last_seen": SEEN},
    {"online": False, "online_reason": "revoked", "revoked_at": SEEN, "status": "ok",
     "last_seen": SEEN},
    {"online": False, "online_reason": "shutdown", "status": "warning", "last_seen": SEEN,
     "clock_skewed": True, "clock_offset_s": -400.0},
    {"online": False, "online_reason": None, "status": None, "last_seen": None},
]  # fmt: skip


def test_device_states_read_alike_in_the_scripts(page: Any, console: Console) -> None:
    from server.web.templating import device_badges

    login(page, console, "operator")
    for device in STATES:
        scripted = page.evaluate(
            """(d) => { const box = document.createElement("div");
                box.innerHTML = fl.deviceBadges(d);
                return Array.from(box.children).map(b => [b.className, b.textContent]); }""",
            device,
        )
        expected = [[f"badge {b['cls']}", b["text"]] for b in device_badges(device)]
        assert scripted == expected, device


def _revoke_in_registry(console: Console, device_id: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{console.directory / 'fieldlink.db'}")
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE device SET revoked_at = CURRENT_TIMESTAMP, online = 0,"
                " online_reason = 'revoked', status = 'ok' WHERE id = :id"
            ),
            {"id": device_id},
        )
    engine.dispose()


def test_a_revoked_device_shows_revoked_not_ok(page: Any, console: Console) -> None:
    """Last in the module: it revokes demo-0002."""
    login(page, console, "admin")
    page.goto(console.url + "/admin/devices")
    rows = page.get_by_role("region", name="Devices", exact=True).locator("tbody tr")
    before = rows.count()
    page.get_by_label("Serial").fill("UX-0017")
    page.get_by_label("Model").fill("Imagio MP 6055")
    page.get_by_label("Customer").fill("Badge Test Clinic")
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#token-result")).to_contain_text("fieldlink agent enroll")
    # The list shows the new device without a reload.
    expect(rows).to_have_count(before + 1)
    expect(page.locator("#device-list")).to_contain_text("Badge Test Clinic")
    expect(page.locator("#device-list")).to_contain_text("offline · never connected")

    # The demo's devices have no certificate to revoke (the API refuses): mark demo-0002 as
    # the revocation does (server/crud/enrollment.py), its last health report still "ok".
    _revoke_in_registry(console, "demo-0002")
    page.goto(console.url + "/devices/demo-0002")
    badges = page.locator("#device-badges")
    expect(badges.locator(".badge").first).to_have_text("revoked")
    expect(badges).not_to_contain_text("online")
    expect(badges.locator(".health-ok")).to_have_count(0)
    expect(badges.locator(".stale")).to_have_text("last: ok")
    # The live refresh (every 5 s) words it the same way.
    page.wait_for_timeout(5500)
    expect(badges.locator(".health-ok")).to_have_count(0)
    expect(badges.locator(".badge").first).to_have_text("revoked")
    page.goto(console.url + "/desk?q=demo-0002")
    expect(page.locator("#fleet")).to_contain_text("revoked")
