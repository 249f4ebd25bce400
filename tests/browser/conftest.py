"""The console in a real browser: ``fieldlink demo`` (a real server, Mosquitto and simulated
devices that accept sessions) driven by Playwright through Debian's Chromium.

One demo serves a whole module; each test logs in on a fresh browser context.
Playwright's own browser downloads are never used: ``/usr/bin/chromium`` is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.console import ARTIFACTS, AXE, CHROMIUM, Console, browser_page, running_demo


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """``fieldlink demo`` with three simulated devices, for one test module."""
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium (make system-deps installs it)")
    with running_demo(tmp_path_factory.mktemp("console")) as running:
        assert set(running.passwords) >= {"operator", "manager", "admin"}, running.passwords
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), shared by a module's tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) at desktop width; a script error fails the test."""
    with browser_page(browser) as opened:
        yield opened


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go (ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core from npm (``make web-assets`` installs it)."""
    if not AXE.exists():
        pytest.fail(f"axe-core is missing at {AXE}: run `make web-assets`")
    return AXE.read_text()
