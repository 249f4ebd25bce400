"""Notification delivery against a real SMTP relay (STARTTLS, AUTH) and a real HTTP
receiver, on SQLite and PostgreSQL: signed webhooks, e-mail, retries with backoff
that a new worker (a restarted server) picks up, and giving up after N attempts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server import metrics
from server.config import ServerSettings
from server.mail import MailError, SmtpSettings, send_mail
from server.main import create_app
from server.models import Device
from server.models.notify import NotifyOutbox
from server.notify.events import fault_event, write_events
from server.notify.rules import NotifyRule
from server.notify.worker import NotifyWorker
from shared.ids import utcnow
from tests.fixtures.api_auth import make_auth
from tests.fixtures.ingest import counter
from tests.fixtures.server_app import app_settings
from tests.fixtures.smtp import SmtpRelay
from tests.fixtures.webhook import WebhookReceiver, verify_signature

pytestmark = pytest.mark.integration

SECRET = b"whsec-test-0123456789"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpRelay]:
    with SmtpRelay(tmp_path / "relay") as smtp:
        yield smtp


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as receiver:
        yield receiver


def _settings(
    tmp_path: Path, relay: SmtpRelay, hook: WebhookReceiver, database_url: str
) -> ServerSettings:
    secret_file = tmp_path / "hook.secret"
    secret_file.write_bytes(SECRET + b"\n")
    return ServerSettings(
        database_url=database_url,
        state_dir=tmp_path / "state",
        smtp=relay.smtp_settings(),
        notify_max_attempts=3,
        notify_retry_base_s=30,
        notify_webhook_allow=["127.0.0.1/32"],  # the test's receiver is on this host
        notify=[
            NotifyRule(
                name="ops",
                events=["fault"],
                severity="error",
                email_to=["it-oncall@example.com"],
                webhook_url=hook.url,
                secret_file=secret_file,
            )
        ],
    )


class Clock:
    """The worker's clock, moved by the test (no sleeping through a backoff)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def _raise(engine: Engine, opened: bool) -> None:
    with engine.begin() as conn:
        write_events(
            conn,
            [
                fault_event(
                    "ct-9",
                    code="DICOM-ECHO-FAIL-PACS",
                    metric=None,
                    severity="error",
                    message="PACS does not answer C-ECHO",
                    at=utcnow(),
                    opened=opened,
                )
            ],
        )


def _outbox(engine: Engine) -> list[NotifyOutbox]:
    with Session(engine) as db:
        return list(db.exec(select(NotifyOutbox).order_by(col(NotifyOutbox.id))).all())


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    with Session(db_engine) as db:
        db.add(Device(id="ct-9", serial="CT9", model="CT", type="imaging", customer="Sakura"))
        db.commit()
    return db_engine


def test_a_fault_sends_one_signed_webhook_and_one_e_mail_then_a_resolution(
    tmp_path: Path, relay: SmtpRelay, hook: WebhookReceiver, engine: Engine, database_url: str
) -> None:
    worker = NotifyWorker(_settings(tmp_path, relay, hook, database_url), engine)
    sent_before = counter(metrics.NOTIFY_SENT, "webhook")
    _raise(engine, True)
    asyncio.run(worker.run())
    [delivery] = hook.received()
    assert delivery.verified
    assert delivery.headers["x-fieldlink-event"] == "fault.problem"
    body = delivery.json
    assert (body["state"], body["code"], body["device"]["id"]) == (
        "problem",
        "DICOM-ECHO-FAIL-PACS",
        "ct-9",
    )
    [mail] = relay.received()
    assert mail["To"] == "it-oncall@example.com"
    assert mail["Subject"].startswith("[fieldlink] PROBLEM: DICOM-ECHO-FAIL-PACS on ct-9")
    assert relay.tls_used == [True]
    assert relay.logins == ["fieldlink"]
    assert counter(metrics.NOTIFY_SENT, "webhook") == sent_before + 1
    # Still open (raised again): nothing more.
    _raise(engine, True)
    asyncio.run(worker.run())
    assert len(hook.received()) == 1
    assert len(relay.received()) == 1
    _raise(engine, False)
    asyncio.run(worker.run())
    assert [d.json["state"] for d in hook.received()] == ["problem", "resolved"]
    assert all(d.verified for d in hook.received())
    assert relay.received()[1]["Subject"].startswith("[fieldlink] RESOLVED")
    assert {row.status for row in _outbox(engine)} == {"sent"}


