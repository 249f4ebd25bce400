"""Two-factor login in a real browser (issue 15): a manager enrols an authenticator on the
account page, then logs in with the password and a code (a wrong code first)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from tests.fixtures.console import Console, axe_violations, login, shoot

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def fresh_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    return context.new_page()


@pytest.fixture
def pages(browser: Any) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for page in made:
        page.context.close()


def test_enrol_then_log_in_with_a_code(
    browser: Any, pages: list[Any], console: Console, artifacts: Path, axe_source: str
) -> None:
    page = fresh_page(browser)
    pages.append(page)
    login(page, console, "manager")
    page.goto(console.url + "/account")
    section = page.locator("#mfa")
    section.get_by_label("Your password").fill(console.passwords["manager"])
    section.get_by_role("button", name="Set up two-factor login").click()
    secret = page.locator("#mfa-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    expect(page.locator("a.otpauth")).to_have_attribute("href", re.compile(r"^otpauth://totp/"))
    totp = pyotp.TOTP(secret)
    page.get_by_label("Code from your authenticator").fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_text("Two-factor login is on.")).to_be_visible()
    codes = page.get_by_role("list", name="Recovery codes").locator("code").all_inner_texts()
    assert len(codes) == 10
    shoot(page, artifacts, "mfa-recovery-codes")

    # A fresh browser: the password, then a wrong code, then the right one.
    second = fresh_page(browser)
    pages.append(second)
    second.goto(console.url + "/login?next=/desk")
    second.get_by_label("User name").fill("manager")
    second.get_by_label("Password").fill(console.passwords["manager"])
    second.get_by_role("button", name="Log in").click()
    field = second.get_by_label("Code from your authenticator app")
    expect(field).to_be_visible()
    assert axe_violations(second, axe_source) == []
    shoot(second, artifacts, "login-code")
    field.fill("000000" if totp.now() != "000000" else "111111")
    second.get_by_role("button", name="Verify").click()
    expect(second.get_by_role("alert")).to_have_text("Wrong code.")
    # The next step's code: the one that confirmed the enrolment is spent (no replay).
    second.get_by_label("Code from your authenticator app").fill(totp.at(time.time() + 30))
    second.get_by_role("button", name="Verify").click()
    second.wait_for_url(re.compile(r".*/desk$"))
    expect(second.get_by_role("navigation", name="Main")).to_be_visible()
