"""Notifications end to end: a real agent's fault over real Mosquitto reaches a real SMTP
relay and a real webhook receiver through ``fieldlink server run``.

The agent (the real imaging profile) echoes a real DICOM peer; stopping the peer
raises ``DICOM-ECHO-FAIL-PACS`` in every sample until it answers again. One e-mail
and one signed webhook tell the fault, nothing more while it stays open, one of
each tells it resolved. A receiver that is down is retried, and a message still
queued when the server stops is delivered after it starts again. A bad rule stops
the start with one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.fixtures.dicom import VerificationScp
from tests.fixtures.dicom import imaging_agent_config as _config
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.processes import AgentProcess, ServerProcess, wait_until
from tests.fixtures.smtp import SmtpRelay
from tests.fixtures.webhook import WebhookReceiver

pytestmark = pytest.mark.integration

CODE = "DICOM-ECHO-FAIL-PACS"
DEVICE = "ct-notify-1"
SECRET = b"whsec-e2e-0123456789abcdef"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpRelay]:
    with SmtpRelay(tmp_path / "relay") as smtp:
        yield smtp


def _server(
    directory: Path, database_url: str, broker_url: str, relay: SmtpRelay, hook_url: str
) -> ServerProcess:
    directory.mkdir(exist_ok=True)
    secret = directory / "hook.secret"
    secret.write_bytes(SECRET + b"\n")
    server = ServerProcess(
        directory,
        database_url,
        broker_url,
        offline_after_s=60,
        notify_interval_s=0.5,
        notify_retry_base_s=0.5,
        notify_retry_max_s=1.0,
        notify_max_attempts=100,
        notify_webhook_allow=["127.0.0.1/32"],  # the test's receiver is on this host
    )
    smtp = relay.smtp_settings()
    with server.config.open("a") as config:
        config.write("\n[server.smtp]\n")
        for key, value in smtp.items():
            config.write(f"{key} = {_toml(value)}\n")
        config.write(
            "\n[[server.notify]]\n"
            'name = "imaging-oncall"\n'
            'events = ["fault"]\n'
            'severity = "error"\n'
            'device_types = ["imaging"]\n'
            # The peer's port is also its store service's: that fault is not this rule's.
            'codes = ["DICOM-ECHO-*"]\n'
            'email_to = ["it-oncall@example.com"]\n'
            f'webhook_url = "{hook_url}"\n'
            f'secret_file = "{secret}"\n'
        )
    return server


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else f'"{value}"'


def _outbox(server: ServerProcess) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = server.api("GET", "/notify/outbox")["items"]
    return items


def _health_ts(server: ServerProcess) -> str:
    return str(server.device(DEVICE)["health_ts"])


def _samples_pass(server: ServerProcess, count: int) -> None:
    """Wait until ``count`` more samples of the device were stored."""
    seen = [_health_ts(server)]

    def newer() -> bool:
        ts = _health_ts(server)
        if ts != seen[-1]:
            seen.append(ts)
        return len(seen) > count

    wait_until(newer, timeout=30)


def _history(server: ServerProcess) -> list[dict[str, Any]]:
    """The device's alerts of :data:`CODE`, open and cleared."""
    return [a for a in server.device(DEVICE)["alerts"] if a["code"] == CODE]


def _agent(tmp_path: Path, mosquitto: MosquittoBroker, port: int) -> AgentProcess:
    agent = AgentProcess(tmp_path, DEVICE, mosquitto.url)
    agent.config = _config(tmp_path, mosquitto, DEVICE, port)
    # A loaded test machine must not time an echo out (a refused port fails at once).
    text = agent.config.read_text().replace("timeout_s = 2\n", "timeout_s = 8\n")
    text = text.replace("[agent.dicom]", "collector_timeout_s = 10\n\n[agent.dicom]")
    agent.config.write_text(text)
    return agent