def test_a_receiver_that_is_down_is_retried_with_backoff_and_a_restart_delivers(
    tmp_path: Path, relay: SmtpRelay, hook: WebhookReceiver, engine: Engine, database_url: str
) -> None:
    settings = _settings(tmp_path, relay, hook, database_url)
    clock = Clock()
    worker = NotifyWorker(settings, engine, clock=clock)
    retried = counter(metrics.NOTIFY_RETRIED, "webhook")
    hook.stop()
    _raise(engine, True)
    asyncio.run(worker.run())
    [webhook] = [row for row in _outbox(engine) if row.channel == "webhook"]
    assert (webhook.status, webhook.attempts) == ("queued", 1)
    assert webhook.last_error is not None
    assert webhook.last_error.startswith(f"POST {hook.url}: ConnectError")
    assert webhook.due_at - clock.now == timedelta(seconds=30)
    assert counter(metrics.NOTIFY_RETRIED, "webhook") == retried + 1
    assert len(relay.received()) == 1  # the e-mail went all the same
    # Not yet due: not tried again.
    clock.now += timedelta(seconds=29)
    asyncio.run(worker.run())
    assert _webhook_row(engine).attempts == 1
    clock.now += timedelta(seconds=2)
    asyncio.run(worker.run())
    row = _webhook_row(engine)
    assert row.attempts == 2
    assert row.due_at - clock.now == timedelta(seconds=60)  # doubled
    # The server restarts (a new worker, the same database), the receiver is back.
    hook.start()
    restarted = NotifyWorker(settings, engine, clock=clock)
    clock.now += timedelta(seconds=61)
    asyncio.run(restarted.run())
    [delivery] = hook.received()
    assert delivery.verified
    assert delivery.headers["x-fieldlink-delivery"] == str(row.id)
    assert (_webhook_row(engine).status, _webhook_row(engine).attempts) == ("sent", 3)


def test_a_message_is_given_up_after_max_attempts(
    tmp_path: Path, relay: SmtpRelay, hook: WebhookReceiver, engine: Engine, database_url: str
) -> None:
    clock = Clock()
    worker = NotifyWorker(_settings(tmp_path, relay, hook, database_url), engine, clock=clock)
    dead = counter(metrics.NOTIFY_DEAD, "webhook")
    hook.status = 503
    _raise(engine, True)
    for _ in range(3):
        asyncio.run(worker.run())
        clock.now += timedelta(hours=1)
    row = _webhook_row(engine)
    assert (row.status, row.attempts, row.last_error) == (
        "dead",
        3,
        f"POST {hook.url}: HTTP 503",
    )
    assert counter(metrics.NOTIFY_DEAD, "webhook") == dead + 1
    asyncio.run(worker.run())
    assert _webhook_row(engine).attempts == 3  # never again


def _webhook_row(engine: Engine) -> NotifyOutbox:
    [row] = [row for row in _outbox(engine) if row.channel == "webhook"]
    return row


