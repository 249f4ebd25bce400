"""The customer's voice in the console: the desk's call-back queue, the low score on the
customer's and device's pages, the survey link on the incidents page, the dashboard and CSV."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.fixtures.api_auth import PASSWORD, Auth
from tests.fixtures.customers import customer, device, dispatched


def test_a_detractor_shows_up_across_the_console(client: TestClient, auth: Auth) -> None:
    customer(client, auth)
    registered = client.post(
        "/api/v1/devices", json=device("S1", customer_number="4711"), headers=auth("admin")
    )
    device_id = registered.json()["device"]["id"]
    operator = auth("operator")
    manager = auth("manager")
    closed = dispatched(client, operator, device_id)
    incident = closed["id"]
    token = closed["survey_url"].rsplit("/", 1)[1]
    answer = client.post(
        f"/api/v1/surveys/{token}",
        json={
            "recommend": 2,
            "satisfaction": {"on_site": 1},
            "comment": "<b>engineer came late</b>",
        },
    )
    assert answer.json()["followup"] is True

    client.post("/login", data={"username": "manager1", "password": PASSWORD})
    desk = client.get("/desk").text
    queue = desk.split('id="callbacks-title"', 1)[1].split("</section>", 1)[0]
    assert f"#{incident} {device_id}" in queue
    assert "recommend 2; on_site 1" in queue
    assert "&lt;b&gt;engineer came late&lt;/b&gt;" in queue
    for page in ("/customers/4711", f"/devices/{device_id}"):
        text = client.get(page).text
        card = text.split('id="customer-voice"', 1)[1].split("</section>", 1)[0]
        assert "recommend 2/10" in card, page
        assert "on site 1/5" in card
        assert "Open follow-up" in card
    incidents = client.get("/incidents?state=closed").text
    assert closed["survey_url"] in incidents

    dashboard = client.get("/dashboard?from=2026-01-01&through=2026-12-31").text
    voice = dashboard.split('id="voice-title"', 1)[1].split("</section>", 1)[0]
    assert 'data-voice="nps">-100<' in voice
    assert 'data-voice="csat_on_site">1.00 / 5<' in voice
    csv = client.get("/dashboard/export.csv?from=2026-01-01&through=2026-12-31").text
    assert "voice_resolution,dispatch,1,1,1,-100" in csv

    report = client.get(
        "/api/v1/kpis/voice?from=2026-01-01&to=2027-01-01&group_by=resolution", headers=manager
    ).json()
    by = {g["key"]: g for g in report["groups"]}
    assert by["dispatch"]["nps"] == -100.0
    assert by["remote"]["surveys"] == 0
    assert client.get("/api/v1/kpis/voice", headers=operator).status_code == 403
