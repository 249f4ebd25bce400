"""Every console page in every language fits a tablet and a desktop window (issue 17): in
English, Japanese, Chinese, German and French (the browser's ``Accept-Language``), at 1280
and 768 px, no page is wider than the window and no element's text spills out of its box
(long German and French words, longer labels). A failure names the page, the language,
the width and each element (a selector path and its text), and saves a screenshot under
the test's tmp folder. A Japanese page passes axe-core at 768 px, as the English ones do.

One demo, one browser: each language's pages are loaded once per login and checked at
1280 px, then again after the window shrinks to 768 px.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from server.i18n import HTML_LANG, LANGUAGES
from tests.fixtures.console import Console, axe_violations
from tests.fixtures.console_pages import (
    DEVICE,
    Seeded,
    login_state,
    new_context,
    open_page,
    overflow_problems,
    pages,
    seed_pages,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

#: A desktop first, then a tablet: the page is loaded at the first width, and when the window
#: shrinks, charts (drawn to their column's width, redrawn 100 ms after a resize) are
#: narrower than their new column, so that nothing flags a chart not yet redrawn.
WIDTHS = (1280, 768)


@pytest.fixture(scope="module")
def seeded(console: Console) -> Seeded:
    console.seed_history(DEVICE)
    return seed_pages(console)


@pytest.fixture(scope="module")
def logins(browser: Any, console: Console, seeded: Seeded) -> dict[str, dict[str, Any]]:
    """Each login's cookies (logged in once, reused by every language's contexts)."""
    return {user: login_state(browser, console, user) for user in pages(seeded) if user}


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_page_fits_768_and_1280_px(
    browser: Any,
    console: Console,
    seeded: Seeded,
    logins: dict[str, dict[str, Any]],
    language: str,
    tmp_path: Path,
) -> None:
    problems: dict[str, list[str]] = {}
    for user, listed in pages(seeded).items():
        context = new_context(browser, language, WIDTHS[0], logins.get(user))
        page = context.new_page()
        for name, path in listed:
            page.set_viewport_size({"width": WIDTHS[0], "height": 900})
            open_page(page, console.url + path, name)
            assert page.locator("html").get_attribute("lang") == HTML_LANG[language], (name, path)
            for width in WIDTHS:
                if width != WIDTHS[0]:
                    page.set_viewport_size({"width": width, "height": 900})
                if found := overflow_problems(page):
                    shot = tmp_path / f"{re.sub(r'[^a-z0-9]+', '-', name)}-{language}-{width}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    problems[f"{name} ({path}) in {language} at {width} px, see {shot}"] = found
        context.close()
    assert not problems, "overflows:\n" + "\n".join(
        f"{where}:\n  " + "\n  ".join(found) for where, found in problems.items()
    )


def test_japanese_pages_pass_axe_at_768_px(
    browser: Any,
    console: Console,
    seeded: Seeded,
    logins: dict[str, dict[str, Any]],
    axe_source: str,
) -> None:
    context = new_context(browser, "ja", 768, logins["admin"])
    page = context.new_page()
    problems: dict[str, Any] = {}
    listed = dict(pages(seeded)["admin"])
    for name in ("desk", "device", "session, awaiting consent"):
        path = listed[name]
        open_page(page, console.url + path, name)
        assert page.locator("html").get_attribute("lang") == "ja"
        if found := axe_violations(page, axe_source):
            problems[path] = found
    context.close()
    assert problems == {}
