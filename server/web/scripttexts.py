"""The texts the console's scripts write, in the reader's language (gettext domain
``console_js``, the way Django's ``djangojs`` catalog does it).

``pybabel extract -F server/web/babel_js.cfg -k fl.t -k fl.tn:1,2`` (``make translations``)
collects every ``fl.t("…")`` and ``fl.tn("…", "…", n)`` of ``server/web/static/*.js`` into
``locale/console_js.pot``; each language's ``console_js.po`` translates them. Every console
page carries its language's translations as a JSON block (``<script type="application/json"
id="fl-texts">`` in base.html, never executed, so the CSP does not mind it), which ``fl.t`` in
app.js reads; English, the source, is an empty object: a text not in it stays as written.

Plurals: a catalog's forms are chosen in the browser by ``Intl.PluralRules`` (CLDR, as Babel
writes the catalogs' ``Plural-Forms``): ``plural`` maps each CLDR category to the index of
its form in the catalog (Japanese and Chinese: one form; German: one/other; French: 0 and 1
singular, one/many/other).
"""

from __future__ import annotations

import gettext
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from babel.messages.mofile import read_mo
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from server import i18n

#: The console's catalogs (the scripts' domain beside the pages' ``messages``).
LOCALE_DIR: Final = Path(__file__).parent / "locale"
DOMAIN: Final = "console_js"
#: The counts sampled to match a catalog's plural forms with CLDR's categories.
_SAMPLES: Final = (*range(0, 202), 1_000_000, 2_000_000, 1_000_001)


def plural_categories(language: str, plural: Callable[[int], int]) -> dict[str, int]:
    """Each CLDR plural category of ``language`` and the index of the catalog form it takes
    (``plural``: the catalog's ``Plural-Forms`` expression, a function of n)."""
    rule = i18n.babel_locale(language).plural_form
    found: dict[str, int] = {}
    for count in _SAMPLES:
        found.setdefault(rule(count), int(plural(count)))
    return found


@lru_cache(maxsize=8)
def catalog(language: str, locale_dir: Path = LOCALE_DIR) -> dict[str, Any]:
    """The scripts' translations of ``language``: ``{"texts": {msgid: text or [forms]},
    "plural": {category: index}}`` (English: empty)."""
    language = i18n.supported(language) or "en"
    if language == "en":
        return {}
    path = locale_dir / language / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        compiled = read_mo(handle)
    texts: dict[str, str | list[str]] = {}
    for message in compiled:
        if not message.id or not message.string:
            continue
        if isinstance(message.id, tuple | list):
            forms = list(message.string)
            if all(forms):
                texts[str(message.id[0])] = [str(form) for form in forms]
        else:
            texts[str(message.id)] = str(message.string)
    return {
        "texts": texts,
        "plural": plural_categories(language, gettext.c2py(compiled.plural_expr)),
    }


def script_json(data: Any) -> Markup:
    """``data`` as JSON to embed in a ``<script>`` element: ``<``, ``>``, ``&`` and ``'``
    written as ``\\u`` escapes, so no text can end the element (``</script>``) or open a
    comment (``<!--``)."""
    return htmlsafe_json_dumps(data, dumps=json.dumps, ensure_ascii=False)


@lru_cache(maxsize=8)
def _embedded(language: str) -> Markup:
    return script_json(catalog(language))


def embedded(language: str | None = None) -> Markup:
    """The JSON of :func:`catalog` for a page (default: the language being rendered)."""
    return _embedded(i18n.supported(language or i18n.current()) or "en")
