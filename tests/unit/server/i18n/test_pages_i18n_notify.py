"""Admin > Notifications in every language: no English left in ``<main>`` but the data
(rule names, addresses, codes, errors of the relay), the English page unchanged; and what
the page says after an action comes only from its own sentences."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud, i18n
from server.models.notify import NotifyOutbox
from server.web.templating import DOMAIN, LOCALE_DIR
from tests.fixtures.api_auth import PASSWORD
from tests.fixtures.translations import left_in_english, translated_texts

#: The page's English words, each of which another language must replace.
ENGLISH = [
    "Rules",
    "Hears of",
    "Send a test",
    "Add a rule",
    "Language of the e-mails",
    "Outbox",
    "Attempts",
    "queued",
]


def _main(page: str) -> str:
    return "<main" + page.split("<main", 1)[1].split("</main>", 1)[0] + "</main>"


def _log_in(client: TestClient, engine: Engine) -> str:
    with Session(engine) as session:
        crud.create_user(session, username="ada", role="admin", password=PASSWORD)
    answer = client.post("/login", data={"username": "ada", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    page = client.get("/account").text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def _left(english: str, other: str, language: str) -> list[str]:
    own = translated_texts(LOCALE_DIR, DOMAIN, language)
    return [
        text
        for text in left_in_english(_main(english), _main(other), own)
        if text not in i18n.LANGUAGE_NAMES.values()
    ]


def test_the_notifications_page_leaves_no_english_behind(
    client: TestClient, engine: Engine
) -> None:
    csrf = _log_in(client, engine)
    first = client.post(
        "/admin/notify/rules",
        data={
            "csrf_token": csrf,
            "name": "helpdesk",
            "events": ["fault", "consent", "followup"],
            "severity": "error",
            "device_types": ["imaging"],
            "customers": "4711",
            "codes": "SC-5*",
            "webhook_url": "https://hooks.example/fieldlink",
        },
        headers={"Accept-Language": "ja"},
    )
    assert first.status_code == 200, first.text
    assert "ルール helpdesk を追加しました。" in first.text
    assert "helpdesk の署名シークレット" in first.text
    english_created = client.post(
        "/admin/notify/rules",
        data={
            "csrf_token": csrf,
            "name": "oncall",
            "email_to": "a@b.example",
            "events": ["offline"],
            "language": "de",
        },
    ).text
    assert "Rule oncall added." in english_created
    assert "(Deutsch)" in english_created
    client.post("/admin/notify/rules/helpdesk/test", data={"csrf_token": csrf})
    english = client.get("/admin/notify", headers={"Accept-Language": "en"}).text
    for text in ENGLISH:
        assert text in english, text
    for language in i18n.LANGUAGES[1:]:
        page = client.get("/admin/notify", headers={"Accept-Language": language})
        assert page.status_code == 200, language
        assert _left(english, page.text, language) == [], language
    # The secret's section and the page without any rule.
    for language in i18n.LANGUAGES[1:]:
        created = client.post(
            "/admin/notify/rules",
            data={
                "csrf_token": csrf,
                "name": f"hook-{language}",
                "events": ["fault"],
                "webhook_url": "https://h.example",
            },
            headers={"Accept-Language": language},
        )
        english_again = client.post(
            "/admin/notify/rules",
            data={
                "csrf_token": csrf,
                "name": f"hook-en-{language}",
                "events": ["fault"],
                "webhook_url": "https://h.example",
            },
        )
        assert (created.status_code, english_again.status_code) == (200, 200)
        left = _left(english_again.text, created.text, language)
        assert [t for t in left if not t.startswith("hook-")] == [], language


def test_an_empty_page_and_what_was_done_are_translated(client: TestClient, engine: Engine) -> None:
    csrf = _log_in(client, engine)
    empty = client.get("/admin/notify").text
    assert "No rule yet" in empty
    german = client.get("/admin/notify", headers={"Accept-Language": "de"}).text
    assert "Noch keine Regel" in german
    assert _left(empty, german, "de") == []
    client.post(
        "/admin/notify/rules",
        data={"csrf_token": csrf, "name": "r", "events": ["fault"], "email_to": "a@b.example"},
    )
    tested = client.post(
        "/admin/notify/rules/r/test", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert tested.status_code == 303
    french = client.get(tested.headers["location"], headers={"Accept-Language": "fr"}).text
    assert "1 message(s) de test en file pour r." in french
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(NotifyOutbox)) == 1
    removed = client.post(
        "/admin/notify/rules/r/delete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert "Rule r removed." in client.get(removed.headers["location"]).text
    # Only the page's own sentences: a link cannot make it say something else.
    forged = client.get("/admin/notify?done=Call+us+at+555&rule=x").text
    assert "Call us" not in forged
    assert 'class="notice"' not in forged
