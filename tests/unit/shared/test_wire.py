"""The wire vocabulary: standard library only, and the one source the models are built from."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest

from shared import wire
from shared.errors import ProtocolError
from shared.models import (
    Command,
    DeviceEvent,
    Fault,
    HealthSample,
    SessionClosedReport,
    SessionOpen,
    SessionRefusal,
    parse_message,
)


def _sample(**changes: Any) -> bytes:
    sample: wire.HealthSampleReport = {
        "v": wire.PROTOCOL_VERSION,
        "device_id": "mfp-0042",
        "boot_id": "b" * wire.MAX_BOOT_ID_LENGTH,
        "seq": wire.MAX_COUNTER,
        "ts": "2026-11-22T23:00:00.123Z",
        "status": "ok",
        "metrics": {"m" * wire.MAX_METRIC_NAME_LENGTH: 1.0},
        "faults": [
            {
                "code": "c" * wire.MAX_FAULT_CODE_LENGTH,
                "severity": "critical",
                "message": "x" * wire.MAX_FAULT_MESSAGE_LENGTH,
            }
        ],
        "outbox_dropped": 0,
    }
    return json.dumps({**sample, **changes}).encode()


def test_a_sample_at_every_limit_is_accepted() -> None:
    sample = parse_message(HealthSample, _sample())
    assert sample.seq == wire.MAX_COUNTER


@pytest.mark.parametrize(
    "change",
    [
        {"seq": wire.MAX_COUNTER + 1},
        {"seq": -1},
        {"boot_id": "b" * (wire.MAX_BOOT_ID_LENGTH + 1)},
        {"metrics": {"m" * (wire.MAX_METRIC_NAME_LENGTH + 1): 1.0}},
        {"faults": [{"code": "c" * (wire.MAX_FAULT_CODE_LENGTH + 1)}]},
        {"faults": [{"code": "c", "message": "x" * (wire.MAX_FAULT_MESSAGE_LENGTH + 1)}]},
        {"faults": [{"code": "c", "severity": "fatal"}]},
        {"status": "degraded"},
        {"device_id": "Not-A-Device"},
        {"v": wire.PROTOCOL_VERSION + 1},
    ],
)
def test_one_past_a_limit_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(HealthSample, _sample(**change))
    assert caught.value.reason == "bad_shape"


def test_the_payload_limit_is_the_wires() -> None:
    padding = wire.MAX_PAYLOAD_BYTES - len(_sample(pad=""))
    assert len(_sample(pad="p" * padding)) == wire.MAX_PAYLOAD_BYTES
    parse_message(HealthSample, _sample(pad="p" * padding))
    with pytest.raises(ProtocolError, match="over the 65536 byte limit"):
        parse_message(HealthSample, _sample(pad="p" * (padding + 1)))


def _max_length(model: type[Any], name: str) -> int | None:
    schema = model.model_json_schema()["properties"][name]
    options = schema.get("anyOf", [schema])
    return next((o["maxLength"] for o in options if "maxLength" in o), None)


@pytest.mark.parametrize(
    ("model", "field", "limit"),
    [
        (Command, "id", wire.MAX_COMMAND_ID_LENGTH),
        (Command, "type", wire.MAX_TYPE_LENGTH),
        (DeviceEvent, "type", wire.MAX_TYPE_LENGTH),
        (SessionOpen, "ws_url", wire.MAX_WS_URL_LENGTH),
        (SessionOpen, "token", wire.MAX_SESSION_TOKEN_LENGTH),
        (SessionOpen, "client_key", wire.MAX_CLIENT_KEY_LENGTH),
        (SessionOpen, "operator", wire.MAX_OPERATOR_LENGTH),
        (SessionOpen, "reason", wire.MAX_REASON_LENGTH),
        (SessionRefusal, "kind", wire.MAX_REFUSAL_KIND_LENGTH),
        (SessionRefusal, "target", wire.MAX_REFUSAL_TARGET_LENGTH),
        (SessionRefusal, "reason", wire.MAX_REFUSAL_REASON_LENGTH),
        (SessionClosedReport, "detail", wire.MAX_CLOSE_DETAIL_LENGTH),
        (Fault, "code", wire.MAX_FAULT_CODE_LENGTH),
        (Fault, "message", wire.MAX_FAULT_MESSAGE_LENGTH),
    ],
)
def test_the_models_take_their_limits_from_the_wire(
    model: type[Any], field: str, limit: int
) -> None:
    assert _max_length(model, field) == limit


def test_the_typed_dicts_name_the_models_fields() -> None:
    assert set(typing.get_type_hints(wire.FaultReport)) == set(Fault.model_fields)
    assert set(typing.get_type_hints(wire.HealthSampleReport)) == set(HealthSample.model_fields)


def test_the_models_literals_are_the_wires() -> None:
    def choices(model: type[Any], name: str) -> set[str]:
        schema = model.model_json_schema()
        prop = schema["properties"][name]
        if "$ref" in prop:  # a nested model's field
            prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
        return set(prop["enum"])

    assert choices(HealthSample, "status") == set(wire.HEALTH_STATUSES)
    assert choices(Fault, "severity") == set(wire.SEVERITIES)
    assert choices(SessionClosedReport, "close_reason") == wire.CLOSE_REASONS


def test_the_close_reasons_include_the_servers_own() -> None:
    assert {"server_restart", "access_revoked", "agent_unreachable"} <= wire.CLOSE_REASONS
    # an agent may not claim them: only the server knows it restarted or revoked access
    assert not {"server_restart", "access_revoked", "agent_unreachable"} & (
        wire.AGENT_CLOSE_REASONS
    )
    assert wire.AGENT_CLOSE_REASONS < wire.CLOSE_REASONS


def test_session_states_run_from_requested_to_closed() -> None:
    assert wire.SESSION_STATES[0] == "requested"
    assert wire.SESSION_STATES[-1] == "closed"
    assert "closed" not in wire.OPEN_SESSION_STATES


def test_every_session_event_starts_with_the_prefix() -> None:
    events = [
        value
        for name, value in vars(wire).items()
        if name.startswith("SESSION_") and isinstance(value, str) and name != "SESSION_ID_PATTERN"
    ]
    assert len(events) == 10  # 3 commands (open, close, decide), 6 events, the prefix itself
    assert all(value.startswith(wire.SESSION_EVENT_PREFIX) for value in events)
