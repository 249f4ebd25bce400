"""A site gateway's topics for the devices it watches (docs/protocol.md, "Site gateways")."""

from __future__ import annotations

import pytest

from shared import topics
from shared.errors import ProtocolError


def test_via_topics_sit_under_the_gateway_prefix() -> None:
    topic = topics.via_topic("server-gw", "mfp-3f-east", "telemetry")
    assert topic == "fieldlink/v1/server-gw/via/mfp-3f-east/telemetry"
    assert topics.parse_via_topic(topic) == ("server-gw", "mfp-3f-east", "telemetry")
    assert topics.parse_any_topic(topic) == ("mfp-3f-east", "telemetry", "server-gw")


def test_own_topics_parse_without_a_gateway_even_for_a_device_named_via() -> None:
    assert topics.parse_any_topic("fieldlink/v1/via/telemetry") == ("via", "telemetry", None)
    assert topics.parse_any_topic("fieldlink/v1/mfp-1/cmd/result") == ("mfp-1", "cmd/result", None)


def test_the_ingest_subscribes_to_the_via_topics() -> None:
    filters = topics.ingest_filters("g")
    for kind in ("telemetry", "state", "events"):
        assert f"$share/g/fieldlink/v1/+/via/+/{kind}" in filters
    assert "$share/g/fieldlink/v1/+/via/+/cmd" not in filters


@pytest.mark.parametrize(
    "topic",
    [
        "fieldlink/v1/server-gw/via/mfp-1/cmd",
        "fieldlink/v1/server-gw/via/mfp-1/cmd/result",
        "fieldlink/v1/server-gw/via/MFP/telemetry",
        "fieldlink/v1/GW/via/mfp-1/telemetry",
        "fieldlink/v1/server-gw/over/mfp-1/telemetry",
        "fieldlink/v2/server-gw/via/mfp-1/telemetry",
        "fieldlink/v1/server-gw/via/mfp-1/telemetry/x",
        "fieldlink/v1/_server/via/mfp-1/state",
    ],
)
def test_bad_via_topics(topic: str) -> None:
    with pytest.raises(ProtocolError):
        topics.parse_any_topic(topic)
