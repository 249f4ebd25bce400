"""The agent reads session.open/close bodies without pydantic, and as the pydantic models do."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from agent.remote.session_bodies import parse_close, parse_open
from shared.fields import InvalidField
from shared.ids import isoformat_z, new_id, utcnow
from shared.models import SessionClose, SessionOpen

TOKEN = "t" * 32


def open_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": f"ses-{new_id()}",
        "ws_url": "wss://center.example/api/v1/tunnel/x",
        "token": TOKEN,
        "client_key": "ssh-ed25519 AAAA",
        "expires_at": isoformat_z(utcnow() + timedelta(seconds=60)),
        "operator": "alice",
        "reason": "toner jam",
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"services": ["shell", "web_panel"], "max_duration_s": 5, "idle_timeout_s": 2.5},
        {"services": None, "max_duration_s": None, "unknown": "ignored"},
        {"ws_url": "ws://127.0.0.1:1/x", "expires_at": "2026-12-06T05:00:00+01:00"},
    ],
)
def test_a_valid_open_body_reads_as_the_model_reads_it(changes: dict[str, Any]) -> None:
    body = open_body(**changes)
    model = SessionOpen.model_validate(body)
    parsed = parse_open(body)
    for name in SessionOpen.model_fields:
        assert getattr(parsed, name) == getattr(model, name), name


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"session_id": "not-a-session"}, "session_id"),
        ({"session_id": f"ses-{'a' * 32}\n"}, "session_id"),
        ({"ws_url": "http://example.com/"}, "ws_url"),
        ({"ws_url": "wss://" + "x" * 2048}, "ws_url"),
        ({"token": "short"}, "token"),
        ({"token": 12345678901234567890}, "token"),
        ({"client_key": ""}, "client_key"),
        ({"expires_at": "2026-01-01T00:00:00"}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"services": "shell"}, "services"),
        ({"services": ["a b"]}, "services"),
        ({"services": [""]}, "services"),
        ({"operator": "x" * 129}, "operator"),
        ({"max_duration_s": -5}, "max_duration_s"),
        ({"idle_timeout_s": 0}, "idle_timeout_s"),
    ],
)
def test_an_open_body_the_model_refuses_is_refused_naming_the_field(
    changes: dict[str, Any], where: str
) -> None:
    body = open_body(**changes)
    with pytest.raises(ValidationError):
        SessionOpen.model_validate(body)
    with pytest.raises(InvalidField) as refused:
        parse_open(body)
    assert refused.value.where.split(".")[0] == where
    assert TOKEN not in str(refused.value)


def test_close_bodies_read_as_the_model_reads_them() -> None:
    session_id = f"ses-{new_id()}"
    for body in ({"session_id": session_id}, {"session_id": session_id, "reason": "idle_timeout"}):
        model = SessionClose.model_validate(body)
        parsed = parse_close(body)
        assert (parsed.session_id, parsed.reason) == (model.session_id, model.reason)
    for bad in ({"reason": "operator"}, {"session_id": session_id, "reason": "whim"}):
        with pytest.raises(ValidationError):
            SessionClose.model_validate(bad)
        with pytest.raises(InvalidField):
            parse_close(bad)


def test_a_number_must_be_a_json_number() -> None:
    # Stricter than pydantic's lax mode, which takes "5" for 5.0; the server sends numbers.
    with pytest.raises(InvalidField, match="max_duration_s"):
        parse_open(open_body(max_duration_s="5"))
