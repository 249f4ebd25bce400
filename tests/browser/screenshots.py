"""The README's screenshots of the console: the desk, a device page and the dashboard, in
English and Japanese, at 1280 x 800, written to ``docs/screenshots/`` (``NAME-LANG.png``).

One command re-makes them all (a seeded ``fieldlink demo``, Debian's Chromium)::

    make screenshots                      # or: .venv/bin/python -m tests.browser.screenshots

Not a test (pytest collects only ``test_*.py``): ``make test`` never runs it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from tests.fixtures.console import ROOT, running_demo
from tests.fixtures.console_pages import (
    DEVICE,
    launch_chromium,
    login_state,
    new_context,
    open_page,
)

#: The languages of the README's tour, each with a time zone of its readers (the console
#: shows times in the browser's).
LANGUAGES: Final = {"en": "UTC", "ja": "Asia/Tokyo"}
#: (name, login, path) of each screenshot.
SHOTS: Final = (
    ("desk", "operator", "/desk"),
    ("device", "operator", f"/devices/{DEVICE}"),
    ("dashboard", "manager", "/dashboard"),
)
WIDTH, HEIGHT = 1280, 800
#: A caller's number typed into the desk's search, as when the phone rings (demo-0001's).
CALLER: Final = "+44 20 7946 0001"
#: What a README image may weigh.
MAX_BYTES: Final = 300_000


def _shoot(browser: Any, url: str, state: Any, language: str, name: str, path: str) -> Any:
    context = new_context(
        browser, language, WIDTH, state, height=HEIGHT, timezone=LANGUAGES[language]
    )
    page = context.new_page()
    page.on("pageerror", lambda error: sys.stderr.write(f"{name} ({language}): {error}\n"))
    open_page(page, url + path, name)
    if name == "desk":
        page.locator("#q").fill(CALLER)
        page.locator("#find-results a.match").first.wait_for()
        page.wait_for_function("() => window.__fieldlinkBusy() === 0", polling="raf")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    image = page.screenshot(animations="disabled", caret="hide")
    context.close()
    return image


def main(argv: list[str] | None = None) -> int:
    """Write the screenshots; 1 if one is heavier than :data:`MAX_BYTES`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    out: Path = parser.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    heavy = []
    with (
        tempfile.TemporaryDirectory(prefix="fieldlink-screenshots-") as directory,
        running_demo(Path(directory)) as console,
        sync_playwright() as playwright,
    ):
        console.seed_history(DEVICE)
        browser = launch_chromium(playwright)
        states = {user: login_state(browser, console, user) for _, user, _ in SHOTS}
        for language in LANGUAGES:
            for name, user, path in SHOTS:
                target = out / f"{name}-{language}.png"
                target.write_bytes(_shoot(browser, console.url, states[user], language, name, path))
                size = target.stat().st_size
                shown = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
                sys.stdout.write(f"{shown}  {size // 1000} KB\n")
                if size > MAX_BYTES:
                    heavy.append(target.name)
        browser.close()
    if heavy:
        sys.stderr.write(f"heavier than {MAX_BYTES // 1000} KB: {', '.join(heavy)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
