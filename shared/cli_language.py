"""The command line's language: its messages in English, Japanese, Chinese (Simplified),
German or French, from the standard environment, with the standard library only.

The operator's client (``fieldlink[client]``) needs nothing of the server's: the
catalogs are gettext ``.mo`` files of the domain ``cli`` shipped in the package
(``shared/locale/<lang>/LC_MESSAGES/cli.mo``, ``make translations``), read with
:mod:`gettext`. The language is the one the environment names, as GNU gettext reads
it: ``LC_ALL``, else ``LC_MESSAGES``, else ``LANG`` name the locale; ``C`` or
``POSIX`` (or none) is English; otherwise ``LANGUAGE`` (a ``:``-list of
preferences) comes first, then the locale's language. A language fieldlink does not
speak falls back to the next, then to English.

The environment is read at each message (:func:`tr`), not at import: the messages a
command prints follow the environment it runs in (``LANG=ja_JP.UTF-8 fieldlink ...``),
and so does ``--help``: typer builds its texts at import, in English (marked ``N_``),
and :func:`shared.cli.reader_language` translates them as the help is shown.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Final

from shared.translatable import N_ as N_

#: The catalogs of the command line (gettext domain ``cli``).
LOCALE_DIR: Final = Path(__file__).parent / "locale"
DOMAIN: Final = "cli"
#: The languages the command line speaks, English (the source) first.
LANGUAGES: Final[tuple[str, ...]] = ("en", "ja", "zh", "de", "fr")
_ENGLISH_LOCALES: Final = frozenset({"C", "POSIX"})


def _spoken(tag: str) -> str | None:
    """The language fieldlink speaks for a locale name (``ja_JP.UTF-8`` -> ``ja``)."""
    primary = tag.strip().split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    return primary if primary in LANGUAGES else None


def language(environ: Mapping[str, str] | None = None) -> str:
    """The language of the command line's messages in ``environ`` (default: the process's)."""
    env = os.environ if environ is None else environ
    locale = next((env[k] for k in ("LC_ALL", "LC_MESSAGES", "LANG") if env.get(k)), "")
    base = locale.split(".")[0]
    if not base or base in _ENGLISH_LOCALES:
        return "en"
    for tag in [*env.get("LANGUAGE", "").split(":"), locale]:
        if tag and (found := _spoken(tag)) is not None:
            return found
    return "en"


@lru_cache(maxsize=8)
def catalog(lang: str) -> gettext.NullTranslations:
    """The ``cli`` catalog of ``lang`` (English: the source texts)."""
    if lang == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True)


def tr(message: str, /, **values: object) -> str:
    """``message`` in the environment's language, its ``%(name)s`` filled from ``values``."""
    text = catalog(language()).gettext(message)
    return text % values if values else text


def tr_n(singular: str, plural: str, count: int, /, **values: object) -> str:
    """The singular or plural of a message in the environment's language (``count`` and
    ``values`` fill its placeholders)."""
    text = catalog(language()).ngettext(singular, plural, count)
    return text % {"count": count, **values}
