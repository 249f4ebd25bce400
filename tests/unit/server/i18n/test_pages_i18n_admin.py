"""The admin pages, one's account and API tokens, and the dashboard in every language:
no English left in ``<main>`` (data aside), the English page unchanged."""

from __future__ import annotations

import asyncssh
import pytest
from fastapi.testclient import TestClient

from server import i18n
from server.kpi.report import KPI_DEFINITIONS
from server.kpi.voice import VOICE_DEFINITIONS
from server.web import texts
from server.web.dashboard import FIGURES
from server.web.templating import DOMAIN, LOCALE_DIR
from server.web.voice import VOICE_BREAKDOWN, VOICE_FIGURES
from tests.fixtures.api_auth import PASSWORD, Auth
from tests.fixtures.customers import customer, device, dispatched
from tests.fixtures.translations import left_in_english, translated_texts

#: Each page and an English text it still shows.
PAGES = {
    "/admin": "Users and roles",
    "/admin/devices": "Register a device",
    "/admin/audit": "Verify the chain",
    "/account": "Change password",
    "/account/tokens": "Make a token",
    "/dashboard?from=2026-01-01&through=2026-12-31": "The customer's voice",
}


def _fill(client: TestClient, auth: Auth) -> None:
    """A device with a closed incident and a (bad) survey answer, an SSH key, an API token."""
    admin = auth("admin")
    customer(client, auth)
    registered = client.post(
        "/api/v1/devices", json=device("S1", customer_number="4711"), headers=admin
    )
    device_id = registered.json()["device"]["id"]
    operator = auth("operator")
    closed = dispatched(client, operator, device_id)
    token = closed["survey_url"].rsplit("/", 1)[1]
    client.post(f"/api/v1/surveys/{token}", json={"recommend": 2, "satisfaction": {"on_site": 1}})
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    added = client.post(
        "/api/v1/users/operator1/keys", json={"public_key": key, "name": "laptop"}, headers=admin
    )
    assert added.status_code == 201, added.text
    auth("manager")


#: Texts that stay as written: the formulas (docs/kpis.md), alone or after a figure's name
#: that reads the same in every language (NPS); the names of the languages, each in its
#: own (``_language.html``); the connection badge of ``_badges.html`` (not these pages').
AS_WRITTEN = frozenset(
    {f.formula for f in (*FIGURES, *VOICE_FIGURES)}
    | {f"{f.label} = {f.formula}" for f in VOICE_FIGURES if f.label == "NPS"}
    | set(i18n.LANGUAGE_NAMES.values())
    | {"offline · never connected"}
)


def _log_in(client: TestClient) -> None:
    answer = client.post("/login", data={"username": "admin1", "password": PASSWORD})
    assert answer.status_code == 200, answer.text


def _csrf(page: str) -> str:
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def _main(page: str) -> str:
    return "<main" + page.split("<main", 1)[1].split("</main>", 1)[0] + "</main>"


def _assert_translated(client: TestClient, path: str, shown: str) -> None:
    english = client.get(path, headers={"Accept-Language": "en"})
    assert english.status_code == 200, english.text
    assert shown in english.text
    for language in i18n.LANGUAGES[1:]:
        page = client.get(path, headers={"Accept-Language": language})
        assert page.status_code == 200, (language, path)
        own = translated_texts(LOCALE_DIR, DOMAIN, language)
        left = left_in_english(_main(english.text), _main(page.text), own)
        assert [text for text in left if text not in AS_WRITTEN] == [], (language, path)


@pytest.mark.parametrize("path", PAGES)
def test_the_page_leaves_no_english_behind(client: TestClient, auth: Auth, path: str) -> None:
    _fill(client, auth)
    _log_in(client)
    _assert_translated(client, path, PAGES[path])


