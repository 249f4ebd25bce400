"""Surveys by e-mail through a real SMTP server (aiosmtpd on loopback): the contact's
language, the link that answers the survey, one reminder, and nothing for demo data."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from server.config import ServerSettings
from server.mail import SmtpSettings
from server.main import create_app
from server.models import Survey
from server.surveys.mail import deliver, send_due
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


def _wait_for(done: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        time.sleep(0.05)


class HeldInbox(Inbox):
    """An SMTP server that holds every message until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.holding = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.holding.set()
        await asyncio.to_thread(self.release.wait, 60)
        return await super().handle_DATA(server, session, envelope)


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
        _wait_for(lambda: len(box.messages) == 1)  # sent by the survey-mail job
        mail = box.messages[0]
        assert mail["To"] == "t@sakura.example"
        assert mail["From"] == "svc@example"
        assert mail["Subject"].endswith(f"サービス案件 #{incident}")  # Japanese
        body = mail.get_content()
        assert "Dr. Tanaka 様" in body
        assert url in body
        _wait_for(
            lambda: (
                url not in client.get("/api/v1/surveys?state=unsent", headers=auth("manager")).text
            )
        )  # it was e-mailed

        engine = client.app.state.engine  # type: ignore[attr-defined]
        with Session(engine, expire_on_commit=False) as session:
            assert send_due(session, settings) == (0, 0)  # not due yet
            # Another server process read the same unreminded survey meanwhile...
            other = Session(engine, expire_on_commit=False)
            stale = other.exec(select(Survey)).one()
            later = utcnow() + timedelta(days=8)
            # ...and holds it: this process's job leaves it alone until the lease runs out.
            survey = session.exec(select(Survey)).one()
            survey.mail_lease_until = utcnow() + timedelta(minutes=5)
            session.add(survey)
            session.commit()
            assert send_due(session, settings, now=later) == (0, 0)
            survey.mail_lease_until = utcnow() - timedelta(seconds=1)  # that process died
            session.add(survey)
            session.commit()
            assert send_due(session, settings, now=later) == (0, 1)
            assert send_due(session, settings, now=later) == (0, 0)  # once
            assert session.exec(select(Survey)).one().mail_lease_until is None
            # The other process's job comes too late: it sends nothing.
            assert deliver(other, settings, stale, reminder=True) is False
            other.close()
        assert len(box.messages) == 2
        assert box.messages[1]["Subject"].startswith("リマインダー")
        token = url.rsplit("/", 1)[1]
        answered = client.post(f"/api/v1/surveys/{token}", json={"recommend": 9})
        assert answered.status_code == 200


def _settings(tmp_path: Path, port: int) -> ServerSettings:
    return app_settings(
        tmp_path,
        public_url="https://service.example",
        smtp=SmtpSettings(host="127.0.0.1", port=port, starttls=False, sender="svc@example"),
    )


def test_closing_never_waits_on_smtp_the_job_sends_and_retries(tmp_path: Path) -> None:
    """The close answers while the relay holds the message (or is down); the survey row
    waits, and the survey-mail job sends it once the relay takes it."""
    box = HeldInbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with TestClient(create_app(_settings(tmp_path, port))) as client:
            auth = make_auth(client)
            customer(client, auth)
            registered = client.post(
                "/api/v1/devices", json=device("S1", customer_number="4711"), headers=auth("admin")
            )
            device_id = registered.json()["device"]["id"]
            incident = client.post(
                "/api/v1/incidents",
                json={"device_id": device_id, "opened_at": "2026-03-02T09:00:00Z"},
                headers=auth("operator"),
            ).json()["id"]
            closed = client.post(
                f"/api/v1/incidents/{incident}/close",
                json={"resolution": "remote", "restored_at": "2026-03-02T10:00:00Z"},
                headers=auth("operator"),
            )
            # Answered with the link while nothing has been delivered yet.
            assert closed.status_code == 200, closed.text
            url = closed.json()["survey_url"]
            assert url.startswith("https://service.example/survey/")
            assert box.messages == []
            _wait_for(box.holding.is_set)  # the job is talking to the relay, not the request
            unsent = client.get("/api/v1/surveys?state=unsent", headers=auth("manager")).text
            assert url in unsent
            box.release.set()
            _wait_for(lambda: len(box.messages) == 1)
            _wait_for(
                lambda: (
                    url
                    not in client.get("/api/v1/surveys?state=unsent", headers=auth("manager")).text
                )
            )
    finally:
        box.release.set()
        controller.stop()


def test_a_survey_the_relay_refused_is_sent_by_a_later_run(
    tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    down = free_port()  # nothing listens: the first attempt fails
    with TestClient(create_app(_settings(tmp_path, down))) as client:
        auth = make_auth(client)
        customer(client, auth)
        registered = client.post(
            "/api/v1/devices", json=device("S1", customer_number="4711"), headers=auth("admin")
        )
        incident = client.post(
            "/api/v1/incidents",
            json={"device_id": registered.json()["device"]["id"],
                  "opened_at": "2026-03-02T09:00:00Z"},
            headers=auth("operator"),
        ).json()["id"]  # fmt: skip
        closed = client.post(
            f"/api/v1/incidents/{incident}/close",
            json={"resolution": "remote", "restored_at": "2026-03-02T10:00:00Z"},
            headers=auth("operator"),
        )
        assert closed.status_code == 200, closed.text
        engine = client.app.state.engine  # type: ignore[attr-defined]
        with Session(engine, expire_on_commit=False) as session:
            assert send_due(session, _settings(tmp_path, down)) == (0, 0)  # still down
            assert send_due(session, _settings(tmp_path, port)) == (1, 0)  # the retry
            assert send_due(session, _settings(tmp_path, port)) == (0, 0)  # once
    assert len(box.messages) == 1
