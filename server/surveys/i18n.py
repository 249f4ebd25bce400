"""The survey page and e-mail in the customer's language: gettext catalogs (domain ``survey``).

The catalogs are ``locale/<lang>/LC_MESSAGES/survey.po`` beside this module, compiled
to ``.mo`` (``make translations``; the wheel carries both). English is the source
language. Each language gets its own Jinja2 environment with the i18n extension and
its translations installed, so that requests in different languages never share one.
This is the ``survey`` domain only: the console's own catalogs (``messages``) are not
touched here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.support import NullTranslations, Translations
from jinja2 import Environment, FileSystemLoader, select_autoescape

from server.models.survey import LANGUAGES

DOMAIN = "survey"
LOCALE_DIR = Path(__file__).parent / "locale"
TEMPLATES_DIR = Path(__file__).parent / "templates"
#: Each language in its own words, for the page's language links.
LANGUAGE_NAMES = {"en": "English", "ja": "日本語", "zh": "中文", "de": "Deutsch", "fr": "Français"}
#: The ``lang`` attribute of each language's page.
HTML_LANG = {"en": "en", "ja": "ja", "zh": "zh-Hans", "de": "de", "fr": "fr"}


def supported(language: str | None) -> str | None:
    """``language`` when it is one the survey speaks (``ja-JP`` reads ``ja``), else None."""
    if not language:
        return None
    primary = language.split("-")[0].split("_")[0].lower()
    return primary if primary in LANGUAGES else None


@lru_cache(maxsize=len(LANGUAGES))
def translations(language: str) -> NullTranslations:
    """The ``survey`` catalog of ``language`` (English: the source texts)."""
    if language == "en":
        return NullTranslations()
    return Translations.load(str(LOCALE_DIR), locales=[language], domain=DOMAIN)


def gettext(language: str, message: str, **values: Any) -> str:
    """``message`` in ``language``, with ``%(name)s`` placeholders filled."""
    text = translations(language).gettext(message)
    return text % values if values else text


@lru_cache(maxsize=len(LANGUAGES))
def environment(language: str) -> Environment:
    """The survey templates' environment with ``language``'s translations installed."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(("html",)),
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def render(name: str, language: str, **context: Any) -> str:
    """A survey template rendered in ``language``."""
    return (
        environment(language)
        .get_template(name)
        .render(
            lang=language,
            html_lang=HTML_LANG[language],
            languages=LANGUAGE_NAMES,
            **context,
        )
    )
