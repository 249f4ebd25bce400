"""Two-factor login in a real browser (issue 15): a manager enrols an authenticator on the
account page, then logs in with the password and a code (a wrong code first)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pyotp
import pytest
from playwright.sync_api import expect

from tests.fixtures.console import Console, axe_violations, login, shoot
from tests.fixtures.qr import drawn_modules, encoded_modules

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


def enrol(page: Any, console: Console, user: str, artifacts: Path, axe_source: str) -> Any:
    """Log ``user`` in and enrol an authenticator from the QR code; the authenticator."""
    login(page, console, user)
    page.goto(console.url + "/account")
    section = page.locator("#mfa")
    section.get_by_label("Your password").fill(console.passwords[user])
    section.get_by_role("button", name="Set up two-factor login").click()
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None
    assert box["width"] >= 150  # big enough for a phone's camera
    assert axe_violations(page, axe_source) == []
    shoot(page, artifacts, f"mfa-qr-{user}")
    # What the QR code carries is the otpauth:// URI of the shown key, module for module.
    uri = page.locator("a.otpauth").get_attribute("href")
    assert uri is not None
    assert uri.startswith("otpauth://totp/")
    assert drawn_modules(qr.evaluate("svg => svg.outerHTML")) == encoded_modules(uri)
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert page.locator("#mfa-secret").inner_text().strip() == secret  # for typing it
    totp = pyotp.TOTP(secret)
    page.get_by_label("Code from your authenticator").fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_text("Two-factor login is on.")).to_be_visible()
    return totp


def test_enrol_then_log_in_with_a_code(
    browser: Any, pages: list[Any], console: Console, artifacts: Path, axe_source: str
) -> None:
    page = fresh_page(browser)
    pages.append(page)
    totp = enrol(page, console, "manager", artifacts, axe_source)
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


def test_a_token_for_scripts_needs_the_code(
    browser: Any, pages: list[Any], console: Console, artifacts: Path, axe_source: str
) -> None:
    page = fresh_page(browser)
    pages.append(page)
    totp = enrol(page, console, "operator", artifacts, axe_source)
    page.get_by_role("link", name="Your API tokens for scripts").click()
    page.get_by_label("What it is for").fill("nightly export")
    page.get_by_label("Your password").fill(console.passwords["operator"])
    code = page.get_by_label("Code from your authenticator (or a recovery code)")
    # The code that turned it on is spent: a replay is refused, and no token is made.
    code.fill(totp.now())
    page.get_by_role("button", name="Make a token").click()
    expect(page.get_by_role("alert")).to_have_text("the code is wrong")
    expect(page.locator("#new-token")).to_have_count(0)
    page.get_by_label("Your password").fill(console.passwords["operator"])
    page.get_by_label("What it is for").fill("nightly export")
    code.fill(totp.at(time.time() + 30))
    page.get_by_role("button", name="Make a token").click()
    token = page.locator("#new-token").inner_text().strip()
    assert axe_violations(page, axe_source) == []
    shoot(page, artifacts, "api-token-made")
    me = httpx.get(
        console.url + "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert me.json()["username"] == "operator"
    listed = page.get_by_role("list", name="Live tokens")
    expect(listed).to_contain_text("nightly export")
    listed.get_by_role("button", name="Revoke nightly export").click()
    expect(page.get_by_text(re.compile(r"^Token \d+ revoked\.$"))).to_be_visible()
    gone = httpx.get(
        console.url + "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert gone.status_code == 401