def _told_as_history(server: ServerProcess, hook: WebhookReceiver, relay: SmtpRelay) -> None:
    """One problem message per alert opened, one resolution per alert cleared, alternating."""
    wait_until(lambda: all(i["status"] == "sent" for i in _outbox(server)), 30)
    history = _history(server)
    states = [d.json["state"] for d in hook.received()]
    opened = len(history)
    cleared = sum(1 for a in history if a["cleared_at"] is not None)
    assert states.count("problem") == opened, (states, history)
    assert states.count("resolved") == cleared, (states, history)
    assert states == ["problem", "resolved"] * (len(states) // 2) + ["problem"] * (len(states) % 2)
    subjects = [m["Subject"].split(":", 1)[0] for m in relay.received()]
    assert subjects == [
        "[fieldlink] PROBLEM" if state == "problem" else "[fieldlink] RESOLVED" for state in states
    ]
    assert all(d.verified for d in hook.received())


# Each end-to-end test runs on one database: the worker's queue, retries and restart are
# proven on SQLite and PostgreSQL in test_notify_delivery, the alert rules in the ingest
# tests; here the default install's SQLite tells a fault, and PostgreSQL keeps a message
# queued across a restart of the real server.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_fault_sends_one_e_mail_and_one_signed_webhook_then_resolved(
    tmp_path: Path, mosquitto: MosquittoBroker, database_url: str, relay: SmtpRelay
) -> None:
    scp = VerificationScp()
    scp.start()
    with WebhookReceiver(SECRET) as hook:
        server = _server(tmp_path / "center", database_url, mosquitto.url, relay, hook.url)
        with server:
            server.register(DEVICE, "imaging")
            agent = _agent(tmp_path, mosquitto, scp.port)
            try:
                agent.start()
                wait_until(
                    lambda: (
                        (server.device(DEVICE)["health"] or {}).get("imaging.dicom_peer_up:pacs")
                        == 1.0
                    ),
                    timeout=30,
                )
                assert hook.received() == []
                scp.stop()
                wait_until(lambda: hook.received() and relay.received(), timeout=30)
                delivery = hook.received()[0]
                assert delivery.verified
                body = delivery.json
                assert (body["kind"], body["state"], body["code"]) == ("fault", "problem", CODE)
                assert body["device"]["id"] == DEVICE
                assert body["device"]["type"] == "imaging"
                assert body["severity"] == "error"
                assert relay.received()[0]["Subject"].startswith(
                    f"[fieldlink] PROBLEM: {CODE} on {DEVICE}"
                )
                assert relay.tls_used[0] is True
                # The fault stays open, in every sample: no second message (one per alert).
                _samples_pass(server, 3)
                _told_as_history(server, hook, relay)
                if len(_history(server)) == 1:
                    assert len(hook.received()) == len(relay.received()) == 1
                scp.start()
                wait_until(lambda: hook.received()[-1].json["state"] == "resolved", 30)
                _told_as_history(server, hook, relay)
                resolved = hook.received()[-1]
                assert resolved.json["code"] == CODE
                metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
                told = len(hook.received())
                assert f'fieldlink_notify_sent_total{{channel="webhook"}} {told}.0' in metrics
                assert f'fieldlink_notify_sent_total{{channel="email"}} {told}.0' in metrics
                assert "fieldlink_notify_queued 0.0" in metrics
            finally:
                agent.stop()
                scp.stop()


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_receiver_down_is_retried_and_the_message_survives_a_server_restart(
    tmp_path: Path, mosquitto: MosquittoBroker, database_url: str, relay: SmtpRelay
) -> None:
    scp = VerificationScp()
    scp.start()
    hook = WebhookReceiver(SECRET)  # not started: nobody listens on its port
    server = _server(tmp_path / "center", database_url, mosquitto.url, relay, hook.url)
    agent = _agent(tmp_path, mosquitto, scp.port)
    try:
        server.start()
        server.login_admin()
        server.register(DEVICE, "imaging")
        agent.start()
        wait_until(lambda: server.device(DEVICE)["health"], timeout=30)
        scp.stop()

        def webhook_failed_twice() -> bool:
            rows = [i for i in _outbox(server) if i["channel"] == "webhook"]
            return bool(rows) and rows[0]["attempts"] >= 2

        wait_until(webhook_failed_twice, timeout=30)
        [row] = [i for i in _outbox(server) if i["channel"] == "webhook"]
        assert row["status"] == "queued"
        assert row["last_error"].startswith(f"POST {hook.url}: ConnectError")
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'fieldlink_notify_retried_total{channel="webhook"}' in metrics
        server.stop()
        hook.start()
        server.start()
        server.login_admin()

        def queued_one_delivered() -> list[Any]:
            return [
                d for d in hook.received() if d.headers["x-fieldlink-delivery"] == str(row["id"])
            ]

        wait_until(queued_one_delivered, timeout=30)
        [delivery] = queued_one_delivered()
        assert delivery.verified
        assert (delivery.json["state"], delivery.json["code"]) == ("problem", CODE)
        assert all(d.verified for d in hook.received())
    finally:
        agent.stop()
        server.stop()
        hook.stop()
        scp.stop()


BAD_RULES = [
    (
        'name = "x"\nwebhook_url = "ftp://hooks.example/x"\nsecret_file = "/x"\n',
        "[server] notify.0.webhook_url: Value error, webhook_url must be an http:// or "
        "https:// URL with a host",
    ),
    (
        'name = "x"\nwebhook_url = "https://hooks.example/x"\nsecret_file = "/nope/x"\n',
        "notify rule 'x': cannot read secret_file /nope/x: No such file or directory",
    ),
    (
        'name = "x"\nemail_to = ["a@example.com"]\n',
        "notify rule 'x' sends e-mail, but [server.smtp] host is not set",
    ),
]


def _refused(tmp_path: Path, rule: str, *, entry_point: bool) -> list[str]:
    """``fieldlink server run`` with ``rule``: it fails; the lines of its stderr."""
    server = ServerProcess(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", "mqtt://127.0.0.1:1")
    with server.config.open("a") as config:
        config.write(f"\n[[server.notify]]\n{rule}")
    done = server.cli("server", "run", entry_point=entry_point)
    assert done.returncode != 0
    return done.stderr.strip().splitlines()


@pytest.mark.parametrize(("rule", "says"), BAD_RULES)
def test_a_bad_rule_stops_the_start_with_one_line(tmp_path: Path, rule: str, says: str) -> None:
    lines = _refused(tmp_path, rule, entry_point=False)  # the command, in process
    assert len(lines) == 1, lines
    assert says in lines[0]


def test_the_real_command_stops_with_that_one_line(tmp_path: Path) -> None:
    """The installed command prints that line and nothing else (no traceback, no log)."""
    rule, says = BAD_RULES[1]
    lines = _refused(tmp_path, rule, entry_point=True)
    assert len(lines) == 1, lines
    assert says in lines[0]
