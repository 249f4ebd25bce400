"""The e-mail of a notification rule in the rule's language: fieldlink's words translated,
times written the reader's way, what devices and people wrote kept as written."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, get_args

import pytest

from server import i18n
from server.mail import SmtpSettings, build_message
from server.notify import delivery
from server.notify.mails import mail_text
from server.notify.planner import payload
from server.notify.rules import DeviceFacts, Language, NotifyRule

DEVICE = DeviceFacts(
    id="ct-9", type="imaging", customer="Sakura", customer_number="4711", model="CT", serial="C9"
)
AT = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)


def _payload(kind: str, state: str, **event: Any) -> dict[str, Any]:
    rule = NotifyRule(name="oncall", email_to=["a@b.example"], events=["fault"])
    base = {"kind": kind, "state": state, "subject": kind, "severity": None, "message": ""}
    return payload(rule, {**base, "at": AT, **event}, DEVICE)


def test_english_reads_as_before() -> None:
    fault = _payload(
        "fault", "problem", severity="error", message="PACS echo failed", body={"code": "DX-1"}
    )
    subject, body = mail_text(fault)
    assert subject == "[fieldlink] PROBLEM: DX-1 on ct-9 (Sakura)"
    assert body.startswith("PROBLEM: PACS echo failed\n\n")
    assert "Device:   ct-9 (imaging, CT, serial C9)" in body
    assert "Event:    fault problem, severity error" in body
    assert "At:       2026-03-02 09:05 UTC" in body


@pytest.mark.parametrize(
    ("language", "subject", "words"),
    [
        (
            "ja",
            "[fieldlink] 障害発生: ct-9 の DX-1(Sakura)",
            ["デバイス", "重大度 エラー", "2026/03/02"],
        ),
        (
            "de",
            "[fieldlink] PROBLEM: DX-1 auf ct-9 (Sakura)",
            ["Gerät:", "Schweregrad", "02.03.2026"],
        ),
        (
            "fr",
            "[fieldlink] PROBLÈME : DX-1 sur ct-9 (Sakura)",
            ["Appareil", "gravité", "2 mars 2026"],
        ),
        ("zh", "[fieldlink] 问题：ct-9 上的 DX-1(Sakura)", ["设备", "严重程度", "2026年3月2日"]),  # noqa: RUF001
    ],
)
def test_a_fault_in_the_rules_language_keeps_the_devices_words(
    language: str, subject: str, words: list[str]
) -> None:
    fault = _payload(
        "fault", "problem", severity="error", message="PACS echo failed", body={"code": "DX-1"}
    )
    said_subject, body = mail_text(fault, language)
    assert said_subject == subject
    assert "PACS echo failed" in body  # the device's message, as written
    for word in words:
        assert word in body, (language, word, body)
    assert "Device" not in body
    assert "severity" not in body


def test_offline_consent_follow_up_and_test_messages_are_said_by_fieldlink() -> None:
    offline = _payload("offline", "problem", body={"reason": "connection_lost"})
    assert "Das Gerät ist offline gegangen (Verbindung verloren)." in mail_text(offline, "de")[1]
    back = _payload("offline", "resolved", body={"reason": None})
    assert "デバイスはオンラインに戻りました。" in mail_text(back, "ja")[1]
    consent = _payload(
        "consent",
        "event",
        body={"session_id": "s-1", "operator": "olga", "reason": "paper jam, call 1234"},
    )
    subject, body = mail_text(consent, "fr")
    assert subject == "[fieldlink] AVIS : consentement sur ct-9 (Sakura)"
    assert "La session s-1 de olga attend l’approbation du site : paper jam, call 1234" in body  # noqa: RUF001
    overdue = _payload(
        "followup",
        "problem",
        body={
            "followup_id": 7,
            "incident_id": 3,
            "reason": "NPS 2",
            "due_at": "2026-03-01T12:00:00+00:00",
        },
    )
    assert "seit 01.03.2026 12:00 UTC überfällig: NPS 2" in mail_text(overdue, "de")[1]
    closed = _payload("followup", "resolved", body={"followup_id": 7, "incident_id": 3})
    assert "事件 #3 的跟进 #7 已完成。" in mail_text(closed, "zh")[1]
    test = _payload("test", "event", body={"actor": "ada"})
    assert "通知ルール oncall のテストです(送信者: ada)。" in mail_text(test, "ja")[1]
    assert "A test of notification rule oncall, sent by ada." in mail_text(test)[1]


def test_a_rule_speaks_the_consoles_languages_and_english_by_default() -> None:
    assert get_args(Language) == i18n.LANGUAGES
    assert NotifyRule(name="r", email_to=["a@b.example"]).language == "en"
    assert NotifyRule(name="r", email_to=["a@b.example"], language="ja").language == "ja"
    with pytest.raises(ValueError, match="language"):
        NotifyRule(name="r", email_to=["a@b.example"], language="es")


async def test_the_e_mail_goes_out_in_the_rules_language(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[EmailMessage] = []
    smtp = SmtpSettings(host="relay.example", sender="fieldlink@center.example")

    async def send(settings: SmtpSettings, to: list[str], subject: str, body: str) -> None:
        sent.append(build_message(settings, to, subject, body))

    monkeypatch.setattr(delivery, "send_mail", send)
    rule = NotifyRule(name="tokyo", email_to=["desk@example.jp"], language="ja")
    offline = payload(
        rule,
        {
            "kind": "offline",
            "state": "problem",
            "subject": "offline",
            "severity": None,
            "message": "offline (silent)",
            "at": AT,
            "body": {"reason": "silent"},
        },
        DEVICE,
    )
    await delivery.send_email(rule, offline, smtp)
    [mail] = sent
    assert str(mail["Subject"]) == "[fieldlink] 障害発生: ct-9 の オフライン(Sakura)"
    text = mail.get_content()
    assert "デバイスがオフラインになりました(応答なし（報告なし）)。" in text  # noqa: RUF001
    assert mail.get_content_charset() == "utf-8"
