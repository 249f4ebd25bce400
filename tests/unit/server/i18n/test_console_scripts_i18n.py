"""The texts the console's scripts write (``fl.t`` in ``server/web/static/*.js``): gettext
domain ``console_js``, every text translated with its placeholders, the template current with
the scripts, and each page carrying its language's translations as JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from server import i18n
from server.web import scripttexts
from tests.fixtures.translations import catalog_problems

WEB = Path(scripttexts.__file__).parent
#: pybabel's options in ``make translations``.
KEYWORDS = {"fl.t": None, "fl.tn": (1, 2)}
#: Every call of fl.t / fl.tn with a literal first text, as the scripts write them.
_CALL = re.compile(r'\bfl\.tn?\(\s*"((?:[^"\\]|\\.)*)"')
_COMMENT = re.compile(r"^\s*//.*$", re.MULTILINE)
_EMBEDDED = re.compile(r'<script type="application/json" id="fl-texts">(.*?)</script>', re.S)


def _template_ids() -> set[str | tuple[str, ...]]:
    with (WEB / "locale" / f"{scripttexts.DOMAIN}.pot").open("rb") as handle:
        return {m.id if isinstance(m.id, str) else tuple(m.id) for m in read_po(handle) if m.id}


def test_every_script_text_is_translated_with_its_placeholders() -> None:
    problems = catalog_problems(WEB / "locale", scripttexts.DOMAIN, i18n.LANGUAGES[1:])
    assert problems == []


def test_the_template_holds_exactly_the_scripts_texts() -> None:
    # In-process, as `make translations` extracts them: a script's new or changed text fails
    # here until the catalogs are updated.
    with (WEB / "babel_js.cfg").open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)  # type: ignore[no-untyped-call]
    root = WEB.parent.parent

    def toward_the_scripts(path: str) -> bool:
        # Only the folders on the way to static/ (not the whole checkout, not static/vendor).
        relative = Path(path).relative_to(root).as_posix()
        return relative == "server/web/static" or "server/web/static".startswith(relative + "/")

    extracted: set[str | tuple[str, ...]] = set()
    for _, _, message, _, _ in extract_from_dir(
        root,
        method_map,
        options_map,
        keywords=KEYWORDS,
        strip_comment_tags=True,
        directory_filter=toward_the_scripts,
    ):
        extracted.add(message if isinstance(message, str) else tuple(message))
    assert extracted, "no text extracted from server/web/static/*.js"
    assert extracted == _template_ids(), "run `make translations`"


def test_pybabel_finds_every_call_the_scripts_make() -> None:
    # Babel's JavaScript lexer misses a call nested in another's arguments or in a template
    # literal inside a template literal: such a text would stay English in every language.
    written = {
        re.sub(r"\\(.)", r"\1", match.group(1))
        for path in sorted((WEB / "static").glob("*.js"))
        for match in _CALL.finditer(_COMMENT.sub("", path.read_text(encoding="utf-8")))
    }
    singulars = {m if isinstance(m, str) else m[0] for m in _template_ids()}
    assert written, "no fl.t call found"
    assert sorted(written - singulars) == []


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("ja", {"other": 0}),
        ("zh", {"other": 0}),
        ("de", {"one": 0, "other": 1}),
        ("fr", {"one": 0, "many": 1, "other": 2}),
    ],
)
def test_plural_forms_follow_each_language(language: str, expected: dict[str, int]) -> None:
    data = scripttexts.catalog(language)
    assert data["plural"] == expected
    forms = data["texts"]["{count} match"]
    assert isinstance(forms, list)
    assert len(forms) == len(set(expected.values()))


def test_french_counts_zero_and_one_as_singular() -> None:
    # CLDR (the browser's Intl.PluralRules) and the catalog's Plural-Forms agree.
    plural = scripttexts.catalog("fr")["plural"]
    rule = i18n.babel_locale("fr").plural_form
    assert [plural[rule(n)] for n in (0, 1, 2, 1_000_000)] == [0, 0, 2, 1]


def test_english_is_the_source_and_embeds_nothing() -> None:
    assert scripttexts.catalog("en") == {}
    assert str(scripttexts.embedded("en")) == "{}"


def test_the_json_cannot_end_its_script_element() -> None:
    text = "</script><script>alert(1)</script><!-- & 'x'"
    embedded = str(scripttexts.script_json({"texts": {"a": text}}))
    assert not set(embedded) & {"<", ">", "&"}
    assert json.loads(embedded) == {"texts": {"a": text}}


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_each_page_carries_its_language_s_translations(client: TestClient, language: str) -> None:
    page = client.get("/login", headers={"Accept-Language": language})
    assert page.status_code == 200
    found = _EMBEDDED.search(page.text)
    assert found, "no #fl-texts block"
    data = json.loads(found.group(1))
    if language == "en":
        assert data == {}
    else:
        assert data == scripttexts.catalog(language)
        assert (
            data["texts"]["online"]
            == {
                "ja": "オンライン",
                "zh": "在线",
                "de": "online",
                "fr": "en ligne",
            }[language]
        )
