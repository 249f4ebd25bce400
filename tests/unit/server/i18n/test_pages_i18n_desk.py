"""The desk, the customers' pages and a site user's page in every language: no English left
in ``<main>`` but the data, and the English pages unchanged."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from server import i18n
from server.models import Incident
from server.web.templating import DOMAIN, LOCALE_DIR
from tests.fixtures.api_auth import PASSWORD, Auth, engine_of
from tests.fixtures.customers import dispatched
from tests.fixtures.scoped_fleet import Side, build_fleet, scoped_auth
from tests.fixtures.translations import left_in_english, translated_texts

#: The device state badges of ``_badges.html`` (``device_badges``, ``state``): not these
#: templates' texts, checked with that macro's own pages.
_DEVICE_BADGES = re.compile(
    r'<span class="badge (?:[a-z]+" data-online="[a-z]+"|(?:revoked|unknown|stale|skew|health-'
    r'[a-z]+|state-[a-z_]+)")[^>]*>[^<]*</span>'
)

ENGLISH = {
    "/desk": [
        "Who is calling?",
        "My incidents",
        "Handover: fuser noise",
        "tier 2",
        "Call back",
        "due ",
        "Faults the devices reported",
        "down since",
        "Fault cleared",
        "no fault</button>",
    ],
    "/desk?customer=Nobody": ["No device matches.", "0 devices match", "Clear"],
    "/customers": ["Customer list", "Number or name", "New customer", "2 customers"],
    "/customers?q=nobody": ["No customer matches."],
    "/customers/C-1001": ["Contacts", "Recent calls", "The customer's voice", "recommend 2/10"],
    "/site": ["Sessions awaiting your consent", "1 device", "Sessions on your devices"],
}


@pytest.fixture
def ours(client: TestClient, auth: Auth, tmp_path: Path) -> Side:
    """Two customers' fleets, a detractor's survey on ours (a call-back, the low score) and
    our device's open fault incident, cleared and handed over to ``manager1``."""
    side, _ = build_fleet(engine_of(client), tmp_path / "recordings")
    operator = auth("operator")
    closed = dispatched(client, operator, side.device_id)
    token = closed["survey_url"].rsplit("/", 1)[1]
    answer = client.post(
        f"/api/v1/surveys/{token}",
        json={"recommend": 2, "satisfaction": {"on_site": 1, "call_center": 3}, "comment": "late"},
    )
    assert answer.json()["followup"] is True
    auth("manager")
    escalated = client.post(
        f"/api/v1/incidents/{side.open_incident_id}/escalate",
        json={"tier": 2, "assignee": "manager1", "note": "fuser noise"},
        headers=operator,
    )
    assert escalated.status_code == 200, escalated.text
    with Session(engine_of(client)) as db:  # the device says its fault cleared
        alert = db.get(Incident, side.open_incident_id)
        assert alert is not None
        alert.restored_at_proposed = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
        db.add(alert)
        db.commit()
    return side


def _main(html: str) -> str:
    return _DEVICE_BADGES.sub("", "<main" + html.split("<main", 1)[1].split("</main>", 1)[0])


def _every_language(client: TestClient, path: str) -> None:
    english = client.get(path, headers={"Accept-Language": "en"})
    assert english.status_code == 200, path
    for text in ENGLISH[path]:
        assert text in english.text, (path, text)
    for language in i18n.LANGUAGES[1:]:
        page = client.get(path, headers={"Accept-Language": language})
        assert page.status_code == 200, (path, language)
        own = translated_texts(LOCALE_DIR, DOMAIN, language)
        left = left_in_english(_main(english.text), _main(page.text), own)
        assert left == [], (language, path, left)


@pytest.mark.parametrize("path", [p for p in ENGLISH if p != "/site"])
def test_a_manager_s_desk_and_customers_leave_no_english_behind(
    client: TestClient, auth: Auth, ours: Side, path: str
) -> None:
    client.post("/login", data={"username": "manager1", "password": PASSWORD})
    _every_language(client, path)


def test_a_site_user_s_page_leaves_no_english_behind(client: TestClient, ours: Side) -> None:
    scoped_auth(client, "alpine-it", "site", customers=[ours.number])
    client.post("/login", data={"username": "alpine-it", "password": PASSWORD})
    _every_language(client, "/site")
