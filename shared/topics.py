"""MQTT topic names of protocol version 1 (docs/protocol.md)."""

from __future__ import annotations

from typing import Final, Literal

from shared.errors import ProtocolError
from shared.ids import is_device_id

PREFIX: Final = "fieldlink/v1"
DeviceTopicKind = Literal["telemetry", "state", "events", "cmd", "cmd/result"]
DEVICE_TOPIC_KINDS: Final[tuple[DeviceTopicKind, ...]] = (
    "telemetry",
    "state",
    "events",
    "cmd",
    "cmd/result",
)
#: What a site gateway publishes for a device it watches over the network.
ViaTopicKind = Literal["telemetry", "state", "events"]
VIA_TOPIC_KINDS: Final[tuple[ViaTopicKind, ...]] = ("telemetry", "state", "events")
#: The level between a gateway's id and a watched device's id.
VIA: Final = "via"
#: The server's retained announcement; ``_server`` can never be a device id.
SERVER_STATE: Final = f"{PREFIX}/_server/state"
#: The shared-subscription group that splits ingest among server processes.
INGEST_GROUP: Final = "fieldlink-ingest"


def device_topic(device_id: str, kind: DeviceTopicKind) -> str:
    """The topic of ``kind`` for one device, e.g. ``fieldlink/v1/mfp-0042/telemetry``."""
    return f"{PREFIX}/{device_id}/{kind}"


def telemetry(device_id: str) -> str:
    """Health samples from the agent."""
    return device_topic(device_id, "telemetry")


def state(device_id: str) -> str:
    """Retained birth from the agent and last will from the broker."""
    return device_topic(device_id, "state")


def events(device_id: str) -> str:
    """Faults raised and cleared, session and policy events."""
    return device_topic(device_id, "events")


def cmd(device_id: str) -> str:
    """Signed commands from the server."""
    return device_topic(device_id, "cmd")


def cmd_result(device_id: str) -> str:
    """Results of commands, from the agent."""
    return device_topic(device_id, "cmd/result")


def via_topic(gateway_id: str, device_id: str, kind: ViaTopicKind) -> str:
    """A watched device's topic under its gateway's prefix.

    ``fieldlink/v1/{gateway}/via/{device}/{kind}``: the broker lets a gateway write
    under its own prefix only, and the server accepts the message only when the
    registry binds ``device`` to ``gateway`` (``device.via``). The payload is the
    one the device would publish on its own topic.
    """
    return f"{PREFIX}/{gateway_id}/{VIA}/{device_id}/{kind}"


def ingest_filters(group: str = INGEST_GROUP) -> list[str]:
    """Shared-subscription filters through which server processes split the fleet's messages."""
    own = [
        f"$share/{group}/{PREFIX}/+/{kind}"
        for kind in ("telemetry", "state", "events", "cmd/result")
    ]
    return own + [f"$share/{group}/{PREFIX}/+/{VIA}/+/{kind}" for kind in VIA_TOPIC_KINDS]


def parse_device_topic(topic: str) -> tuple[str, DeviceTopicKind]:
    """Split a device topic into its device id and kind.

    Raises:
        ProtocolError: with reason ``bad_topic`` when the topic is not a device topic.
    """
    parts = topic.split("/", 3)
    if len(parts) == 4 and f"{parts[0]}/{parts[1]}" == PREFIX:
        device_id, kind = parts[2], parts[3]
        if is_device_id(device_id) and kind in DEVICE_TOPIC_KINDS:
            return device_id, kind
    msg = f"not a fieldlink device topic: {topic!r}"
    raise ProtocolError(msg, reason="bad_topic")


def parse_via_topic(topic: str) -> tuple[str, str, ViaTopicKind]:
    """Split a gateway's topic for a watched device into ``(gateway, device, kind)``.

    Raises:
        ProtocolError: with reason ``bad_topic`` when the topic is not a via topic.
    """
    parts = topic.split("/")
    if len(parts) == 6 and f"{parts[0]}/{parts[1]}" == PREFIX and parts[3] == VIA:
        gateway_id, device_id, kind = parts[2], parts[4], parts[5]
        if is_device_id(gateway_id) and is_device_id(device_id):
            for known in VIA_TOPIC_KINDS:
                if kind == known:
                    return gateway_id, device_id, known
    msg = f"not a fieldlink via topic: {topic!r}"
    raise ProtocolError(msg, reason="bad_topic")


def parse_any_topic(topic: str) -> tuple[str, DeviceTopicKind, str | None]:
    """``(device, kind, gateway)`` of a device's own topic (gateway ``None``) or a via topic.

    Raises:
        ProtocolError: with reason ``bad_topic`` when the topic is neither.
    """
    # fieldlink/v1/{gateway}/via/{device}/{kind}: five slashes; cmd/result has four.
    if topic.count("/") == 5:
        gateway_id, device_id, kind = parse_via_topic(topic)
        return device_id, kind, gateway_id
    device_id, own_kind = parse_device_topic(topic)
    return device_id, own_kind, None
