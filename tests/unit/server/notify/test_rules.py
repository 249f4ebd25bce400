"""Notification rules: what matches, what a bad rule says, secrets kept out of sight."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.config import ServerSettings
from server.config_file import load_settings
from server.notify.delivery import backoff_s, encode, sign, verify
from server.notify.rules import DeviceFacts, EventFacts, NotifyRule, mask_url, matches
from server.notify.worker import check_notify
from shared.errors import ConfigError

CT = DeviceFacts(id="ct-1", type="imaging", customer="Sakura Clinic", customer_number="4711")
MFP = DeviceFacts(id="mfp-1", type="mfp", customer="Acme", customer_number="1001")


def _rule(**values: object) -> NotifyRule:
    return NotifyRule.model_validate({"name": "r", "email_to": ["it@example.com"], **values})


def _fault(code: str = "SC-541", severity: str = "error") -> EventFacts:
    return EventFacts(
        kind="fault", state="problem", subject=f"fault:{code}", severity=severity, code=code
    )


OFFLINE = EventFacts(kind="offline", state="problem", subject="offline")
CONSENT = EventFacts(kind="consent", state="event", subject="session:s1")


def test_a_rule_matches_on_kind_severity_type_customer_and_code() -> None:
    rule = _rule(
        events=["fault", "offline"],
        severity="error",
        device_types=["imaging"],
        customers=["4711"],
        codes=["SC-5*"],
    )
    assert matches(rule, _fault(), CT)
    assert not matches(rule, _fault(severity="warning"), CT)  # below the least severity
    assert matches(rule, _fault(severity="critical"), CT)
    assert not matches(rule, _fault(code="DICOM-ECHO-FAIL"), CT)
    assert not matches(rule, _fault(), MFP)  # another type and customer
    assert matches(rule, OFFLINE, CT)  # offline has no severity or code to ask about
    assert not matches(rule, CONSENT, CT)  # not a kind it listens to


def test_customers_match_by_number_or_name_and_empty_lists_match_anything() -> None:
    assert matches(_rule(customers=["Sakura Clinic"]), _fault(), CT)
    assert matches(_rule(customers=["4711"]), _fault(), CT)
    assert not matches(_rule(customers=["4712"]), _fault(), CT)
    anything = _rule(events=["fault", "offline", "consent"])
    assert all(matches(anything, event, MFP) for event in (_fault(), OFFLINE, CONSENT))
    assert not matches(_rule(enabled=False), _fault(), CT)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"webhook_url": "ftp://hooks.example/x", "secret_file": "/s"}, "http:// or https://"),
        ({"webhook_url": "file:///etc/passwd", "secret_file": "/s"}, "http:// or https://"),
        ({"webhook_url": "javascript:alert(1)", "secret_file": "/s"}, "http:// or https://"),
        ({"webhook_url": "https://hooks.example/x"}, "needs secret_file"),
        ({"email_to": []}, "webhook_url or email_to"),
        ({"email_to": ["not an address"]}, "not name@domain"),
        ({"events": ["fault", "weather"]}, "events must be some of"),
        ({"name": "no spaces"}, "letters, digits"),
        ({"severity": "loud"}, "severity"),
    ],
)
def test_a_bad_rule_in_server_toml_is_one_line_naming_the_key(
    tmp_path: Path, values: dict[str, object], says: str
) -> None:
    rule = {"name": "ops", "email_to": ["it@example.com"], **values}
    lines = "\n".join(f"{key} = {_toml(value)}" for key, value in rule.items())
    config = tmp_path / "server.toml"
    config.write_text(f"[server]\n\n[[server.notify]]\n{lines}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(ServerSettings, config, "server")
    text = str(caught.value)
    assert "\n" not in text
    assert "[server] notify.0" in text
    assert says in text


def _toml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{item}"' for item in value) + "]"
    return f'"{value}"'


def test_rule_names_must_be_unique(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    rule = '[[server.notify]]\nname = "ops"\nemail_to = ["a@example.com"]\n'
    config.write_text("[server]\n" + rule + rule)
    with pytest.raises(ConfigError, match="unique: ops"):
        load_settings(ServerSettings, config, "server")


def test_the_start_refuses_an_unreadable_secret_and_e_mail_without_smtp(tmp_path: Path) -> None:
    missing = tmp_path / "nope.secret"
    hook = NotifyRule(name="hook", webhook_url="https://h.example/x", secret_file=missing)
    with pytest.raises(ConfigError) as caught:
        check_notify(ServerSettings(notify=[hook]))
    assert str(caught.value).startswith(f"notify rule 'hook': cannot read secret_file {missing}")
    mail = NotifyRule(name="mail", email_to=["it@example.com"])
    with pytest.raises(ConfigError, match=r"'mail' sends e-mail, but \[server.smtp\] host"):
        check_notify(ServerSettings(notify=[mail]))
    secret = tmp_path / "hook.secret"
    secret.write_text("s3cret\n")
    check_notify(ServerSettings(notify=[hook.model_copy(update={"secret_file": secret})]))


def test_a_webhook_url_with_credentials_is_shown_masked() -> None:
    url = "https://bot:hunter2@hooks.example/services/x?token=abc123&channel=ops"
    shown = mask_url(url)
    assert "hunter2" not in shown
    assert "abc123" not in shown
    assert shown == "https://bot:***@hooks.example/services/x?token=***&channel=***"
    rule = _rule(webhook_url=url, secret_file="/etc/fieldlink/x.secret")
    assert "hunter2" not in str(rule.public())
    assert mask_url("https://hooks.example/x") == "https://hooks.example/x"


def test_the_signature_covers_the_timestamp_and_the_exact_body() -> None:
    body = encode({"kind": "fault", "state": "problem"})
    now = int(time.time())
    header = sign(b"secret", now, body)
    assert header.startswith(f"t={now},v1=")
    assert verify(b"secret", header, body, now=now)
    assert not verify(b"other", header, body, now=now)  # another secret
    assert not verify(b"secret", header, body + b" ", now=now)  # a changed body
    assert not verify(b"secret", header.replace(f"t={now}", f"t={now + 1}"), body, now=now)
    assert not verify(b"secret", header, body, now=now + 301)  # replayed late
    assert not verify(b"secret", "garbage", body, now=now)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, 30, 3600) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff_s(20, 30, 3600) == 3600
