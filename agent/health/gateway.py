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

The watched devices' samples wait in an outbox of their own on disk
(``state_dir/via/outbox.sqlite3``, bounded by ``outbox_max_samples``, oldest dropped
first), published in order once the broker is there, each with its ``sent_at``; the
rarer state changes and inventory reports go through the link's event queue. When
the gateway's own connection drops, the server marks the devices it watches offline
(``gateway_offline``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from agent.config_devices import WatchedDevice
from agent.health.outbox import Outbox, SqliteOutbox
from agent.health.samples import SampleBuilder, with_sent_at
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
#: Samples published at once from the watched devices' outbox.
PUBLISH_WINDOW = 20
#: Seconds between attempts when the broker refused a sample.
RETRY_S = 1.0


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
        state_dir: The agent's state folder (the samples' outbox goes in ``via/``).
        max_samples: How many unsent samples the outbox holds (all devices together).
        engine: An SNMP engine to share (tests); ``None``: one made here, for all.
    """

    def __init__(
        self,
        gateway_id: str,
        devices: Sequence[WatchedDevice],
        link: BrokerLink,
        *,
        timeout_s: float,
        state_dir: Path,
        max_samples: int,
        engine: Any = None,
    ) -> None:
        from agent.health.collectors.snmp import PrinterMibCollector, new_engine

        self.gateway_id = gateway_id
        self.link = link
        self.timeout_s = timeout_s
        self.state_dir = state_dir
        self.max_samples = max_samples
        self.outbox: Outbox | None = None
        self._wake = asyncio.Event()
        #: Samples the broker acknowledged.
        self.published = 0
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
        """Poll every watched device at once; publish what changed, store their samples."""
        readings = await asyncio.gather(*(self._poll(w) for w in self.watched))
        for watched, reading in zip(self.watched, readings, strict=True):
            sample = self._publish(watched, reading)
            if sample is not None and self.outbox is not None:
                await self.outbox.put(watched.device.id.encode() + b"\n" + sample)
                self._wake.set()

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

    def _publish(self, watched: Watched, reading: ProfileReading | None) -> bytes | None:
        """Publish a state change and a new inventory; the sample to store, if any."""
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
            return None
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
        return watched.samples.build(reading)

    async def _drain(self, outbox: Outbox) -> None:
        """Publish the stored samples in order whenever the broker is there."""
        while True:
            batch = await outbox.peek(PUBLISH_WINDOW)
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.link.connected.wait()
            acked: list[int] = []
            try:
                for row_id, stored in batch:
                    device_id, _, payload = stored.partition(b"\n")
                    topic = self._topic(device_id.decode(), "telemetry")
                    await self.link.publish_now(topic, with_sent_at(payload))
                    acked.append(row_id)
            except aiomqtt.MqttError as exc:
                logger.info("gateway: samples wait for the broker (%s)", exc)
                await asyncio.sleep(RETRY_S)
            finally:
                await outbox.mark_sent(acked)
                self.published += len(acked)

    async def run(self, stopping: asyncio.Event, interval_s: float) -> None:
        """Poll every ``interval_s`` until ``stopping`` is set; then release the engine."""
        outbox = await SqliteOutbox.open(
            self.state_dir / "via", self.max_samples, resend_max_samples=0
        )
        self.outbox = outbox
        drainer = asyncio.create_task(self._drain(outbox))
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
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
            self.outbox = None
            await outbox.close()
            self.close()

    def close(self) -> None:
        """Release the collectors' sockets and the shared engine (if made here)."""
        for watched in self.watched:
            watched.collector.close()
        if self._owns_engine:
            self.engine.close_dispatcher()
