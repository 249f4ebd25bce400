"""/metrics: operational figures for anyone; the fleet's size and the KPIs need the scrape token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from server.config import ServerSettings
from server.main import create_app

TOKEN = "scrape-token-0123456789"
BUSINESS = ("fieldlink_devices_registered", "fieldlink_kpi_incidents_closed")
OPERATIONAL = ("fieldlink_ingest_messages_total", "process_cpu_seconds_total")


@pytest.fixture
def scraped(settings: ServerSettings) -> Iterator[TestClient]:
    configured = settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    with TestClient(create_app(configured)) as client:
        yield client


def test_anonymous_scrapes_see_only_operational_figures(scraped: TestClient) -> None:
    text = scraped.get("/metrics").text
    for name in OPERATIONAL:
        assert name in text
    for name in BUSINESS:
        assert name not in text
    wrong = scraped.get("/metrics", headers={"Authorization": "Bearer not-the-token"}).text
    assert "fieldlink_devices_registered" not in wrong


def test_the_scrape_token_adds_the_business_figures(scraped: TestClient) -> None:
    text = scraped.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert "\nfieldlink_devices_registered " in text
    assert 'fieldlink_kpi_incidents_closed{device_type="all"}' in text
    assert "process_cpu_seconds_total" in text


def test_the_business_endpoint_needs_the_token(scraped: TestClient) -> None:
    refused = scraped.get("/metrics/business")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "a valid scrape token is required"}
    answer = scraped.get("/metrics/business", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert "\nfieldlink_devices_registered " in answer.text
    assert "process_cpu_seconds_total" not in answer.text


def test_without_a_token_configured_business_figures_are_not_served(
    settings: ServerSettings,
) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics/business").status_code == 404
        text = client.get("/metrics", headers={"Authorization": "Bearer "}).text
        assert "fieldlink_devices_registered" not in text
