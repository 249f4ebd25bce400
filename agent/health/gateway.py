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
rarer state changes and inventory reports go through the link's event queue.

Like a device's own samples (:mod:`agent.health.link`), an acknowledged sample is
only marked sent and kept for the resend window (``resend_window_s``,
``resend_max_samples``): a PUBACK proves only that the broker took it. After a
broker restart the gateway may reconnect and drain its backlog before the server
has subscribed again, and a sample acknowledged just before the broker stopped may
never have reached the server. So when a server announces itself, the gateway
re-publishes, oldest first and before newer samples, what it sent since the start
of its previous connection that is still in the window; the server stores each
``(device_id, boot_id, seq)`` once. When
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
from agent.health.outbox import (
    DEFAULT_RESEND_MAX_SAMPLES,
    DEFAULT_RESEND_WINDOW_S,
    Outbox,
    SqliteOutbox,
)
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
        resend_window_s: Seconds an acknowledged sample is kept for a resend.
        resend_max_samples: Acknowledged samples kept for a resend, at most (0: none).
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
        resend_window_s: float = DEFAULT_RESEND_WINDOW_S,
        resend_max_samples: int = DEFAULT_RESEND_MAX_SAMPLES,
        engine: Any = None,
    ) -> None:
        from agent.health.collectors.snmp import PrinterMibCollector, new_engine

        self.gateway_id = gateway_id
        self.link = link
        self.timeout_s = timeout_s
        self.state_dir = state_dir
        self.max_samples = max_samples
        self.resend_window_s = resend_window_s
        self.resend_max_samples = resend_max_samples
        self.outbox: Outbox | None = None
        self._wake = asyncio.Event()
        #: Samples the broker acknowledged (first sends).
        self.published = 0
        #: Samples re-published after a server announced itself.
        self.resent = 0
        # The link connection the drainer last published on (``link.connections``).
        self._connection = 0
        # Outbox id of the first sample published on the current / previous connection.
        self._connection_first_id: int | None = None
        self._previous_first_id: int | None = None
        # Next outbox id to re-publish while a resend is under way (None: no resend).
        self._resend_cursor: int | None = None
        # Bumped by each announcement, so a resend under way starts over from the top.
        self._resend_generation = 0
        self._resend_count = 0
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else new_engine()
        self.watched = [
            Watched(device, PrinterMibCollector(device.target, device.id, self.engine))
            for device in devices
        ]
        link.more_births = self.births
        link.on_server_announced = self.request_resend

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

    def watches(self, device_id: str) -> bool:
        """Whether ``device_id`` is one of the devices this gateway watches."""
        return any(w.device.id == device_id for w in self.watched)

    def request_resend(self) -> None:
        """A server announced itself: re-publish what the previous and current connections sent.

        The previous connection's too: what the broker acknowledged just before it
        went away may never have reached the server.
        """
        first = self._previous_first_id
        if first is None:
            first = self._connection_first_id
        if first is None:
            return
        if self._resend_cursor is not None:
            first = min(first, self._resend_cursor)
        self._resend_cursor = first
        self._resend_generation += 1
        self._resend_count = 0
        self._wake.set()

    def _note_connection(self) -> None:
        """On the link's first publish of a new connection, move the resend range on."""
        if self.link.connections == self._connection:
            return
        self._connection = self.link.connections
        self._previous_first_id = self._connection_first_id
        # A resend cut short by the lost connection goes on on this one.
        self._connection_first_id = self._resend_cursor

    async def _publish_sample(self, stored: bytes) -> None:
        device_id, _, payload = stored.partition(b"\n")
        topic = self._topic(device_id.decode(), "telemetry")
        await self.link.publish_now(topic, with_sent_at(payload))

    async def _resend_step(self, outbox: Outbox, cursor: int) -> None:
        """Re-publish the next window of sent samples from ``cursor`` on."""
        generation = self._resend_generation
        batch = await outbox.sent_since(cursor, PUBLISH_WINDOW)
        if not batch:
            if generation == self._resend_generation:
                self._resend_cursor = None
                logger.info("gateway: re-sent %d watched devices' samples", self._resend_count)
                await outbox.prune()
            return
        try:
            for row_id, stored in batch:
                await self._publish_sample(stored)
                self.resent += 1
                self._resend_count += 1
                if generation == self._resend_generation:
                    self._resend_cursor = row_id + 1
        except aiomqtt.MqttError as exc:
            logger.info("gateway: re-sent samples wait for the broker (%s)", exc)
            await asyncio.sleep(RETRY_S)

    async def _drain(self, outbox: Outbox) -> None:
        """Publish the stored samples in order whenever the broker is there.

        A resend asked by a server's announcement goes first, then newer samples.
        """
        while True:
            self._wake.clear()
            await self.link.connected.wait()
            self._note_connection()
            if self._resend_cursor is not None:
                await self._resend_step(outbox, self._resend_cursor)
                continue
            batch = await outbox.peek(PUBLISH_WINDOW)
            if not batch:
                await self._wake.wait()
                continue
            if self._connection_first_id is None:
                self._connection_first_id = batch[0][0]
            acked: list[int] = []
            try:
                for row_id, stored in batch:
                    await self._publish_sample(stored)
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
            self.state_dir / "via",
            self.max_samples,
            resend_window_s=self.resend_window_s,
            resend_max_samples=self.resend_max_samples,
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
