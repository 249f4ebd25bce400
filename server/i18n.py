"""The languages fieldlink speaks to people: which one a reader gets, and its formats (Babel).

English is the source language; Japanese, Chinese (Simplified), German and French
have gettext catalogs (``messages`` for the console and its e-mails under
``server/web/locale``, ``survey`` for the customers' survey). A reader gets the
language of their own setting, else the first of their browser's
``Accept-Language`` that fieldlink speaks, else English. Numbers, percentages and
dates are formatted the reader's way by Babel (``1,234.5`` / ``1.234,5``).

The language of the page being rendered is a context variable
(:func:`use`/:func:`current`), set by the code that renders: a console page
renders in one thread from start to end, so concurrent requests in different
languages never see each other's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Final

from babel import Locale, dates, numbers, units
from babel.support import NullTranslations, Translations

#: The languages fieldlink speaks, English (the source) first.
LANGUAGES: Final[tuple[str, ...]] = ("en", "ja", "zh", "de", "fr")
#: Each language in its own words (the language menus).
LANGUAGE_NAMES: Final[dict[str, str]] = {
    "en": "English",
    "ja": "日本語",
    "zh": "中文（简体）",  # noqa: RUF001 - Chinese punctuation
    "de": "Deutsch",
    "fr": "Français",
}
#: The ``lang`` attribute of a page in each language.
HTML_LANG: Final[dict[str, str]] = {"en": "en", "ja": "ja", "zh": "zh-Hans", "de": "de", "fr": "fr"}
#: The Babel locale of each language (its number and date formats).
_BABEL_LOCALES: Final[dict[str, str]] = {
    "en": "en_US",
    "ja": "ja_JP",
    "zh": "zh_Hans_CN",
    "de": "de_DE",
    "fr": "fr_FR",
}
#: The console's and its e-mails' catalogs (gettext domain ``messages``).
MESSAGES_DIR: Final = Path(__file__).parent / "web" / "locale"
MESSAGES_DOMAIN: Final = "messages"
_ACCEPT_MAX: Final = 512
_current: ContextVar[str] = ContextVar("fieldlink_language", default="en")


def supported(tag: str | None) -> str | None:
    """The language fieldlink speaks for ``tag`` (``ja-JP`` and ``zh_Hans`` read ``ja``,
    ``zh``), or ``None``."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-")[0].lower()
    return primary if primary in LANGUAGES else None


def from_accept_language(header: str | None) -> str | None:
    """The first language of an ``Accept-Language`` header fieldlink speaks, by its q-values."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for order, item in enumerate(header[:_ACCEPT_MAX].split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                continue
        language = supported(tag)
        if language is not None and quality > 0:
            ranked.append((-quality, order, language))
    return min(ranked)[2] if ranked else None


def negotiate(preferred: str | None, accept_language: str | None) -> str:
    """The reader's language: their setting, else their browser's, else English."""
    return supported(preferred) or from_accept_language(accept_language) or "en"


def current() -> str:
    """The language of what is being rendered now."""
    return _current.get()


@contextlib.contextmanager
def use(language: str) -> Iterator[None]:
    """Render in ``language`` within the block."""
    token = _current.set(supported(language) or "en")
    try:
        yield
    finally:
        _current.reset(token)


@lru_cache(maxsize=32)
def catalog(locale_dir: Path, domain: str, language: str) -> NullTranslations:
    """The ``domain`` catalog of ``language`` under ``locale_dir`` (English: the source texts)."""
    if language == "en":
        return NullTranslations()
    return Translations.load(str(locale_dir), locales=[language], domain=domain)


def messages(language: str) -> NullTranslations:
    """The ``messages`` catalog of ``language`` (what an e-mail to an operator is written with,
    outside any page: the language is the recipient's, not the current one)."""
    return catalog(MESSAGES_DIR, MESSAGES_DOMAIN, supported(language) or "en")


def babel_locale(language: str | None = None) -> Locale:
    """The Babel locale of ``language`` (default: the current one)."""
    return Locale.parse(_BABEL_LOCALES[supported(language or current()) or "en"])


def format_number(value: float, digits: int = 0, language: str | None = None) -> str:
    """``value`` with the reader's digit grouping and decimal sign."""
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
    return numbers.format_decimal(value, format=pattern, locale=babel_locale(language))


def format_percent(fraction: float, digits: int = 0, language: str | None = None) -> str:
    """``fraction`` (0.62) as the reader writes a percentage: the locale's own pattern
    (``62%`` in Japanese, ``62 %`` in German), and the house style ``62 %`` in English."""
    locale = babel_locale(language)
    number = "#,##0" + ("." + "0" * digits if digits > 0 else "")
    if locale.language == "en":
        pattern = f"{number} %"
    else:
        pattern = locale.percent_formats[None].pattern.replace("#,##0", number, 1)
    return numbers.format_percent(fraction, format=pattern, locale=locale)


def format_duration(seconds: float, language: str | None = None) -> str:
    """A span in its two largest units, as the reader abbreviates them (``12 d 3 h``,
    ``5 h 20 min``, ``4 min``, ``9 s`` in English, the house style; CLDR's short units in
    the others: ``12 日 3 時間``, ``12 Tg. 3 Std.``)."""
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    parts: list[tuple[int, str, str]]
    if days:
        parts = [(days, "duration-day", "d"), (hours, "duration-hour", "h")]
    elif hours:
        parts = [(hours, "duration-hour", "h"), (minutes, "duration-minute", "min")]
    elif minutes:
        parts = [(minutes, "duration-minute", "min")]
    else:
        parts = [(total, "duration-second", "s")]
    locale = babel_locale(language)
    if locale.language == "en":
        return " ".join(f"{amount} {short}" for amount, _, short in parts)
    return " ".join(
        units.format_unit(amount, unit, length="short", locale=locale) for amount, unit, _ in parts
    )


def format_utc(moment: datetime, language: str | None = None) -> str:
    """A moment in UTC as the reader writes a date and time (``2026-03-02 09:00`` in
    English, the house style; Babel's medium format in the others), followed by ``UTC``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    locale = babel_locale(language)
    if locale.language == "en":
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    day = dates.format_date(moment.date(), format="medium", locale=locale)
    time = dates.format_time(moment, format="short", tzinfo=UTC, locale=locale)
    return f"{day} {time} UTC"
