"""The ingest service: subscribe, validate, batch, write; announce the server; keep the fleet fresh.

One :class:`IngestService` runs per server process. It subscribes through a
shared subscription (``$share/fieldlink-ingest/...``) so several processes split
the fleet's messages. Its threads:

- the ingest thread drives paho (``client.loop()``; PUBLISH packets are decoded by
  :mod:`server.ingest.receive` from 64 KiB reads), validates every payload with
  :func:`shared.models.parse_message` as it arrives (a bad message is counted and
  dropped; it never stops ingestion), hands the valid ones to the writer in
  batches (``ingest_batch_size`` messages; or :data:`GATHER_S` after the first one
  when the socket is drained; or ``ingest_flush_ms`` after it), and only then
  acknowledges them to the broker, after the commit (MQTT 5, manual
  acknowledgements, one write for a batch's PUBACKs);
- the writer thread commits one batch at a time while the ingest thread reads on
  (the database's own work, SQLite's C code or PostgreSQL's round trips, runs
  outside the interpreter lock);
- SQLite: a checkpoint thread runs the WAL checkpoints that SQLite would
  otherwise run inside a commit now and then.

The pieces, each a module of its own: the item types (:mod:`~server.ingest.items`),
validation (:mod:`~server.ingest.validate`), the batching policy
(:mod:`~server.ingest.batcher`), the broker connection (:mod:`~server.ingest.connection`,
with the PUBLISH fast path of :mod:`~server.ingest.receive`), the writer and
checkpoint threads (:mod:`~server.ingest.writer`), one batch's transaction
(:mod:`~server.ingest.store`), the rules that apply it (:mod:`~server.ingest.apply`)
and the per-dialect SQL (:mod:`~server.ingest.rows_sqlite`,
:mod:`~server.ingest.rows_postgres`). This module wires them.

The asyncio loop only starts and stops the ingest and receives the hooks (``on_batch``,
``on_command_result``, ``on_session_event``).

Because a QoS 1 message is acknowledged after its batch is committed, a crash
loses nothing the broker still holds: for a configured ``instance_id`` (a
persistent session) Mosquitto delivers the unacknowledged messages again when
the instance reconnects, and the database's unique ``(device_id, boot_id, seq)``
turns any copy into a cheap, uncounted duplicate. The broker holds back what
exceeds the MQTT 5 Receive Maximum, so a slow database pushes back on the broker
instead of filling the server's memory.

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
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from server import metrics
from server.config import ServerSettings
from server.ingest.batcher import Batcher
from server.ingest.connection import BrokerConnection, default_group, default_instance_id
from server.ingest.items import BatchResult
from server.ingest.store import IngestStore
from server.ingest.validate import Validator
from server.ingest.writer import BatchWriter, Checkpointer
from shared.models import CommandResult, DeviceEvent

logger = logging.getLogger(__name__)

__all__ = ["IngestService", "default_group", "default_instance_id"]

#: How long a stop waits for the broker (unsubscribe, announcement) and for the last batch.
STOP_BROKER_TIMEOUT_S = 2.0
STOP_WRITER_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2 * STOP_BROKER_TIMEOUT_S + STOP_WRITER_TIMEOUT_S + 1.0
#: The longest the ingest thread waits on the socket before it looks at its timers.
POLL_S = 0.1

CommandResultHandler = Callable[[str, CommandResult], None]
SessionEventHandler = Callable[[str, DeviceEvent], None]
BatchHook = Callable[[BatchResult, float], None]


class IngestService:
    """Consumes the fleet's MQTT messages into the database.

    Args:
        settings: The server's settings (broker, batch size and flush time,
            offline and clock-skew limits, retention, threshold rules).
        engine: The database engine; the schema must be migrated already.
        group: The shared-subscription group; default: the center's secret one
            (:func:`default_group`), which no device can know to join.
        on_command_result: Called on the event loop with ``(device_id, result)``
            for each valid ``cmd/result`` message of a registered, unrevoked device.
        on_session_event: Called on the event loop with ``(device_id, event)`` for
            each stored ``session.*`` event (after its batch committed).
        on_batch: Called on the event loop after each committed batch with the
            result and the commit time (``time.time()``); for tests and benchmarks.
        on_gap: Called on the event loop with ``(device_id, telemetry_missing)`` for
            each device that sent samples in a committed batch and has samples counted
            missing (see :mod:`server.ingest.resend`).
    """

    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        *,
        group: str | None = None,
        on_command_result: CommandResultHandler | None = None,
        on_session_event: SessionEventHandler | None = None,
        on_batch: BatchHook | None = None,
        on_gap: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.group = group or default_group(settings)
        self.instance_id = settings.instance_id or default_instance_id()
        #: A configured instance keeps its broker session across restarts: what
        #: arrives while it is away, or was unacknowledged at a crash, comes again.
        self.persistent_session = settings.instance_id is not None
        self.store = IngestStore(engine, settings)
        self.on_command_result = on_command_result
        self.on_session_event = on_session_event
        self.on_batch = on_batch
        self.on_gap = on_gap
        #: Set while connected and subscribed, once the broker holds the server's
        #: announcement (for ``/readyz``).
        self.ready = asyncio.Event()
        #: Serializes batches with the fleet's upkeep (:class:`server.upkeep.FleetUpkeep`:
        #: the same rows).
        self.db_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        # Everything below belongs to the ingest thread.
        self._validate = Validator(settings)
        self._batcher = Batcher(settings.ingest_batch_size, settings.ingest_flush_ms / 1000)
        self._connection: BrokerConnection | None = None
        self._writer: BatchWriter | None = None
        self._received = 0

    # -- lifecycle (the event loop) -----------------------------------------------------

    async def start(self) -> None:
        """Start the ingest thread (it connects and reconnects on its own).

        Raises:
            ConfigError: when the broker URL or its TLS files are wrong.
        """
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._connection = BrokerConnection(
            self.settings,
            instance_id=self.instance_id,
            group=self.group,
            persistent_session=self.persistent_session,
            on_publish=self._on_publish,
            on_ready=lambda: self._call_on_loop(self.ready.set),
            on_lost=lambda: self._call_on_loop(self.ready.clear),
        )
        self._writer = BatchWriter(
            self.store,
            lock=self.db_lock,
            on_committed=self._on_committed,
            wake=self._connection.wake,
        )
        self._stop_requested.clear()
        self._thread = threading.Thread(
            target=self._thread_main, name="fieldlink-ingest", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Commit and acknowledge what arrived, announce the server offline, and disconnect."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop_requested.set()
        await asyncio.to_thread(thread.join, STOP_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("the ingest thread did not stop within %.0f s", STOP_TIMEOUT_S)
        self.ready.clear()
        metrics.INGEST_CONNECTED.set(0)

    async def run(self) -> None:
        """Consume until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())

    # -- the ingest thread: network, validation, batches, acknowledgements -------------

    def _thread_main(self) -> None:
        connection, writer = self._connection, self._writer
        assert connection is not None  # noqa: S101  (set by start())
        assert writer is not None  # noqa: S101
        checkpointer = None
        writer.start()
        if self.engine.dialect.name == "sqlite":
            checkpointer = Checkpointer(self.engine, self.store)
            checkpointer.start()
        try:
            while not self._stop_requested.is_set():
                self._step(connection, POLL_S)
            self._shutdown(connection)
        except Exception:
            logger.exception("the ingest thread failed")
        finally:
            if checkpointer is not None:
                checkpointer.stop(STOP_WRITER_TIMEOUT_S)
            if writer.stop(STOP_WRITER_TIMEOUT_S):
                self.store.close()
            connection.disconnect()

    def _step(self, connection: BrokerConnection, poll_s: float) -> None:
        """One turn: read the broker (or reconnect), then commit what is due."""
        idle = True
        batcher = self._batcher
        if connection.connected:
            timeout = poll_s
            if batcher.gathering:
                # A batch is gathering: the socket is read when it is due (or the writer
                # is done), not on every message that arrives meanwhile.
                due_in = batcher.due(idle=True) - time.monotonic()
                if due_in > 0 and connection.nap(min(due_in, poll_s)):
                    timeout = 0.0
                elif not batcher.in_flight:
                    timeout = min(timeout, max(0.0, due_in))
            idle = connection.read(timeout, self.settings.ingest_batch_size, self._count)
        else:
            connection.reconnect_if_due(poll_s, self._stop_requested)
        self._flush(connection, idle=idle)

    def _count(self) -> int:
        return self._received

    def _flush(self, connection: BrokerConnection, *, idle: bool) -> None:
        """Hand the waiting messages to the writer thread batch by batch when due, and
        acknowledge each batch once it is committed.

        One batch is in flight at a time: this hands it over and returns; a later
        call acknowledges it. Messages without an item (nothing to write) before the
        next item are acknowledged at once.
        """
        batcher, writer = self._batcher, self._writer
        assert writer is not None  # noqa: S101  (set by start())
        if batcher.in_flight:
            ok = writer.outcome()
            if ok is None:
                return  # still committing
            committed = batcher.settle(ok, retry_at=writer.retry_at)
            if not ok:
                return  # the database is down: kept, unacknowledged, retried later
            connection.acknowledge(committed)
        batch, done = batcher.take(time.monotonic(), idle=idle)
        if batch:
            writer.submit(batch)
        elif done:
            connection.acknowledge(done)

    def _shutdown(self, connection: BrokerConnection) -> None:
        """Stop deliveries (clean session), commit and acknowledge, announce, disconnect."""
        batcher = self._batcher
        deadline = time.monotonic() + STOP_BROKER_TIMEOUT_S
        if connection.connected and not self.persistent_session:
            # A clean session's unacknowledged messages die with it: stop the
            # deliveries first, so that everything received can be committed.
            connection.unsubscribe()
            while (
                connection.connected and not connection.unsubscribed and time.monotonic() < deadline
            ):
                self._step(connection, 0.05)
        # What arrives from now on stays unacknowledged: the broker delivers it again.
        batcher.accepting = False
        deadline = time.monotonic() + STOP_WRITER_TIMEOUT_S
        batcher.first_pending_at = 0.0
        while batcher.pending and time.monotonic() < deadline:
            self._step(connection, 0.05)
        if batcher.pending:
            logger.warning(
                "stopping with %d messages not committed (left unacknowledged)",
                len(batcher.pending),
            )
        connection.announce_offline(STOP_BROKER_TIMEOUT_S)

    def _on_publish(
        self, topic: bytes, payload: bytes, mid: int, qos: int, retain: bool, received_at: datetime
    ) -> None:
        """One message from the broker: validated now, kept for the next batch."""
        batcher = self._batcher
        if not batcher.accepting:
            return  # left unacknowledged: the broker delivers it again
        try:
            item = self._validate(topic, payload, retain=retain, received_at=received_at)
        except Exception:
            # Never let one message break the network loop; it is acknowledged and dropped.
            logger.exception("ingest failed on a message on %r", topic)
            metrics.INGEST_MESSAGES.labels("error").inc()
            item = None
        self._received += 1
        connection = self._connection
        generation = connection.generation if connection is not None else 0
        batcher.add(item, mid, qos, generation)

    # -- hooks (called on the writer thread, run on the event loop) ---------------------

    def _on_committed(self, result: BatchResult, committed: float) -> None:
        if self.on_command_result is not None:
            for device_id, command_result in result.command_results:
                self._call_on_loop(self.on_command_result, device_id, command_result)
        if self.on_session_event is not None:
            for device_id, event in result.session_events:
                self._call_on_loop(self.on_session_event, device_id, event)
        if self.on_gap is not None:
            for device_id, missing in result.gap_devices:
                self._call_on_loop(self.on_gap, device_id, missing)
        if self.on_batch is not None:
            self._call_on_loop(self.on_batch, result, committed)

    def _call_on_loop(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the service's event loop (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(callback, *args)