def test_send_mail_refuses_a_wrong_password_without_saying_it(
    tmp_path: Path, relay: SmtpRelay
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    settings = SmtpSettings.model_validate(relay.smtp_settings(password_file=str(wrong)))
    with pytest.raises(MailError) as caught:
        asyncio.run(send_mail(settings, ["a@example.com"], "hello", "body"))
    assert "535" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
    assert relay.received() == []


def test_send_mail_refuses_a_relay_whose_certificate_it_cannot_verify(
    tmp_path: Path, relay: SmtpRelay
) -> None:
    values: dict[str, Any] = relay.smtp_settings()
    values.pop("ca_file")
    with pytest.raises(MailError, match="SSLCertVerificationError"):
        asyncio.run(send_mail(SmtpSettings.model_validate(values), ["a@example.com"], "x", "y"))
    assert relay.received() == []


def test_the_cli_lists_rules_masked_and_sends_a_test_to_each_channel(
    tmp_path: Path, relay: SmtpRelay, hook: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    from typer.testing import CliRunner

    from server.cli.server import server_app

    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET + b"\n")
    config = tmp_path / "server.toml"
    smtp = "\n".join(
        f"{key} = {str(value).lower() if isinstance(value, bool) else value}"
        if isinstance(value, int)
        else f'{key} = "{value}"'
        for key, value in relay.smtp_settings().items()
    )
    caplog.set_level(logging.DEBUG)
    url = hook.url.replace("http://", "http://bot:pw-in-url@") + "?token=tok-in-url"
    config.write_text(
        f'[server]\ndatabase_url = "sqlite:///{tmp_path / "db.sqlite"}"\n'
        f'state_dir = "{tmp_path / "state"}"\nnotify_webhook_allow = ["127.0.0.1/32"]\n'
        f"\n[server.smtp]\n{smtp}\n\n"
        f'[[server.notify]]\nname = "ops"\nemail_to = ["it@example.com"]\n'
        f'webhook_url = "{url}"\nsecret_file = "{secret}"\n'
    )
    runner = CliRunner()
    listed = runner.invoke(server_app, ["notify", "rules", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "ops  (config)" in listed.output
    assert "pw-in-url" not in listed.output
    sent = runner.invoke(server_app, ["notify", "test", "ops", "--config", str(config)])
    assert sent.exit_code == 0, sent.output
    assert sent.output.splitlines() == ["webhook: sent", "email: sent"]
    [delivery] = hook.received()
    assert delivery.verified
    assert delivery.json["kind"] == "test"
    assert delivery.headers["authorization"].startswith("Basic ")  # the URL's credentials
    [mail] = relay.received()
    assert "A test of notification rule ops" in mail.get_content()
    hook.status = 500
    failed = runner.invoke(server_app, ["notify", "test", "ops", "--config", str(config)])
    assert failed.exit_code == 1
    assert "webhook: failed: POST http://bot:***@127.0.0.1" in failed.output
    assert "pw-in-url" not in failed.output
    # Nothing logged the URL's secrets, nor the relay's password, nor the signing secret.
    logged = caplog.text
    for secret_text in ("pw-in-url", "tok-in-url", relay.password, SECRET.decode()):
        assert secret_text not in logged


def test_a_rule_made_over_the_api_is_signed_by_another_server_process(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    """Two server processes on one database, each with its own ``state_dir`` and the same
    key file: a rule made through one is delivered by the other's worker, signed with the
    secret shown once; a process with another key says so in the outbox."""
    key = tmp_path / "shared" / "mfa.key"
    database_url = f"sqlite:///{tmp_path / 'fieldlink.db'}"

    def process(name: str, key_file: Path) -> ServerSettings:
        return app_settings(
            tmp_path,
            database_url,
            state_dir=tmp_path / name,
            mfa_key_file=key_file,
            notify_interval_s=3600,
            notify_webhook_allow=["127.0.0.1/32"],
        )

    first, second = process("first", key), process("second", key)
    with TestClient(create_app(first)) as one, TestClient(create_app(second)) as two:
        admin = make_auth(one)("admin")  # the same database: the same token
        made = one.post(
            "/api/v1/notify/rules",
            json={"name": "api-hook", "events": ["fault"], "webhook_url": hook.url},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        listed = two.get("/api/v1/notify/rules", headers=admin)
        assert listed.json()["items"][0]["name"] == "api-hook"
        assert secret not in listed.text
        engine: Engine = two.app.state.engine  # type: ignore[attr-defined]
        with Session(engine) as db:
            db.add(Device(id="ct-9", serial="CT9", model="CT", type="imaging", customer="Sakura"))
            db.commit()
        with engine.connect() as conn:
            stored = conn.scalar(sa.text("SELECT spec FROM notify_rule"))
        assert secret not in str(stored)
        assert not (tmp_path / "first" / "notify").exists()
        clock = Clock()
        _raise(engine, True)
        stranger = process("third", tmp_path / "third.key")
        asyncio.run(NotifyWorker(stranger, engine, clock=clock).run())
        row = _webhook_row(engine)
        assert (row.status, row.attempts) == ("queued", 1)
        assert row.last_error == (
            f"notify rule 'api-hook': the MFA key {tmp_path / 'third.key'} "
            "does not decrypt a stored secret"
        )
        assert hook.received() == []
        clock.now += timedelta(hours=1)
        asyncio.run(NotifyWorker(second, engine, clock=clock).run())
    [delivery] = hook.received()
    assert delivery.json["code"] == "DICOM-ECHO-FAIL-PACS"
    # The receiver checks it with the secret it was shown.
    assert verify_signature(
        secret.encode(), delivery.headers["x-fieldlink-signature"], delivery.body
    )
    assert _webhook_row(engine).status == "sent"
