"""Protocol version 1: what is accepted, what is rejected and with which reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ProtocolError
from shared.models import DeviceState, HealthSample, canonical_json, dump_message, parse_message
from shared.wire import MAX_PAYLOAD_BYTES

SAMPLE: dict[str, Any] = {
    "v": 1,
    "device_id": "mfp-0042",
    "boot_id": "9f1c",
    "seq": 1234,
    "ts": "2026-11-22T23:00:00.123Z",
    "status": "ok",
    "metrics": {"cpu_percent": 3.2, "disk_percent:/": 72.1, "mfp.toner_black_percent": 23},
    "faults": [{"code": "SC-541", "severity": "error", "message": "Fuser thermistor open"}],
}


def _reason(payload: bytes) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse_message(HealthSample, payload)
    return caught.value.reason


def test_the_contract_example_parses_and_round_trips() -> None:
    sample = parse_message(HealthSample, json.dumps(SAMPLE).encode())
    assert sample.metrics["mfp.toner_black_percent"] == 23
    assert sample.faults[0].code == "SC-541"
    assert parse_message(HealthSample, dump_message(sample)) == sample


def test_unknown_fields_are_ignored() -> None:
    sample = parse_message(HealthSample, json.dumps({**SAMPLE, "future": {"x": 1}}).encode())
    assert sample.seq == 1234


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "bad_shape"),
        ({"seq": -1}, "bad_shape"),
        ({"status": "great"}, "bad_shape"),
        ({"device_id": "MFP 42"}, "bad_shape"),
        ({"ts": "2026-11-22T23:00:00"}, "bad_shape"),  # no zone: ambiguous
        ({"metrics": {"cpu": "high"}}, "bad_shape"),
        ({"faults": [{"severity": "error"}]}, "bad_shape"),
    ],
)
def test_wrong_shapes_are_rejected(change: dict[str, Any], reason: str) -> None:
    assert _reason(json.dumps({**SAMPLE, **change}).encode()) == reason


def test_non_finite_metrics_are_rejected() -> None:
    payload = json.dumps({**SAMPLE, "metrics": {"cpu": float("nan")}}).encode()
    assert _reason(payload) == "bad_shape"


@pytest.mark.parametrize("payload", [b"{", b"\xff\xfe", b"", b"not json"])
def test_non_json_is_bad_json(payload: bytes) -> None:
    assert _reason(payload) == "bad_json"


def test_oversize_is_rejected_unread() -> None:
    padding = "x" * MAX_PAYLOAD_BYTES
    assert _reason(json.dumps({**SAMPLE, "pad": padding}).encode()) == "oversize"


def test_state_message() -> None:
    state = parse_message(DeviceState, b'{"v":1,"online":false,"reason":"connection_lost"}')
    assert state.online is False
    assert state.reason == "connection_lost"


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_another_error(payload: bytes) -> None:
    reason = None
    try:
        parse_message(HealthSample, payload)
    except ProtocolError as exc:
        reason = exc.reason
    assert reason in {None, "bad_json", "bad_shape", "oversize"}


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == canonical_json({"a": "é", "b": 1})
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
