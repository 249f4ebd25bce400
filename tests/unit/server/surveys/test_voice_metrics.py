"""/metrics with the scrape token: this month's NPS by resolution and the overdue follow-ups."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from server.config import ServerSettings
from server.main import create_app
from server.models import FollowUp
from shared.ids import utcnow
from tests.fixtures.api_auth import make_auth
from tests.fixtures.customers import customer, device

TOKEN = "scrape-token-0123456789"


def test_nps_and_overdue_followups_are_scraped(settings: ServerSettings) -> None:
    configured = settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    with TestClient(create_app(configured)) as client:
        auth = make_auth(client)
        customer(client, auth)
        registered = client.post(
            "/api/v1/devices", json=device("S1", customer_number="4711"), headers=auth("admin")
        )
        device_id = registered.json()["device"]["id"]
        now = utcnow()
        incident = client.post(
            "/api/v1/incidents",
            json={
                "device_id": device_id,
                "opened_at": (now - timedelta(hours=2)).isoformat(),
                "channel": "phone",
            },
            headers=auth("operator"),
        ).json()["id"]
        closed = client.post(
            f"/api/v1/incidents/{incident}/close",
            json={"resolution": "remote", "restored_at": (now - timedelta(hours=1)).isoformat()},
            headers=auth("operator"),
        ).json()
        token = closed["survey_url"].rsplit("/", 1)[1]
        client.post(f"/api/v1/surveys/{token}", json={"recommend": 4})
        engine = client.app.state.engine  # type: ignore[attr-defined]
        table = FollowUp.__table__  # type: ignore[attr-defined]
        with engine.begin() as connection:
            connection.execute(sa.update(table).values(due_at=now - timedelta(minutes=1)))
        anonymous = client.get("/metrics").text
        assert "fieldlink_kpi_nps" not in anonymous
        text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert 'fieldlink_kpi_nps{resolution="remote"} -100.0' in text
        assert 'fieldlink_kpi_nps{resolution="all"} -100.0' in text
        assert 'fieldlink_kpi_survey_response_rate{resolution="remote"} 1.0' in text
        assert "\nfieldlink_followups_overdue 1.0" in text
