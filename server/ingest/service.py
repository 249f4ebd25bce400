"""The ingest service: subscribe, validate, batch, write; announce the server; keep the fleet fresh.

One :class:`IngestService` runs per server process. It subscribes through a
shared subscription (``$share/fieldlink-ingest/...``) so several processes split
the fleet's messages, validates every payload with :func:`shared.protocol.parse_message`,
and hands valid messages to a writer that stores them in batches on a worker
thread. A bad message is counted and dropped; it never stops ingestion.

The app's lifespan::

    ingest = IngestService(settings, engine)
    await ingest.start()
    ...
    await ingest.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import aiomqtt
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from server import metrics
from server.config import ServerSettings
from server.ingest import maintenance
from server.ingest.store import (
    BatchResult,
    EventItem,
    IngestItem,
    IngestStore,
    RejectedItem,
    SampleItem,
    StateItem,
)
from server.mqtt import make_client
from shared import topics
from shared.errors import ProtocolError
from shared.ids import new_id, utcnow
from shared.protocol import (
    CommandResult,
    DeviceEvent,
    DeviceState,
    HealthSample,
    ServerState,
    dump_message,
    parse_message,
)

logger = logging.getLogger(__name__)

#: Reconnect backoff bounds (seconds); each wait is drawn uniformly below the bound.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
#: The interpreter's thread switch interval while the ingest runs (the default is 5 ms).
GIL_SWITCH_INTERVAL_S = 0.0005
#: A warning is logged when this many batches wait for the writer.
MAX_PENDING_BATCHES = 20

CommandResultHandler = Callable[[str, CommandResult], None]
BatchHook = Callable[[BatchResult, float], None]


def default_instance_id() -> str:
    """``<hostname>-<8 hex>``: unique per process when none is configured."""
    return f"{socket.gethostname()}-{new_id()[:8]}".lower()


class IngestService:
    """Consumes the fleet's MQTT messages into the database.

    Args:
        settings: The server's settings (broker, batch size and flush time,
            offline and clock-skew limits, retention, threshold rules).
        engine: The database engine; the schema must be migrated already.
        group: The shared-subscription group (one per deployment).
        sweep_interval_s: How often silent devices are marked offline and the
            gauges refreshed (default: a third of ``offline_after_s``, at most 15 s).
        maintenance_interval_s: How often rollups and retention run.
        on_command_result: Called on the event loop with ``(device_id, result)``
            for each valid ``cmd/result`` message.
        on_batch: Called after each committed batch with the result and the
            commit time (``time.time()``); for tests and benchmarks.
    """

    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        *,
        group: str = topics.INGEST_GROUP,
        sweep_interval_s: float | None = None,
        maintenance_interval_s: float = 300.0,
        on_command_result: CommandResultHandler | None = None,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.group = group
        self.instance_id = settings.instance_id or default_instance_id()
        self.store = IngestStore(engine, settings)
        self.sweep_interval_s = sweep_interval_s or min(settings.offline_after_s / 3, 15.0)
        self.maintenance_interval_s = maintenance_interval_s
        self.on_command_result = on_command_result
        self.on_batch = on_batch
        #: Set while connected and subscribed (for ``/readyz``).
        self.ready = asyncio.Event()
        self._pending: list[IngestItem] = []
        self._has_items = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._db_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_rollup = utcnow() - timedelta(hours=2)
        self._pending_warning = settings.ingest_batch_size * MAX_PENDING_BATCHES

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Run :meth:`run` in a background task."""
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            # The event loop (reading the broker) and the writer thread share the GIL;
            # at the default 5 ms the loop waits behind each batch and throughput halves.
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="fieldlink-ingest")

    async def stop(self) -> None:
        """Announce the server offline, write what is pending, and stop."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def run(self) -> None:
        """Consume until cancelled, reconnecting to the broker with jittered backoff."""
        workers = [
            asyncio.create_task(self._write_loop(), name="fieldlink-ingest-writer"),
            asyncio.create_task(self._sweep_loop(), name="fieldlink-ingest-sweeper"),
            asyncio.create_task(self._maintenance_loop(), name="fieldlink-ingest-maintenance"),
        ]
        try:
            await self._connection_loop()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # What arrived before the stop is written, not lost.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flush())
            self.ready.clear()
            metrics.INGEST_CONNECTED.set(0)

    # -- MQTT ---------------------------------------------------------------------------

    def _announcement(self, *, online: bool) -> bytes:
        return dump_message(ServerState(online=online, ts=utcnow(), instance=self.instance_id))

    async def _connection_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        connected_before = False

        def subscribed() -> None:
            # The next loss starts the backoff afresh.
            nonlocal backoff, connected_before
            backoff = BACKOFF_MIN_S
            if connected_before:
                metrics.INGEST_RECONNECTS.inc()
            connected_before = True

        while True:
            try:
                await self._session(subscribed)
            except aiomqtt.MqttError as exc:
                self.ready.clear()
                metrics.INGEST_CONNECTED.set(0)
                delay = random.uniform(BACKOFF_MIN_S / 2, backoff)  # noqa: S311  (jitter, not crypto)
                logger.warning("broker connection failed: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _session(self, subscribed: Callable[[], None]) -> None:
        """One broker connection: subscribe, announce, consume until it drops."""
        will = aiomqtt.Will(
            topics.SERVER_STATE, self._announcement(online=False), qos=1, retain=True
        )
        client = make_client(
            self.settings,
            identifier=f"fieldlink-ingest-{self.instance_id}",
            will=will,
            queue_type=_handler_queue(self._handle_message),
            # A configured instance keeps its session: the broker queues what arrives
            # while it restarts. A random one would only leave orphan sessions behind.
            clean_session=self.settings.instance_id is None,
        )
        async with client:
            await client.subscribe([(f, 1) for f in topics.ingest_filters(self.group)])
            await client.publish(
                topics.SERVER_STATE, self._announcement(online=True), qos=1, retain=True
            )
            self.ready.set()
            metrics.INGEST_CONNECTED.set(1)
            logger.info(
                "ingest %s subscribed to %s as group %r",
                self.instance_id,
                topics.PREFIX,
                self.group,
            )
            subscribed()
            try:
                # Messages are handled as they arrive (see _handler_queue); this
                # loop only waits for the connection to drop.
                async for message in client.messages:
                    self._handle_message(message)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        client.publish(
                            topics.SERVER_STATE,
                            self._announcement(online=False),
                            qos=1,
                            retain=True,
                        ),
                        timeout=2.0,
                    )
                raise

    # -- validation ---------------------------------------------------------------------

    def _handle_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode() if payload is not None else b""
        self.handle(message.topic.value, bytes(payload), retain=message.retain)
        if len(self._pending) >= self._pending_warning:
            self._pending_warning *= 2
            logger.warning(
                "ingest is behind: %d messages wait for the database", len(self._pending)
            )

    def handle(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Validate one message and queue it for the writer (or count its rejection)."""
        try:
            device_id, kind = topics.parse_device_topic(topic)
        except ProtocolError:
            self._reject("bad_topic", None)
            return
        received_at = utcnow()
        item: IngestItem
        try:
            if kind == "telemetry":
                sample = parse_message(HealthSample, payload)
                _check_device(sample.device_id, device_id)
                item = SampleItem(device_id, sample, received_at)
            elif kind == "state":
                if not payload:
                    # Someone cleared the retained state: nothing to learn.
                    metrics.INGEST_MESSAGES.labels("ignored").inc()
                    return
                item = StateItem(
                    device_id, parse_message(DeviceState, payload), retain, received_at
                )
            elif kind == "events":
                event = parse_message(DeviceEvent, payload)
                _check_device(event.device_id, device_id)
                item = EventItem(device_id, event, received_at)
            elif kind == "cmd/result":
                result = parse_message(CommandResult, payload)
                metrics.INGEST_MESSAGES.labels("command_result").inc()
                if self.on_command_result is not None:
                    self.on_command_result(device_id, result)
                return
            else:
                metrics.INGEST_MESSAGES.labels("ignored").inc()
                return
        except ProtocolError as exc:
            logger.debug("rejected %s message for %s: %s", kind, device_id, exc)
            self._reject(exc.reason, device_id)
            return
        self._enqueue(item)

    def _reject(self, reason: str, device_id: str | None) -> None:
        metrics.INGEST_MESSAGES.labels("rejected").inc()
        metrics.INGEST_REJECTED.labels(reason).inc()
        if device_id is not None:
            self._enqueue(RejectedItem(device_id, reason))

    def _enqueue(self, item: IngestItem) -> None:
        self._pending.append(item)
        self._has_items.set()
        if len(self._pending) >= self.settings.ingest_batch_size:
            self._batch_full.set()

    # -- the writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        flush_s = self.settings.ingest_flush_ms / 1000
        while True:
            await self._has_items.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_full.wait(), timeout=flush_s)
            await self._flush()

    async def _flush(self) -> None:
        """Write everything pending, batch by batch, until nothing is left."""
        size = self.settings.ingest_batch_size
        while self._pending:
            batch, self._pending = self._pending[:size], self._pending[size:]
            if len(self._pending) < size:
                self._batch_full.clear()
            if not self._pending:
                self._has_items.clear()
            metrics.INGEST_QUEUE_DEPTH.set(len(self._pending))
            await self._write(batch)
        self._pending_warning = self.settings.ingest_batch_size * MAX_PENDING_BATCHES

    async def _write(self, batch: list[IngestItem]) -> None:
        started = time.perf_counter()
        backoff = BACKOFF_MIN_S
        while True:
            try:
                async with self._db_lock:
                    result = await asyncio.to_thread(self.store.write, batch)
                break
            except (OperationalError, DBAPIError) as exc:
                if not _unavailable(exc):
                    await self._write_one_by_one(batch)
                    return
                # The database is down: keep the batch and try again.
                logger.warning("database unavailable for ingest: %s", exc.orig)
                await asyncio.sleep(random.uniform(BACKOFF_MIN_S / 2, backoff))  # noqa: S311
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        self._account(result, len(batch), time.perf_counter() - started)

    async def _write_one_by_one(self, batch: list[IngestItem]) -> None:
        """A batch failed on its data: write its items alone and drop the ones that fail."""
        for item in batch:
            try:
                async with self._db_lock:
                    result = await asyncio.to_thread(self.store.write, [item])
            except Exception:
                logger.exception(
                    "dropped one %s message for %s", type(item).__name__, item.device_id
                )
                metrics.INGEST_MESSAGES.labels("error").inc()
                continue
            self._account(result, 1, 0.0)

    def _account(self, result: BatchResult, size: int, seconds: float) -> None:
        committed = time.time()
        metrics.INGEST_BATCH_SIZE.observe(size)
        if seconds:
            metrics.INGEST_FLUSH_SECONDS.observe(seconds)
        counts = {
            "stored": result.stored,
            "duplicate": result.duplicates,
            "state": result.states - result.stale_states,
            "stale_state": result.stale_states,
            "event": result.events,
        }
        for label, count in counts.items():
            if count:
                metrics.INGEST_MESSAGES.labels(label).inc(count)
        if result.unregistered:
            metrics.INGEST_MESSAGES.labels("rejected").inc(result.unregistered)
            metrics.INGEST_REJECTED.labels("unregistered").inc(result.unregistered)
        if result.missing_delta > 0:
            metrics.TELEMETRY_MISSING.inc(result.missing_delta)
        if result.late:
            metrics.TELEMETRY_LATE.inc(result.late)
        if result.outbox_dropped:
            metrics.OUTBOX_DROPPED.inc(result.outbox_dropped)
        for sent in result.stored_sent_times:
            metrics.INGEST_LATENCY.observe(max(0.0, committed - sent))
        if self.on_batch is not None:
            self.on_batch(result, committed)

    # -- upkeep -------------------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Mark silent devices offline and refresh the fleet gauges; returns those marked."""
        async with self._db_lock:
            silent = await asyncio.to_thread(
                maintenance.mark_silent, self.engine, self.settings.offline_after_s, utcnow()
            )
            online, registered, alerts = await asyncio.to_thread(
                maintenance.fleet_counts, self.engine
            )
        metrics.DEVICES_ONLINE.set(online)
        metrics.DEVICES_REGISTERED.set(registered)
        metrics.ALERTS_OPEN.set(alerts)
        return silent

    async def run_maintenance(self) -> None:
        """Roll up the hours that got samples since the last run, then apply retention."""
        now = utcnow()
        async with self._db_lock:
            rows = await asyncio.to_thread(
                maintenance.rollup_hours, self.engine, self._last_rollup - timedelta(minutes=1)
            )
            samples, rollups = await asyncio.to_thread(
                maintenance.purge_old, self.engine, self.settings, now
            )
        self._last_rollup = now
        logger.info(
            "rollups: %d rows written; retention: %d samples and %d rollups deleted",
            rows,
            samples,
            rollups,
        )

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except (OperationalError, DBAPIError) as exc:
                logger.warning("sweep failed: %s", exc.orig)
            await asyncio.sleep(self.sweep_interval_s)

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(self.maintenance_interval_s)
            try:
                await self.run_maintenance()
            except (OperationalError, DBAPIError) as exc:
                logger.warning("rollup or retention failed: %s", exc.orig)


def _handler_queue(
    handler: Callable[[aiomqtt.Message], None],
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """An aiomqtt queue class that hands each message to ``handler`` as it arrives.

    aiomqtt's message iterator costs a task and a wait per message, which
    halves what one core can take in; validating in the receive callback (on
    the event loop, where aiomqtt reads the socket) keeps up with the broker.
    """

    class HandlerQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            try:
                handler(item)
            except Exception:
                # Never let one message break the connection's read loop.
                logger.exception("ingest failed on a message on %s", item.topic.value)

    return HandlerQueue


def _check_device(claimed: str, topic_device: str) -> None:
    if claimed != topic_device:
        msg = f"payload claims device {claimed!r} on the topic of {topic_device!r}"
        raise ProtocolError(msg, reason="device_mismatch")


def _unavailable(exc: DBAPIError) -> bool:
    """Whether the error means the database is unreachable (retry) rather than bad data."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)
