"""Console pages in the viewer's language: the browser's, then their own choice; the API twin."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud, i18n
from server.models import AuditEntry
from server.web.templating import DOMAIN, LOCALE_DIR
from tests.fixtures.api_auth import PASSWORD, Auth
from tests.fixtures.translations import left_in_english, translated_texts

LOGIN_TEXTS = {
    "en": "Log in to fieldlink",
    "ja": "fieldlink にログイン",
    "zh": "登录 fieldlink",
    "de": "Bei fieldlink anmelden",
    "fr": "Connexion à fieldlink",
}


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_the_login_page_speaks_the_browser_s_language(client: TestClient, language: str) -> None:
    page = client.get("/login", headers={"Accept-Language": f"{language};q=0.9"})
    assert page.status_code == 200
    assert f'<html lang="{i18n.HTML_LANG[language]}">' in page.text
    assert page.headers["content-language"] == i18n.HTML_LANG[language]
    assert LOGIN_TEXTS[language] in page.text
    if language != "en":
        english = client.get("/login").text
        own = translated_texts(LOCALE_DIR, DOMAIN, language)
        assert left_in_english(english, page.text, own) == []


def _log_in(client: TestClient, engine: Engine, name: str = "yuki") -> None:
    with Session(engine) as session:
        crud.create_user(session, username=name, role="operator", password=PASSWORD)
    answer = client.post("/login", data={"username": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text


def _csrf(page: str) -> str:
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


@pytest.mark.parametrize("path", ["/account", "/devices/nope-1", "/admin"])
def test_pages_in_every_language_leave_no_english_behind(
    client: TestClient, engine: Engine, path: str
) -> None:
    _log_in(client, engine)
    english = client.get(path, headers={"Accept-Language": "en"}).text
    for language in i18n.LANGUAGES[1:]:
        page = client.get(path, headers={"Accept-Language": language}).text
        chrome = page.split("<main", 1)[0]
        own = translated_texts(LOCALE_DIR, DOMAIN, language)
        assert left_in_english(english.split("<main", 1)[0], chrome, own) == [], (language, path)


def test_a_viewer_s_own_choice_wins_over_the_browser_and_is_audited(
    client: TestClient, engine: Engine
) -> None:
    _log_in(client, engine)
    account = client.get("/account", headers={"Accept-Language": "de"})
    assert "Abmelden" in account.text
    assert 'id="language-choice"' in account.text
    chosen = client.post(
        "/account/language",
        data={"language": "ja", "csrf_token": _csrf(account.text)},
        headers={"Accept-Language": "de"},
        follow_redirects=False,
    )
    assert chosen.status_code == 303
    page = client.get("/account", headers={"Accept-Language": "de"})
    assert '<html lang="ja">' in page.text
    assert "ログアウト" in page.text
    assert '<option value="ja" lang="ja" translate="no" selected>' in page.text
    # back to the browser's
    client.post("/account/language", data={"language": "", "csrf_token": _csrf(page.text)})
    assert '<html lang="de">' in client.get("/account", headers={"Accept-Language": "de"}).text
    with Session(engine) as session:
        details = session.exec(
            sa.select(AuditEntry.details).where(AuditEntry.action == "user.preferences")  # type: ignore[arg-type]
        ).all()
    assert len(details) == 2


def test_each_language_is_named_in_its_own_words_for_no_browser_to_translate(
    client: TestClient, engine: Engine
) -> None:
    _log_in(client, engine)
    page = client.get("/account", headers={"Accept-Language": "fr"}).text
    for code, name in i18n.LANGUAGE_NAMES.items():
        tag = i18n.HTML_LANG[code]
        assert f'<option value="{code}" lang="{tag}" translate="no">{name}</option>' in page, code


def test_a_language_choice_without_the_csrf_token_changes_nothing(
    client: TestClient, engine: Engine
) -> None:
    _log_in(client, engine)
    forged = client.post("/account/language", data={"language": "fr"}, follow_redirects=False)
    assert forged.status_code == 403
    assert '<html lang="en">' in client.get("/account").text


def test_the_api_reads_and_sets_one_s_language(client: TestClient, auth: Auth) -> None:
    operator = auth("operator")
    url = "/api/v1/auth/me/preferences"
    assert client.get(url, headers=operator).json() == {"language": None}
    assert client.put(url, json={"language": "zh"}, headers=operator).json() == {"language": "zh"}
    assert client.get("/api/v1/auth/me", headers=operator).json()["language"] == "zh"
    refused = client.put(url, json={"language": "xx"}, headers=operator)
    assert refused.status_code == 422
    assert client.get(url, headers=operator).json() == {"language": "zh"}
    assert client.get(url).status_code == 401
