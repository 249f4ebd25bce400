"""The incidents page, a session's pages and the public approval-link page in every language:
no English left in ``<main>`` (data excepted), and the English pages as they were."""

from __future__ import annotations

import re

import pytest
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import i18n
from server.sessions import approval
from server.web.templating import DOMAIN, LOCALE_DIR
from tests.fixtures.api_auth import PASSWORD, Auth
from tests.fixtures.session_rows import DEVICE_ID, add_device, add_session
from tests.fixtures.translations import left_in_english, translated_texts

_PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]")


def _same_in(language: str) -> list[re.Pattern[str]]:
    """The texts with placeholders a language writes as English does ("Session %(id)s" in
    French), as patterns: such a text on the page is translated all the same."""
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    return [
        re.compile(".+".join(re.escape(part) for part in _PLACEHOLDER.split(message.id)))
        for message in catalog
        if isinstance(message.id, str)
        and message.string == message.id
        and _PLACEHOLDER.search(message.id)
    ]


def _main(html: str) -> str:
    return "<main" + html.split("<main", 1)[1].split("</main>", 1)[0]


def _assert_translated(client: TestClient, path: str, english_texts: list[str]) -> None:
    english = client.get(path, headers={"Accept-Language": "en"})
    assert english.status_code < 500, english.text
    for text in english_texts:
        assert text in english.text, (path, text)
    for language in i18n.LANGUAGES[1:]:
        page = client.get(path, headers={"Accept-Language": language})
        assert page.status_code == english.status_code
        assert f'<html lang="{i18n.HTML_LANG[language]}">' in page.text
        own = translated_texts(LOCALE_DIR, DOMAIN, language)
        same = _same_in(language)
        left = [
            text
            for text in left_in_english(_main(english.text), _main(page.text), own)
            if not any(pattern.fullmatch(text) for pattern in same)
        ]
        assert left == [], (language, path, left)


def _add_session(engine: Engine, sid: str, operator: str, state: str, **fields: object) -> None:
    add_session(
        engine,
        state=state,
        session_id=sid,
        operator=operator,
        instance="",
        reason="Paper jam, tray 2",
        **fields,
    )


def _log_in(client: TestClient, name: str) -> None:
    answer = client.post("/login", data={"username": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text


def test_the_incidents_page_in_every_language(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    add_device(engine)
    manager = auth("manager")
    opened = {"device_id": DEVICE_ID, "opened_at": "2026-03-02T09:00:00Z"}
    created = client.post(
        "/api/v1/incidents",
        json={**opened, "channel": "phone", "symptom": "Jam", "error_code": "E-101"},
        headers=manager,
    )
    assert created.status_code == 201, created.text
    escalated = client.post(
        f"/api/v1/incidents/{created.json()['id']}/escalate",
        json={"tier": 2, "assignee": "manager1", "note": "Tried a restart"},
        headers=manager,
    )
    assert escalated.status_code == 200, escalated.text
    closed = {
        **opened,
        "external_id": "T-7",
        "channel": "web",
        "symptom": "Scanner dead",
        "closed_at": "2026-03-02T11:00:00Z",
        "restored_at": "2026-03-02T10:30:00Z",
        "resolution": "no_fault",
        "resolution_note": "Replaced the fuser",
    }
    assert client.post("/api/v1/incidents", json=closed, headers=manager).status_code == 201
    _log_in(client, "manager1")
    english = [">Incidents</h1>", "2 incidents", "New incident", "Tier 2 · manager1", ">open<"]
    _assert_translated(client, "/incidents?state=all", [*english, "Fix: Replaced the fuser"])
    _assert_translated(client, "/incidents?state=closed&device_id=none", ["No incident."])


def test_a_session_s_pages_in_every_language(
    client: TestClient, engine: Engine, auth: Auth
) -> None:
    add_device(engine)
    auth("operator")
    auth("admin")
    _add_session(engine, "ses-waiting", "operator1", state="awaiting_consent", services=["web"])
    _add_session(
        engine,
        "ses-done",
        "operator1",
        state="closed",
        close_reason="idle_timeout",
        approved_by="Ann (link from operator1)",
        approved_via="link",
        allowed_services=["web", "ssh"],
        services_used=["web"],
    )
    _log_in(client, "operator1")
    _assert_translated(
        client,
        "/sessions/ses-waiting",
        ["<h1>Session ses-waiting</h1>", "Disk space", 'title="what uses the CPU"'],
    )
    _assert_translated(
        client,
        "/sessions/ses-done",
        ["closed: idle timeout", "approved by Ann", "This session has no shell recording."],
    )
    client.cookies.clear()
    _log_in(client, "admin1")
    _assert_translated(client, "/sessions/ses-waiting/observe", ["Terminal of operator1"])


@pytest.mark.parametrize("how", ["form", "unknown", "no decision"])
def test_the_approval_link_page_speaks_the_browser_s_language(
    client: TestClient, engine: Engine, how: str
) -> None:
    add_device(engine)
    _add_session(engine, "ses-ask", "olga", state="awaiting_consent")
    with Session(engine) as db:
        token, _ = approval.create_link(db, "ses-ask", created_by="olga", ttl_s=600, source_ip=None)
    if how == "no decision":
        for language in i18n.LANGUAGES:
            headers = {"Accept-Language": language}
            english = client.post(f"/approve/{token}", data={"decision": "maybe"})
            page = client.post(f"/approve/{token}", data={"decision": "maybe"}, headers=headers)
            assert page.status_code == 422
            own = translated_texts(LOCALE_DIR, DOMAIN, language) if language != "en" else None
            if own is not None:
                assert left_in_english(_main(english.text), _main(page.text), own) == []
        assert "Choose Approve or Deny." in english.text
        return
    path = f"/approve/{token}" if how == "form" else "/approve/" + "x" * 43
    texts = ["A service engineer asks", ">Approve</button>"] if how == "form" else ["not valid"]
    _assert_translated(client, path, texts)
