"""The device page (issue 17) in every language: its badges, health readings, faults, sessions,
approval form, maintenance windows, incidents and dialogs leave no English behind; English
reads as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud, i18n
from server.models import Alert, Device, Incident, RemoteSession
from server.web.templating import DOMAIN, LOCALE_DIR, device_badges
from tests.fixtures.api_auth import PASSWORD, Auth
from tests.fixtures.translations import left_in_english, translated_texts

#: What the device reports and the console shows as written (ids, names, raw metric names on
#: hover, the agent's offline reason on hover): data, the same in every language.
HEALTH = {
    "mfp.toner_black_percent": 62.0,
    "mfp.toner_cyan_percent": 4.5,
    "mfp.paper_tray1_percent": 80.0,
    "mfp.pages_total": 123456.0,
    "mfp.jammed": 0.0,
    "mfp.supply_percent:drum": 40.0,
    "imaging.dicom_peer_up:pacs": 1.0,
    "server.service_up:sshd": 0.0,
    "cpu_percent": 3.25,
    "mem_percent": 41.0,
    "uptime_s": 12 * 86_400 + 3 * 3_600,
    "temp_c": 41.04,
    "load1": 0.5,
}
DATA = frozenset(
    {*HEALTH, "connection_lost"}
    # a number and its unit: German and French write minutes as English does; a composed
    # label French writes as English does ("Toner %(colour)s" with "cyan")
    | {"60 min", "Toner cyan"}
)


def _device_page_data(engine: Engine) -> None:
    now = datetime.now(UTC)
    with Session(engine) as db:
        db.add(
            Device(
                id="mfp-7",
                serial="X1",
                model="Imagio MP 6055",
                type="mfp",
                customer="Klinik Nord",
                site="Haus 2",
                region="Nord",
                contact_phone="+49 30 1234567",
                online=True,
                last_seen=now,
                agent_version="1.4.0",
                status="warning",
                health=HEALTH,
                health_ts=now,
                inventory={"serial": "Y2", "model": "MP 6055", "firmware": "2.01"},
                clock_offset_s=400.0,
                clock_skewed=True,
            )
        )
        db.add(
            Device(
                id="mfp-8",
                serial="X8",
                model="m",
                type="mfp",
                customer="Klinik Nord",
                online=False,
                online_reason="connection_lost",
                last_seen=now - timedelta(hours=3),
                status="ok",
            )
        )
        db.add_all(
            [
                Alert(device_id="mfp-7", source="device", code="SC-541", severity="warning",
                      message="Fixiereinheit", raised_at=now - timedelta(hours=1)),
                Alert(device_id="mfp-7", source="device", code="SC-100", severity="critical",
                      message="X", raised_at=now - timedelta(days=1),
                      cleared_at=now - timedelta(hours=20), open=False),
                RemoteSession(id="ses-a1", device_id="mfp-7", operator="olga", reason="Stau",
                              state="requested", instance="here", created_at=now,
                              expires_at=now + timedelta(minutes=2)),
                RemoteSession(id="ses-b2", device_id="mfp-7", operator="olga", reason="Stau",
                              state="closed", instance="here", created_at=now,
                              expires_at=now + timedelta(minutes=2), approved_by="sam",
                              approved_via="web"),
                Incident(device_id="mfp-7", device_type="mfp", opened_at=now, down_at=now,
                         channel="alert", error_code="SC-541",
                         restored_at_proposed=now),
                Incident(device_id="mfp-7", device_type="mfp", opened_at=now, down_at=now,
                         channel="phone", symptom="Papierstau", resolution="no_fault",
                         closed_at=now),
            ]
        )  # fmt: skip
        db.commit()


def _log_in_admin(client: TestClient, engine: Engine) -> None:
    with Session(engine) as session:
        crud.create_user(session, username="yuki", role="admin", password=PASSWORD)
    answer = client.post("/login", data={"username": "yuki", "password": PASSWORD})
    assert answer.status_code == 200, answer.text


def _main(html: str) -> str:
    return "<main" + html.split("<main", 1)[1].split("</main>", 1)[0]


@pytest.mark.parametrize("device_id", ["mfp-7", "mfp-8"])
def test_the_device_page_leaves_no_english_behind(
    client: TestClient, engine: Engine, auth: Auth, device_id: str
) -> None:
    _device_page_data(engine)
    operator = auth("admin")
    window = {
        "device_id": "mfp-7",
        "start": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
        "duration_minutes": 60,
        "reason": "Wartung",
        "preapprove_sessions": True,
    }
    planned = client.post("/api/v1/maintenance-windows", json=window, headers=operator)
    assert planned.status_code in (200, 201), planned.text
    _log_in_admin(client, engine)
    english = client.get(f"/devices/{device_id}", headers={"Accept-Language": "en"}).text
    for language in i18n.LANGUAGES[1:]:
        page = client.get(f"/devices/{device_id}", headers={"Accept-Language": language}).text
        own = translated_texts(LOCALE_DIR, DOMAIN, language) | DATA
        assert left_in_english(_main(english), _main(page), own) == [], language
        health = client.get(f"/devices/{device_id}/health", headers={"Accept-Language": language})
        assert (
            left_in_english(client.get(f"/devices/{device_id}/health").text, health.text, own) == []
        ), language


def test_the_english_device_page_reads_as_before(client: TestClient, engine: Engine) -> None:
    _device_page_data(engine)
    _log_in_admin(client, engine)
    page = client.get("/devices/mfp-7", headers={"Accept-Language": "en"}).text
    for text in (
        "Identity and contract",
        "Health now",
        ">Toner black</td>",
        ">62 %<",
        ">PACS reachable</td>",
        ">sshd running</td>",
        ">123,456<",
        ">12 d 3 h<",
        ">yes<",
        ">Open session</button>",
        "Reason (recorded and shown to the site)",
        ">online</span>",
        ">warning</span>",
        ">clock 7 min ahead</span>",
        " — not the registered serial: another machine answers at this address",
        "approved by sam (web)",
        ">requested</span>",
        "Approve or deny session ses-a1",
        "Fault cleared ",
        ">no fault</button>",
        "No data in this range.",
    ):
        assert text in page, text
    offline = client.get("/devices/mfp-8").text
    assert ">offline · connection lost</span>" in offline
    assert ">last: ok</span>" in offline


def test_a_page_in_french_and_japanese_writes_numbers_and_words_their_way(
    client: TestClient, engine: Engine
) -> None:
    _device_page_data(engine)
    _log_in_admin(client, engine)
    french = client.get("/devices/mfp-7", headers={"Accept-Language": "fr"}).text
    assert ">Toner noir</td>" in french
    assert "123\u202f456" in french
    assert ">41,0 °C<" in french
    assert "horloge en avance de 7 min" in french
    japanese = client.get("/devices/mfp-7", headers={"Accept-Language": "ja"}).text
    assert ">PACS 到達可能</td>" in japanese
    assert ">セッションを開始</button>" in japanese


def test_badges_outside_a_page_are_english() -> None:
    assert [b["text"] for b in device_badges({"online": False, "status": None})] == [
        "offline · never connected",
        "no data",
    ]
