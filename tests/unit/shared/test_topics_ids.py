"""Topic names and device ids of docs/protocol.md."""

from __future__ import annotations

import pytest

from shared import topics
from shared.errors import InvalidDeviceId, ProtocolError
from shared.ids import check_device_id, derive_device_id, is_device_id, isoformat_z, utcnow


def test_topics() -> None:
    assert topics.telemetry("mfp-0042") == "fieldlink/v1/mfp-0042/telemetry"
    assert topics.cmd_result("mfp-0042") == "fieldlink/v1/mfp-0042/cmd/result"
    assert topics.parse_device_topic("fieldlink/v1/mfp-0042/cmd/result") == (
        "mfp-0042",
        "cmd/result",
    )
    assert all(f.startswith("$share/fieldlink-ingest/") for f in topics.ingest_filters())


@pytest.mark.parametrize(
    "topic",
    ["fieldlink/v1/MFP/telemetry", "fieldlink/v2/mfp/telemetry", "fieldlink/v1/mfp/other", "x"],
)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(ProtocolError):
        topics.parse_device_topic(topic)


def test_server_state_topic_can_never_be_a_device() -> None:
    device_part = topics.SERVER_STATE.split("/")[2]
    assert not is_device_id(device_part)


@pytest.mark.parametrize("good", ["a", "mfp-0042", "0", "a" * 63])
def test_good_ids(good: str) -> None:
    assert check_device_id(good) == good


@pytest.mark.parametrize("bad", ["", "-a", "A", "a_b", "a" * 64, "a/b", "a+b", "é"])
def test_bad_ids(bad: str) -> None:
    with pytest.raises(InvalidDeviceId):
        check_device_id(bad)


def test_derived_ids() -> None:
    assert derive_device_id("mfp", "XK 0042/B") == "mfp-xk-0042-b"
    assert derive_device_id("server", "  --SRV__9-- ") == "server-srv-9"
    assert len(derive_device_id("imaging", "9" * 100)) == 63


def test_times_are_utc_with_z() -> None:
    assert isoformat_z(utcnow()).endswith("Z")
