"""Validation: one message from the broker becomes an item for the writer, or is counted.

Every payload is validated as it arrives, on the ingest thread, with
:func:`shared.models.parse_message`. A bad message is counted
(``fieldlink_ingest_rejected_total{reason}``) and dropped, and when its topic
names a device, a :class:`~server.ingest.items.RejectedItem` carries the
rejection to the device's row; it never stops ingestion. A sample stamped
implausibly far from its receive time is kept, stored at the receive time and
flagged ``ts_untrusted`` (:mod:`server.ingest.timestamps`).

The servers' own retained announcement (``fieldlink/v1/_server/state``) comes
in through the ``+/state`` filter too: it is ignored, not counted as a rejection.

A site gateway's via topic (``fieldlink/v1/{gateway}/via/{device}/...``) carries
the payload the device would send on its own topic; its item names the gateway
(``via``) for the registry check.
"""

from __future__ import annotations

import logging
from datetime import datetime

from server import metrics
from server.config import ServerSettings
from server.ingest.items import (
    CommandResultItem,
    EventItem,
    IngestItem,
    RejectedItem,
    SampleItem,
    StateItem,
)
from server.ingest.timestamps import TimestampBounds
from shared import topics
from shared.errors import ProtocolError
from shared.models import CommandResult, DeviceEvent, DeviceState, HealthSample, parse_message

logger = logging.getLogger(__name__)

#: The servers' announcement (``topics.SERVER_STATE``), as the broker delivers it.
SERVER_STATE_TOPIC = topics.SERVER_STATE.encode()
#: Parsed topics remembered (four a device); the cache starts afresh past this.
TOPIC_CACHE_SIZE = 100_000


class Validator:
    """Turns ``(topic, payload)`` into an :data:`~server.ingest.items.IngestItem`.

    Args:
        settings: The server's settings (the bounds of a plausible ``ts``).
    """

    def __init__(self, settings: ServerSettings) -> None:
        self._ts_bounds = TimestampBounds(settings)
        self._topics: dict[bytes, tuple[str, str, str | None] | tuple[()]] = {}

    def __call__(
        self, topic: bytes, payload: bytes, *, retain: bool, received_at: datetime
    ) -> IngestItem | None:
        """The message as an item for the writer, or ``None`` when there is nothing to write."""
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = parse_topic(topic)
            if len(self._topics) >= TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[topic] = parsed
        if not parsed:
            if topic == SERVER_STATE_TOPIC:
                # The server's own retained announcement matches ``fieldlink/v1/+/state``:
                # every server start would otherwise count it as a rejection.
                metrics.INGEST_MESSAGES.labels("ignored").inc()
                return None
            reject("bad_topic")
            return None
        device_id, kind, via = parsed
        try:
            if kind == "telemetry":
                sample = parse_message(HealthSample, payload)
                check_device(sample.device_id, device_id)
                if not self._ts_bounds.plausible(sample.ts, received_at):
                    # Stored at the receive time and flagged: never the device's
                    # "latest" for years to come, never lost either.
                    logger.debug("%s sent a sample stamped %s", device_id, sample.ts)
                    sample = sample.model_copy(update={"ts": received_at})
                    return SampleItem(device_id, sample, received_at, ts_untrusted=True, via=via)
                return SampleItem(device_id, sample, received_at, via=via)
            if kind == "state":
                if not payload:
                    # Someone cleared the retained state: nothing to learn.
                    metrics.INGEST_MESSAGES.labels("ignored").inc()
                    return None
                state = parse_message(DeviceState, payload)
                return StateItem(device_id, state, retain, received_at, via=via)
            if kind == "events":
                event = parse_message(DeviceEvent, payload)
                check_device(event.device_id, device_id)
                return EventItem(device_id, event, received_at, via=via)
            if kind == "cmd/result":
                result = parse_message(CommandResult, payload)
                return CommandResultItem(device_id, result, received_at)
        except ProtocolError as exc:
            logger.debug("rejected %s message for %s: %s", kind, device_id, exc)
            reject(exc.reason)
            # Counted on the device's row when it is registered.
            return RejectedItem(device_id, exc.reason, via=via)
        metrics.INGEST_MESSAGES.labels("ignored").inc()
        return None


def reject(reason: str) -> None:
    """Count one rejected message."""
    metrics.INGEST_MESSAGES.labels("rejected").inc()
    metrics.INGEST_REJECTED.labels(reason).inc()


def parse_topic(topic: bytes) -> tuple[str, str, str | None] | tuple[()]:
    """``(device_id, kind, gateway)`` of a device topic or a gateway's via topic
    (``gateway`` ``None`` for the device's own), or ``()`` when it is none.

    Whether the registry binds the device to that gateway is checked when the
    batch is written (:func:`server.ingest.apply.admit`: ``not_bound``).
    """
    try:
        return topics.parse_any_topic(topic.decode())
    except (ProtocolError, UnicodeDecodeError):
        return ()


def check_device(claimed: str, topic_device: str) -> None:
    """A payload must name the device of its topic (a device cannot speak for another)."""
    if claimed != topic_device:
        msg = f"payload claims device {claimed!r} on the topic of {topic_device!r}"
        raise ProtocolError(msg, reason="device_mismatch")
