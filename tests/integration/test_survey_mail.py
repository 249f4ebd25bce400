"""Surveys by e-mail through a real SMTP server (aiosmtpd on loopback): the contact's
language, the link that answers the survey, one reminder, and nothing for demo data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlmodel import Session

from server.mail import SmtpSettings
from server.main import create_app
from server.surveys.mail import send_due
from shared.ids import utcnow
from tests.fixtures.api_auth import make_auth
from tests.fixtures.customers import customer, device
from tests.fixtures.ports import free_port
from tests.fixtures.server_app import app_settings

pytestmark = pytest.mark.integration


class Inbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def test_the_survey_is_mailed_in_the_contacts_language_and_reminded_once(
    tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    settings = app_settings(
        tmp_path,
        public_url="https://service.example",
        smtp=SmtpSettings(host="127.0.0.1", port=port, starttls=False, sender="svc@example"),
    )
    with TestClient(create_app(settings)) as client:
        auth = make_auth(client)
        customer(client, auth)  # Dr. Tanaka, t@sakura.example, Japanese
        registered = client.post(
            "/api/v1/devices", json=device("S1", customer_number="4711"), headers=auth("admin")
        )
        device_id = registered.json()["device"]["id"]
        incident = client.post(
            "/api/v1/incidents",
            json={"device_id": device_id, "opened_at": "2026-03-02T09:00:00Z", "channel": "phone"},
            headers=auth("operator"),
        ).json()["id"]
        closed = client.post(
            f"/api/v1/incidents/{incident}/close",
            json={"resolution": "remote", "restored_at": "2026-03-02T10:00:00Z"},
            headers=auth("operator"),
        ).json()
        url = closed["survey_url"]
        assert url.startswith("https://service.example/survey/")
        assert len(box.messages) == 1
        mail = box.messages[0]
        assert mail["To"] == "t@sakura.example"
        assert mail["From"] == "svc@example"
        assert mail["Subject"].endswith(f"サービス案件 #{incident}")  # Japanese
        body = mail.get_content()
        assert "Dr. Tanaka 様" in body
        assert url in body
        unsent = client.get("/api/v1/surveys?state=unsent", headers=auth("manager")).text
        assert url not in unsent  # it was e-mailed

        engine = client.app.state.engine  # type: ignore[attr-defined]
        with Session(engine, expire_on_commit=False) as session:
            assert send_due(session, settings) == (0, 0)  # not due yet
            later = utcnow() + timedelta(days=8)
            assert send_due(session, settings, now=later) == (0, 1)
            assert send_due(session, settings, now=later) == (0, 0)  # once
        assert len(box.messages) == 2
        assert box.messages[1]["Subject"].startswith("リマインダー")
        token = url.rsplit("/", 1)[1]
        answered = client.post(f"/api/v1/surveys/{token}", json={"recommend": 9})
        assert answered.status_code == 200
