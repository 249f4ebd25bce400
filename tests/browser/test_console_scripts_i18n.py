"""What the console's scripts write, in the reader's language (issue 17, "Languages"): the desk's
matches, the device page's badges and chart legends, a session's live states and the
dashboard's legends in Japanese from the browser's language, with no English left in them;
the same pages still in English."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.fixtures.console import Console

pytestmark = [pytest.mark.browser, pytest.mark.integration]

#: Latin words a Japanese text may hold: units, abbreviations, the product's name.
_LATIN_ALLOWED = frozenset({"ASA", "CSAT", "NPS", "fieldlink", "h", "s", "min"})


def english_in(text: str) -> list[str]:
    """The Latin-script words of ``text`` that are not a unit or a name."""
    return [w for w in re.findall(r"[A-Za-z]{2,}", text) if w not in _LATIN_ALLOWED]


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[str], Any]]:
    """A fresh browser context per call whose browser asks for ``locale`` (Accept-Language);
    a script error in any of them fails the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def opener(locale: str) -> Any:
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, locale=locale, timezone_id="Europe/Berlin"
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield opener
    for context in contexts:
        context.close()
    assert errors == [], errors


def log_in(page: Any, console: Console, user: str) -> None:
    """The log-in form, by its fields' ids (their labels are in the page's language)."""
    page.goto(console.url + "/login")
    page.locator("#username").fill(user)
    page.locator("#password").fill(console.passwords[user])
    page.locator("form button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/desk$"))


def texts(page: Any, selector: str) -> list[str]:
    return [" ".join(t.split()) for t in page.locator(selector).all_inner_texts()]


def test_the_desk_and_the_device_page_in_japanese(
    open_page: Callable[[str], Any], console: Console
) -> None:
    page = open_page("ja-JP")
    log_in(page, console, "operator")
    assert page.evaluate("document.documentElement.lang") == "ja"
    assert page.evaluate("fl.t('online')") == "オンライン"

    # The desk's matches, as desk.js writes them (count line and badges).
    page.locator("#q").fill("demo")
    expect(page.locator("#find-results a.match").first).to_be_visible()
    count = page.locator("#find-results p.small")
    expect(count).to_have_text(re.compile(r"^\d+ 件が該当"))
    assert english_in(count.inner_text()) == []
    badges = texts(page, "#find-results .badge")
    assert badges
    assert "オンライン" in badges
    assert [b for b in badges if english_in(b)] == []

    # The device page: badges rewritten by device.js every 5 s, chart legends by uPlot.
    page.goto(console.url + "/devices/demo-0001")
    page.wait_for_function(
        "() => document.querySelectorAll('#charts .chart[data-points]').length > 0"
        " && Array.from(document.querySelectorAll('#charts .chart')).some("
        "   c => Number(c.dataset.points) > 0)",
        timeout=30_000,
    )
    legend = texts(page, "#charts .u-legend th")
    assert {"日時", "平均", "最小", "最大"} <= set(legend), legend
    assert [t for t in legend if english_in(t)] == []
    page.wait_for_timeout(5_500)  # one refresh of the badges by the script
    head = " ".join(texts(page, "#device-badges .badge"))
    assert "オンライン" in head
    assert english_in(head) == []


#: Device states the pages and the scripts must word alike, in every language.
SEEN = "2026-01-01T00:00:00Z"
STATES: list[dict[str, Any]] = [
    {"online": True, "online_reason": "online", "status": "ok", "last_seen": SEEN},
    {"online": False, "online_reason": "revoked", "revoked_at": SEEN, "status": "ok",
     "last_seen": SEEN},
    {"online": False, "online_reason": "shutdown", "status": "warning", "last_seen": SEEN,
     "clock_skewed": True, "clock_offset_s": -400.0},
    {"online": False, "online_reason": "gateway_revoked", "status": "fault", "last_seen": SEEN,
     "clock_skewed": True, "clock_offset_s": 9000.0},
    {"online": False, "online_reason": None, "status": None, "last_seen": None},
]  # fmt: skip


@pytest.mark.parametrize("language", ["ja", "zh", "de", "fr"])
def test_the_scripts_badges_read_as_the_pages_in_each_language(
    open_page: Callable[[str], Any], console: Console, language: str
) -> None:
    from server import i18n
    from server.web.templating import device_badges

    page = open_page(language)
    log_in(page, console, "operator")
    for device in STATES:
        scripted = page.evaluate(
            """(d) => { const box = document.createElement("div");
                box.innerHTML = fl.deviceBadges(d);
                return Array.from(box.children).map(b => [b.className, b.textContent]); }""",
            device,
        )
        with i18n.use(language):
            expected = [[f"badge {b['cls']}", b["text"]] for b in device_badges(device)]
        assert scripted == expected, (language, device)


def _open_session(page: Any, console: Console, device: str) -> None:
    page.goto(f"{console.url}/devices/{device}")
    page.locator('[data-open="session-dialog"]').click()
    page.locator("#s-reason").fill("check the language of the terminal")
    page.locator("#session-form button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/sessions/ses-\w+$"))


def test_a_session_s_live_states_in_japanese_and_in_english(
    open_page: Callable[[str], Any], console: Console
) -> None:
    japanese = open_page("ja-JP")
    log_in(japanese, console, "operator")
    _open_session(japanese, console, "demo-0001")
    status = japanese.locator("#terminal-status")
    expect(status).to_have_text("接続しました。キー入力は機器に送られます。", timeout=30_000)
    expect(japanese.locator("#state")).to_have_text("アクティブ")
    japanese.locator("#close-session").click()
    expect(japanese.locator("#state")).to_have_text("クローズ")
    expect(japanese.locator("#close-reason")).to_have_text("終了: オペレーター")
    expect(status).to_have_text("セッションは終了しました。")
    for selector in ("#terminal-status", "#state", "#close-reason"):
        assert english_in(japanese.locator(selector).inner_text()) == [], selector

    english = open_page("en-US")
    log_in(english, console, "operator")
    _open_session(english, console, "demo-0000")
    status = english.locator("#terminal-status")
    expect(status).to_have_text("Connected. Keys go to the device.", timeout=30_000)
    expect(english.locator("#state")).to_have_text("active")
    english.locator("#close-session").click()
    expect(english.locator("#state")).to_have_text("closed")
    expect(english.locator("#close-reason")).to_have_text("closed: operator")
    expect(status).to_have_text("Session closed.")


def test_the_desk_and_the_dashboard_still_in_english(
    open_page: Callable[[str], Any], console: Console
) -> None:
    page = open_page("en-US")
    log_in(page, console, "manager")
    assert page.evaluate("document.getElementById('fl-texts').textContent") == "{}"
    page.locator("#q").fill("demo")
    expect(page.locator("#find-results p.small")).to_have_text(re.compile(r"^\d+ matches"))
    assert "online" in texts(page, "#find-results .badge")
    page.goto(console.url + "/dashboard")
    legend = texts(page, "#trend-charts .u-legend th")
    assert "Time" in legend
    assert "partial month" in legend


def test_the_dashboard_legends_in_japanese(
    open_page: Callable[[str], Any], console: Console
) -> None:
    page = open_page("ja-JP")
    log_in(page, console, "manager")
    page.goto(console.url + "/dashboard")
    legend = texts(page, "#trend-charts .u-legend th")
    assert "日時" in legend
    assert "途中までの月" in legend
    assert [t for t in legend if english_in(t)] == [], legend
