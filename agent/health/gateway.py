"""A site gateway: this agent watches equipment on its LAN over SNMP and speaks for it.

Each ``[[agent.devices]]`` table (:mod:`agent.config_devices`) is a registered
device bound to this agent (``device.via``). Every sampling interval the gateway
polls all of them at once with :class:`~agent.health.collectors.snmp.PrinterMibCollector`
(one pysnmp engine shared by all, each poll bounded in time) and publishes, per
watched device, on ``fieldlink/v1/{gateway}/via/{device}/...`` through the
agent's broker link, with the payloads the device would send itself:

- ``telemetry``: a health sample (its own ``boot_id`` and ``seq``) with the
  Printer-MIB metrics and faults (toner, trays, jams, ``SERIAL-MISMATCH``...);
- ``state``: a retained birth for each device that answers, republished with the
  gateway's own birth (every connection, every server announcement);
  ``{"online": false, "reason": "unreachable"}`` when it stops answering (the
  gateway itself stays online) and a birth when it answers again;
- ``events``: ``inventory.reported`` with what the device says it is (sysDescr,
  serial, model, firmware), at the first answer and whenever it changes.

Samples and state changes wait in the link's bounded event queue while the broker
is away (not in the disk outbox: a watched device's history starts again with the
gateway). When the gateway's own connection drops, the server marks the devices it
watches offline (``gateway_offline``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.config_devices import WatchedDevice
from agent.health.samples import SampleBuilder
from shared import __version__ as AGENT_VERSION
from shared import topics
from shared.ids import isoformat_z, utcnow
from shared.wire import PROTOCOL_VERSION

if TYPE_CHECKING:
    from agent.health.collectors.snmp import PrinterMibCollector, ProfileReading
    from agent.health.link import BrokerLink

logger = logging.getLogger(__name__)

#: The event type of an inventory report (the server keeps it as ``device.inventory``).
INVENTORY_EVENT = "inventory.reported"
#: The offline reason of a watched device that stopped answering.
UNREACHABLE = "unreachable"


def _json(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


class Watched:
    """One watched device's collector and what the gateway last told the server about it."""

    def __init__(self, device: WatchedDevice, collector: PrinterMibCollector) -> None:
        self.device = device
        self.collector = collector
        self.samples = SampleBuilder(device.id)
        #: Whether it answered at the last poll (``None``: not polled yet).
        self.reachable: bool | None = None
        self.inventory: dict[str, str] = {}

    def state(self) -> bytes:
        """Its state message now: a birth, or offline ``unreachable``."""
        message: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "online": bool(self.reachable),
            "ts": isoformat_z(utcnow()),
            "boot_id": self.samples.boot_id,
            "agent_version": AGENT_VERSION,
        }
        if not self.reachable:
            message["reason"] = UNREACHABLE
        return _json(message)


class SiteGateway:
    """Polls the watched devices and publishes for them on this agent's via topics.

    Args:
        gateway_id: This agent's device id (the via topics' prefix).
        devices: The watched devices (``[[agent.devices]]``).
        link: The agent's broker link (publishes; republishes births with its own).
        timeout_s: The time bound of one device's poll.
        engine: An SNMP engine to share (tests); ``None``: one made here, for all.
    """

    def __init__(
        self,
        gateway_id: str,
        devices: Sequence[WatchedDevice],
        link: BrokerLink,
        *,
        timeout_s: float,
        engine: Any = None,
    ) -> None:
        from agent.health.collectors.snmp import PrinterMibCollector, new_engine

        self.gateway_id = gateway_id
        self.link = link
        self.timeout_s = timeout_s
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else new_engine()
        self.watched = [
            Watched(device, PrinterMibCollector(device.target, device.id, self.engine))
            for device in devices
        ]
        link.more_births = self.births

    def _topic(self, device_id: str, kind: topics.ViaTopicKind) -> str:
        return topics.via_topic(self.gateway_id, device_id, kind)

    def births(self) -> list[tuple[str, bytes]]:
        """The retained state of each device polled so far (with the gateway's birth)."""
        return [
            (self._topic(w.device.id, "state"), w.state())
            for w in self.watched
            if w.reachable is not None
        ]

    async def poll_once(self) -> None:
        """Poll every watched device at once and publish what changed and their samples."""
        readings = await asyncio.gather(*(self._poll(w) for w in self.watched))
        for watched, reading in zip(self.watched, readings, strict=True):
            self._publish(watched, reading)

    async def _poll(self, watched: Watched) -> ProfileReading | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await watched.collector.collect()
        except TimeoutError:
            logger.warning(
                "gateway: %s gave no answer within %.1f s", watched.device.id, self.timeout_s
            )
        except Exception:
            logger.exception("gateway: polling %s failed", watched.device.id)
        return None

    def _publish(self, watched: Watched, reading: ProfileReading | None) -> None:
        device_id = watched.device.id
        reachable = reading is not None and reading.reachable
        if reachable != watched.reachable:
            watched.reachable = reachable
            if reachable:
                logger.info("gateway: %s answers", device_id)
            else:
                reason = reading.reason if reading is not None else "timeout"
                logger.warning("gateway: %s is unreachable: %s", device_id, reason)
            self.link.publish_event(self._topic(device_id, "state"), watched.state())
        if reading is None or not reading.reachable:
            return
        if reading.inventory and reading.inventory != watched.inventory:
            watched.inventory = dict(reading.inventory)
            event = {
                "v": PROTOCOL_VERSION,
                "device_id": device_id,
                "ts": isoformat_z(utcnow()),
                "type": INVENTORY_EVENT,
                "body": watched.inventory,
            }
            self.link.publish_event(self._topic(device_id, "events"), _json(event))
        # No ``sent_at``: the sample may wait in the queue; the server takes its receive time.
        payload = watched.samples.build(reading)
        self.link.publish_event(self._topic(device_id, "telemetry"), payload)

    async def run(self, stopping: asyncio.Event, interval_s: float) -> None:
        """Poll every ``interval_s`` until ``stopping`` is set; then release the engine."""
        try:
            next_at = time.monotonic()
            while not stopping.is_set():
                await self.poll_once()
                next_at = max(next_at + interval_s, time.monotonic())
                try:
                    async with asyncio.timeout(next_at - time.monotonic()):
                        await stopping.wait()
                except TimeoutError:
                    pass
        finally:
            self.close()

    def close(self) -> None:
        """Release the collectors' sockets and the shared engine (if made here)."""
        for watched in self.watched:
            watched.collector.close()
        if self._owns_engine:
            self.engine.close_dispatcher()
