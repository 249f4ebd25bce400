"""The console's languages: who gets which, the catalogs complete, formats per locale."""

from __future__ import annotations

import pytest

from server import i18n
from server.web.templating import DOMAIN, LOCALE_DIR
from tests.fixtures.translations import catalog_problems


@pytest.mark.parametrize(
    ("preferred", "accept", "language"),
    [
        (None, None, "en"),
        (None, "de-CH,de;q=0.9,en;q=0.8", "de"),
        (None, "xx, zh-CN;q=0.5, ja;q=0.7", "ja"),
        (None, "en;q=0, fr;q=abc, de;q=0.1", "de"),
        (None, "*", "en"),
        (None, "zh-Hans-CN", "zh"),
        ("fr", "ja", "fr"),
        ("klingon", "ja", "ja"),
        (None, "de;q=0.5," * 10_000, "de"),
    ],
)
def test_the_reader_gets_their_setting_else_their_browser_s_else_english(
    preferred: str | None, accept: str | None, language: str
) -> None:
    assert i18n.negotiate(preferred, accept) == language


def test_every_console_text_is_translated_in_every_language() -> None:
    assert catalog_problems(LOCALE_DIR, DOMAIN, i18n.LANGUAGES[1:]) == []


@pytest.mark.parametrize(
    ("language", "number", "percent"),
    [
        ("en", "1,234,567.89", "62.5 %"),
        ("ja", "1,234,567.89", "62.5%"),
        ("zh", "1,234,567.89", "62.5%"),
        ("de", "1.234.567,89", "62,5\xa0%"),
        ("fr", "1\u202f234\u202f567,89", "62,5\xa0%"),
    ],
)
def test_numbers_and_percentages_are_written_the_reader_s_way(
    language: str, number: str, percent: str
) -> None:
    assert i18n.format_number(1234567.891, 2, language) == number
    assert i18n.format_percent(0.6251, 1, language) == percent
    with i18n.use(language):
        assert i18n.format_number(1234567.891, 2) == number


def test_the_language_of_a_page_does_not_leak_into_the_next() -> None:
    with i18n.use("ja"):
        assert i18n.current() == "ja"
        with i18n.use("../../etc"):
            assert i18n.current() == "en"
    assert i18n.current() == "en"