def test_a_new_token_and_an_authenticator_being_set_up_are_translated(
    client: TestClient, auth: Auth
) -> None:
    _fill(client, auth)
    _log_in(client)
    tokens = client.get("/account/tokens").text
    made = client.post(
        "/account/tokens",
        data={
            "name": "nightly report",
            "expires_in_days": "7",
            "password": PASSWORD,
            "csrf_token": _csrf(tokens),
        },
    )
    assert "Token “nightly report” made." in made.text
    for language in i18n.LANGUAGES[1:]:
        page = client.get("/account/tokens", headers={"Accept-Language": language}).text
        english = client.get("/account/tokens").text
        own = translated_texts(LOCALE_DIR, DOMAIN, language)
        assert left_in_english(_main(english), _main(page), own) == [], language
    account = client.get("/account").text
    english = client.post(
        "/account/mfa", data={"password": PASSWORD, "csrf_token": _csrf(account)}
    ).text
    assert "Scan this QR code" in english
    assert 'aria-label="QR code for your authenticator app"' in english
    japanese = client.post(
        "/account/mfa",
        data={"password": PASSWORD, "csrf_token": _csrf(account)},
        headers={"Accept-Language": "ja"},
    ).text
    assert "認証アプリ用の QR コード" in japanese
    own = translated_texts(LOCALE_DIR, DOMAIN, "ja")
    left = left_in_english(_main(english), _main(japanese), own)
    assert [text for text in left if text not in AS_WRITTEN] == []


def test_the_python_texts_of_the_dashboard_are_marked_for_the_catalogs() -> None:
    """The meanings and labels the dashboard shows from server.kpi and server.web.voice are
    the texts of server.web.texts (which the catalogs take them from)."""
    formulas = {"|A| / |S|"}
    assert set(KPI_DEFINITIONS.values()) <= set(texts.KPI_MEANINGS)
    assert set(VOICE_DEFINITIONS.values()) - formulas <= set(texts.VOICE_MEANINGS)
    labels = {f.label for f in VOICE_FIGURES} | {n.replace("_", " ") for n in VOICE_BREAKDOWN}
    assert labels <= set(texts.VOICE_LABELS)
    german = translated_texts(LOCALE_DIR, DOMAIN, "de")
    assert "Abgeschlossene Vorfälle" in german
    assert {f.label for f in FIGURES} <= set(_msgids())


def _msgids() -> set[str]:
    from babel.messages.pofile import read_po

    with (LOCALE_DIR / "messages.pot").open("rb") as handle:
        return {m.id for m in read_po(handle) if isinstance(m.id, str)}


def test_what_an_admin_did_is_said_in_their_language(client: TestClient, auth: Auth) -> None:
    _fill(client, auth)
    _log_in(client)
    page = client.get("/admin").text
    german = {"Accept-Language": "de"}
    added = client.post(
        "/admin/users",
        data={
            "username": "carl",
            "role": "operator",
            "password": PASSWORD,
            "csrf_token": _csrf(page),
        },
        headers=german,
    )
    assert "Benutzer carl angelegt." in added.text
    assert "User carl added." in client.get("/admin?done=added&user=carl").text
    reset = client.post(
        "/admin/users/carl/password-reset", data={"csrf_token": _csrf(page)}, headers=german
    )
    assert "Einmalpasswort für carl: " in reset.text
    # Only the page's own sentences: a link cannot make it say something else.
    forged = client.get("/admin?done=Call+us+at+555&user=x").text
    assert "Call us" not in forged
    assert 'class="notice"' not in forged


def test_a_revoked_token_is_said_in_french(client: TestClient, auth: Auth) -> None:
    _fill(client, auth)
    _log_in(client)
    page = client.get("/account/tokens").text
    client.post(
        "/account/tokens",
        data={
            "name": "ci",
            "expires_in_days": "7",
            "password": PASSWORD,
            "csrf_token": _csrf(page),
        },
    )
    listed = client.get("/account/tokens").text
    token_id = listed.split('action="/account/tokens/', 1)[1].split("/", 1)[0]
    revoked = client.post(
        f"/account/tokens/{token_id}/revoke",
        data={"csrf_token": _csrf(listed)},
        headers={"Accept-Language": "fr"},
    )
    assert f"Jeton {token_id} révoqué." in revoked.text
