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

The asyncio loop only starts and stops the ingest, sweeps silent devices, runs
rollups and retention, and receives the hooks (``on_batch``,
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
import queue
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from provisioning.broker import ingest_group
from provisioning.ca import CaNotInitialized, CertificateAuthority
from server import metrics
from server.config import ServerSettings
from server.ingest import maintenance, receive
from server.ingest.store import (
    BatchResult,
    CommandResultItem,
    EventItem,
    IngestItem,
    IngestStore,
    RejectedItem,
    SampleItem,
    StateItem,
)
from server.ingest.timestamps import TimestampBounds
from server.mqtt import broker_endpoint, make_paho_client
from shared import topics
from shared.errors import ProtocolError
from shared.ids import new_id, utcnow
from shared.models import (
    CommandResult,
    DeviceEvent,
    DeviceState,
    HealthSample,
    ServerState,
    dump_message,
    parse_message,
)

logger = logging.getLogger(__name__)

#: Reconnect and database retry backoff bounds (seconds); each wait is drawn
#: uniformly below the bound, which doubles on each failure.
BACKOFF_MIN_S = 0.5
# The server is one client per process, not a fleet: no herd to spread, and every second
# away from the broker is a second in which agents' samples reach nobody.
BACKOFF_MAX_S = 5.0
#: Unacknowledged messages the broker may have in flight to this ingest (MQTT 5
#: Receive Maximum), in batches: enough that the next batches arrive while one commits.
RECEIVE_MAXIMUM_BATCHES = 4
#: Session expiry of a configured instance: the broker keeps its session while it is away.
PERSISTENT_SESSION_EXPIRY_S = 0xFFFFFFFF
KEEPALIVE_S = 30
#: How long a stop waits for the broker (unsubscribe, announcement) and for the last batch.
STOP_BROKER_TIMEOUT_S = 2.0
STOP_WRITER_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2 * STOP_BROKER_TIMEOUT_S + STOP_WRITER_TIMEOUT_S + 1.0
#: With the broker's socket drained and the writer free, a batch is handed over once
#: its first message is this old (at most ``ingest_flush_ms``). Under load the writer
#: is busy longer than this and batches grow with the backlog; when the load is light,
#: this keeps the batches (each a commit rewriting whole pages) to about 100 a second.
GATHER_S = 0.01
#: The longest the ingest thread waits on the socket before it looks at its timers.
POLL_S = 0.1
#: SQLite: how often the WAL is checkpointed, on a thread of its own.
CHECKPOINT_INTERVAL_S = 1.0
#: Parsed topics remembered (four a device); the cache starts afresh past this.
TOPIC_CACHE_SIZE = 100_000

CommandResultHandler = Callable[[str, CommandResult], None]
SessionEventHandler = Callable[[str, DeviceEvent], None]
BatchHook = Callable[[BatchResult, float], None]
#: A received message: its item (``None``: nothing to write), mid, QoS, connection generation.
_Pending = tuple[IngestItem | None, int, int, int]


def default_group(settings: ServerSettings) -> str:
    """The center's shared-subscription group (:func:`provisioning.broker.ingest_group`).

    Mosquitto 2.0 lets any client SUBSCRIBE to any ``$share/<group>/...`` (its ACL
    file only filters delivery), and a device that joined the server's group would
    be handed a share of the fleet's messages that the ACL then drops: the name is
    a secret derived from the center's keys. Without a CA (a demo on the embedded,
    loopback-only broker) it is the documented :data:`shared.topics.INGEST_GROUP`.
    """
    try:
        ca = CertificateAuthority.load(settings.state_dir)
    except CaNotInitialized:
        return topics.INGEST_GROUP
    return ingest_group(ca)


def default_instance_id() -> str:
    """``<hostname>-<8 hex>``: unique per process when none is configured."""
    return f"{socket.gethostname()}-{new_id()[:8]}".lower()


class IngestService:
    """Consumes the fleet's MQTT messages into the database.

    Args:
        settings: The server's settings (broker, batch size and flush time,
            offline and clock-skew limits, retention, threshold rules).
        engine: The database engine; the schema must be migrated already.
        group: The shared-subscription group; default: the center's secret one
            (:func:`default_group`), which no device can know to join.
        sweep_interval_s: How often silent devices are marked offline and the
            gauges refreshed (default: a third of ``offline_after_s``, at most 15 s).
        maintenance_interval_s: How often rollups and retention run.
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
        sweep_interval_s: float | None = None,
        maintenance_interval_s: float = 300.0,
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
        self.sweep_interval_s = sweep_interval_s or min(settings.offline_after_s / 3, 15.0)
        self.maintenance_interval_s = maintenance_interval_s
        self.on_command_result = on_command_result
        self.on_session_event = on_session_event
        self.on_batch = on_batch
        self.on_gap = on_gap
        self._ts_bounds = TimestampBounds(settings)
        #: Set while connected and subscribed, once the broker holds the server's
        #: announcement (for ``/readyz``).
        self.ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._upkeep: asyncio.Task[None] | None = None
        self._stop_requested = threading.Event()
        # Everything below belongs to the ingest thread.
        self._client: paho.Client | None = None
        self._connected = False
        self._connect_at = 0.0
        self._broker_backoff = BACKOFF_MIN_S
        self._connected_before = False
        #: Bumped on every connection: an acknowledgement is only sent on its own one.
        self._generation = 0
        self._subscribe_mid: int | None = None
        self._legacy_unsubscribe_mid: int | None = None
        self._announcement_mid: int | None = None
        self._unsubscribed = False
        self._accepting = True
        #: Received, not yet committed: ``(item or None, mid, qos, connection generation)``.
        self._pending: list[_Pending] = []
        self._pending_items = 0
        #: The first ``_inflight_cut`` pending messages (``_inflight_items`` items) are
        #: being committed by the writer thread (0: no batch in flight).
        self._inflight_cut = 0
        self._inflight_items = 0
        self._write_requests: queue.SimpleQueue[list[IngestItem] | None] = queue.SimpleQueue()
        self._write_outcomes: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._received = 0
        self._topics: dict[bytes, tuple[str, str] | tuple[()]] = {}
        self._reader: receive.PublishReader | None = None
        self._first_pending_at = 0.0
        self._write_at = 0.0
        self._db_backoff = BACKOFF_MIN_S
        self._last_write_s = 0.0
        #: Serializes batches with the sweeper and the maintenance (same rows).
        self._db_lock = threading.Lock()
        self._last_rollup = utcnow() - timedelta(hours=2)

    # -- lifecycle (the event loop) -----------------------------------------------------

    async def start(self) -> None:
        """Start the ingest thread (it connects and reconnects on its own) and the upkeep.

        Raises:
            ConfigError: when the broker URL or its TLS files are wrong.
        """
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._client = self._make_client()
        self._stop_requested.clear()
        self._thread = threading.Thread(
            target=self._thread_main, name="fieldlink-ingest", daemon=True
        )
        self._thread.start()
        self._upkeep = asyncio.create_task(self._upkeep_loop(), name="fieldlink-ingest-upkeep")

    async def stop(self) -> None:
        """Commit and acknowledge what arrived, announce the server offline, and disconnect."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        upkeep, self._upkeep = self._upkeep, None
        if upkeep is not None:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
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

    def _make_client(self) -> paho.Client:
        client = make_paho_client(
            self.settings, client_id=f"fieldlink-ingest-{self.instance_id}", manual_ack=True
        )
        host, port = broker_endpoint(self.settings)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.ReceiveMaximum = min(
            65535, max(100, self.settings.ingest_batch_size * RECEIVE_MAXIMUM_BATCHES)
        )
        if self.persistent_session:
            properties.SessionExpiryInterval = PERSISTENT_SESSION_EXPIRY_S
        client.will_set(topics.SERVER_STATE, self._announcement(online=False), qos=1, retain=True)
        # Only records where and how to connect; the ingest thread connects.
        client.connect_async(
            host,
            port,
            keepalive=KEEPALIVE_S,
            clean_start=not self.persistent_session,
            properties=properties,
        )
        self._reader = (
            receive.PublishReader(client, self._on_publish) if receive.supported(client) else None
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_publish = self._on_published
        client.on_message = self._on_message
        return client

    def _thread_main(self) -> None:
        client = self._client
        assert client is not None  # noqa: S101  (set by start())
        checkpointer = None
        checkpoints_done = threading.Event()
        writer = threading.Thread(
            target=self._writer_main, name="fieldlink-ingest-writer", daemon=True
        )
        writer.start()
        if self.engine.dialect.name == "sqlite":
            self.store.checkpoint_elsewhere = True
            checkpointer = threading.Thread(
                target=self._checkpoint_main,
                args=(checkpoints_done,),
                name="fieldlink-ingest-checkpoint",
                daemon=True,
            )
            checkpointer.start()
        try:
            while not self._stop_requested.is_set():
                self._step(client, POLL_S)
            self._shutdown(client)
        except Exception:
            logger.exception("the ingest thread failed")
        finally:
            checkpoints_done.set()
            if checkpointer is not None:
                checkpointer.join(STOP_WRITER_TIMEOUT_S)
            self._write_requests.put(None)
            writer.join(STOP_WRITER_TIMEOUT_S)
            if not writer.is_alive():
                self.store.close()
            with contextlib.suppress(Exception):
                client.disconnect()
            self._connected = False

    def _writer_main(self) -> None:
        """The writer thread: commits the batches it is handed, one at a time.

        It only waits on the database (and does the batch's own bookkeeping);
        reading, validation and acknowledgements stay on the ingest thread.
        """
        while (batch := self._write_requests.get()) is not None:
            try:
                ok = self._write(batch)
            except Exception:
                logger.exception("the ingest writer failed on a batch")
                ok = False
            self._write_outcomes.put(ok)
            self._wake_reader()

    def _checkpoint_main(self, done: threading.Event) -> None:
        """SQLite: WAL checkpoints every :data:`CHECKPOINT_INTERVAL_S`, off the ingest thread.

        SQLite would otherwise run one inside a commit every 1,000 pages of log,
        stalling that batch for tens of milliseconds (copying and syncing). A
        passive checkpoint waits for nobody; SQLite's C code runs it outside the
        interpreter lock, on the other core.
        """
        conn = None
        try:
            while not done.wait(CHECKPOINT_INTERVAL_S):
                try:
                    if conn is None:
                        conn = self.engine.connect()
                    self.store.checkpoint(conn)
                except Exception as exc:  # a locked or missing database: try again later
                    logger.debug("WAL checkpoint failed: %s", exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.invalidate()
                        conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _wake_reader(self) -> None:
        """End the ingest thread's wait on the broker's socket (paho's wake-up pipe)."""
        wakeup = getattr(self._client, "_sockpairW", None)
        if wakeup is not None:
            with contextlib.suppress(OSError):
                wakeup.send(b"w")

    def _step(self, client: paho.Client, poll_s: float) -> None:
        """One turn: read the broker (or reconnect), then commit what is due."""
        idle = True
        size = self.settings.ingest_batch_size
        if self._connected:
            timeout = poll_s
            if len(self._pending) > self._inflight_cut:
                # A batch is gathering: the socket is read when it is due (or the writer
                # is done), not on every message that arrives meanwhile.
                due_in = self._flush_due(idle=True) - time.monotonic()
                if due_in > 0 and self._nap(client, min(due_in, poll_s)):
                    timeout = 0.0
                elif not self._inflight_cut:
                    timeout = min(timeout, max(0.0, due_in))
            first = before = self._received
            if self._reader is not None and self._reader.pending():
                # select() cannot see what is buffered already: read it first.
                rc = client.loop_read()
                if rc == paho.MQTT_ERR_SUCCESS:
                    rc = client.loop(0.0)
            else:
                rc = client.loop(timeout)
            # While messages keep coming, read on without a select() per message.
            while (
                rc == paho.MQTT_ERR_SUCCESS
                and self._received != before
                and self._received - first < size
            ):
                before = self._received
                rc = client.loop_read()
            if rc != paho.MQTT_ERR_SUCCESS:
                self._lost(client)
            # Idle: the last read found no message (the socket is drained for now).
            idle = self._received == before
        else:
            now = time.monotonic()
            if now >= self._connect_at:
                try:
                    client.reconnect()
                    self._connected = True
                except OSError as exc:
                    self._retry_connect(f"cannot reach the broker: {exc}")
            else:
                self._stop_requested.wait(min(poll_s, self._connect_at - now))
        self._flush(idle=idle)

    def _nap(self, client: paho.Client, seconds: float) -> bool:
        """Wait up to ``seconds`` for the writer's wake-up only, leaving the broker's
        messages in the socket (one read for them all later); ``False`` if it cannot."""
        wakeup = getattr(client, "_sockpairR", None)
        if wakeup is None:
            return False
        try:
            ready, _, _ = select.select([wakeup], [], [], seconds)
            if ready:
                wakeup.recv(4096)  # the writer's wake-up bytes
        except (OSError, ValueError):
            return False
        return True

    def _retry_connect(self, why: str) -> None:
        delay = random.uniform(BACKOFF_MIN_S / 2, self._broker_backoff)  # noqa: S311  (jitter)
        logger.warning("%s; retrying in %.1f s", why, delay)
        self._connect_at = time.monotonic() + delay
        self._broker_backoff = min(self._broker_backoff * 2, BACKOFF_MAX_S)

    def _lost(self, client: paho.Client) -> None:
        self._connected = False
        metrics.INGEST_CONNECTED.set(0)
        self._call_on_loop(self.ready.clear)
        # The will of the next connection carries that connection's time.
        client.will_set(topics.SERVER_STATE, self._announcement(online=False), qos=1, retain=True)
        self._retry_connect("lost the broker")

    def _shutdown(self, client: paho.Client) -> None:
        """Stop deliveries (clean session), commit and acknowledge, announce, disconnect."""
        deadline = time.monotonic() + STOP_BROKER_TIMEOUT_S
        if self._connected and not self.persistent_session:
            # A clean session's unacknowledged messages die with it: stop the
            # deliveries first, so that everything received can be committed.
            client.unsubscribe(list(topics.ingest_filters(self.group)))
            while self._connected and not self._unsubscribed and time.monotonic() < deadline:
                self._step(client, 0.05)
        # What arrives from now on stays unacknowledged: the broker delivers it again.
        self._accepting = False
        deadline = time.monotonic() + STOP_WRITER_TIMEOUT_S
        self._first_pending_at = 0.0
        while self._pending and time.monotonic() < deadline:
            self._step(client, 0.05)
        if self._pending:
            logger.warning(
                "stopping with %d messages not committed (left unacknowledged)", len(self._pending)
            )
        if self._connected:
            info = client.publish(
                topics.SERVER_STATE, self._announcement(online=False), qos=1, retain=True
            )
            deadline = time.monotonic() + STOP_BROKER_TIMEOUT_S
            while self._connected and not info.is_published() and time.monotonic() < deadline:
                if client.loop(0.05) != paho.MQTT_ERR_SUCCESS:
                    self._connected = False

    def _announcement(self, *, online: bool) -> bytes:
        return dump_message(ServerState(online=online, ts=utcnow(), instance=self.instance_id))

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            logger.warning("the broker refused the ingest: %s", reason_code)
            return
        self._generation += 1
        self._unsubscribed = False
        options = SubscribeOptions(qos=1)
        if self.persistent_session and self.group != topics.INGEST_GROUP:
            # A persistent session may still hold the old, public group's subscriptions.
            _rc, self._legacy_unsubscribe_mid = client.unsubscribe(
                topics.ingest_filters(topics.INGEST_GROUP)
            )
        _rc, self._subscribe_mid = client.subscribe(
            [(topic_filter, options) for topic_filter in topics.ingest_filters(self.group)]
        )

    def _on_subscribe(
        self,
        client: paho.Client,
        _userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Any,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            logger.error("the broker refused the ingest's subscriptions: %s", ", ".join(refused))
            return
        info = client.publish(
            topics.SERVER_STATE, self._announcement(online=True), qos=1, retain=True
        )
        # Ready once the broker holds the announcement (see _on_published).
        self._announcement_mid = info.mid
        self._broker_backoff = BACKOFF_MIN_S
        if self._connected_before:
            metrics.INGEST_RECONNECTS.inc()
        self._connected_before = True
        metrics.INGEST_CONNECTED.set(1)
        # The group's name is a secret of the center (see default_group): never logged.
        logger.info(
            "ingest %s subscribed to %s (%s group)",
            self.instance_id,
            topics.PREFIX,
            "the public" if self.group == topics.INGEST_GROUP else "the center's secret",
        )

    def _on_published(self, _client: paho.Client, _userdata: Any, mid: int, *_args: Any) -> None:
        if mid == self._announcement_mid:
            self._announcement_mid = None
            self._call_on_loop(self.ready.set)

    def _on_unsubscribe(self, _client: paho.Client, _userdata: Any, mid: int, *_args: Any) -> None:
        if mid == self._legacy_unsubscribe_mid:
            self._legacy_unsubscribe_mid = None
            return
        self._unsubscribed = True

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        """paho's path: messages :class:`receive.PublishReader` leaves to paho (or all of them)."""
        try:
            topic = message.topic.encode()
        except UnicodeDecodeError:
            topic = b""
        self._on_publish(
            topic, bytes(message.payload), message.mid, message.qos, message.retain, utcnow()
        )

    def _on_publish(
        self, topic: bytes, payload: bytes, mid: int, qos: int, retain: bool, received_at: datetime
    ) -> None:
        """One message from the broker: validated now, kept for the next batch."""
        if not self._accepting:
            return  # left unacknowledged: the broker delivers it again
        try:
            item = self._validate(topic, payload, retain=retain, received_at=received_at)
        except Exception:
            # Never let one message break the network loop; it is acknowledged and dropped.
            logger.exception("ingest failed on a message on %r", topic)
            metrics.INGEST_MESSAGES.labels("error").inc()
            item = None
        self._received += 1
        if len(self._pending) == self._inflight_cut:
            self._first_pending_at = time.monotonic()
        self._pending.append((item, mid, qos, self._generation))
        if item is not None:
            self._pending_items += 1

    # -- validation ---------------------------------------------------------------------

    def _validate(
        self, topic: bytes, payload: bytes, *, retain: bool, received_at: datetime
    ) -> IngestItem | None:
        """The message as an item for the writer, or ``None`` when there is nothing to write."""
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = _parse_topic(topic)
            if len(self._topics) >= TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[topic] = parsed
        if not parsed:
            self._reject("bad_topic")
            return None
        device_id, kind = parsed
        try:
            if kind == "telemetry":
                sample = parse_message(HealthSample, payload)
                _check_device(sample.device_id, device_id)
                if not self._ts_bounds.plausible(sample.ts, received_at):
                    # Stored at the receive time and flagged: never the device's
                    # "latest" for years to come, never lost either.
                    logger.debug("%s sent a sample stamped %s", device_id, sample.ts)
                    sample = sample.model_copy(update={"ts": received_at})
                    return SampleItem(device_id, sample, received_at, ts_untrusted=True)
                return SampleItem(device_id, sample, received_at)
            if kind == "state":
                if not payload:
                    # Someone cleared the retained state: nothing to learn.
                    metrics.INGEST_MESSAGES.labels("ignored").inc()
                    return None
                state = parse_message(DeviceState, payload)
                return StateItem(device_id, state, retain, received_at)
            if kind == "events":
                event = parse_message(DeviceEvent, payload)
                _check_device(event.device_id, device_id)
                return EventItem(device_id, event, received_at)
            if kind == "cmd/result":
                result = parse_message(CommandResult, payload)
                return CommandResultItem(device_id, result, received_at)
        except ProtocolError as exc:
            logger.debug("rejected %s message for %s: %s", kind, device_id, exc)
            self._reject(exc.reason)
            # Counted on the device's row when it is registered.
            return RejectedItem(device_id, exc.reason)
        metrics.INGEST_MESSAGES.labels("ignored").inc()
        return None

    @staticmethod
    def _reject(reason: str) -> None:
        metrics.INGEST_MESSAGES.labels("rejected").inc()
        metrics.INGEST_REJECTED.labels(reason).inc()

    # -- batches ------------------------------------------------------------------------

    def _flush_due(self, *, idle: bool) -> float:
        """When the pending messages are to be handed to the writer (``time.monotonic()``).

        When the batch is full; when the broker has nothing more to read right
        now and the first message is :data:`GATHER_S` old; else ``ingest_flush_ms``
        after the first message; never before a database retry is due.
        """
        waiting = self._pending_items - self._inflight_items
        if waiting >= self.settings.ingest_batch_size or not self._accepting:
            return self._write_at
        flush_s = self.settings.ingest_flush_ms / 1000
        wait_s = min(flush_s, GATHER_S) if idle else flush_s
        return max(self._write_at, self._first_pending_at + wait_s)

    def _flush(self, *, idle: bool) -> None:
        """Hand the pending messages to the writer thread batch by batch when due, and
        acknowledge each batch once it is committed.

        One batch is in flight at a time: this hands it over and returns; a later
        call acknowledges it. Messages without an item (nothing to write) before the
        next item are acknowledged at once.
        """
        if self._inflight_cut:
            try:
                ok = self._write_outcomes.get_nowait()
            except queue.Empty:
                return  # still committing
            cut, self._inflight_cut = self._inflight_cut, 0
            items, self._inflight_items = self._inflight_items, 0
            if not ok:
                return  # the database is down: kept, unacknowledged, retried later
            self._acknowledge(self._pending[:cut])
            del self._pending[:cut]
            self._pending_items -= items
            metrics.INGEST_QUEUE_DEPTH.set(self._pending_items)
        if not self._pending or time.monotonic() < self._flush_due(idle=idle):
            return
        size = self.settings.ingest_batch_size
        cut = len(self._pending)
        if self._pending_items > size:
            count = 0
            for index, entry in enumerate(self._pending):
                if entry[0] is not None:
                    count += 1
                    if count == size:
                        cut = index + 1
                        break
        batch = [entry[0] for entry in self._pending[:cut] if entry[0] is not None]
        metrics.INGEST_QUEUE_DEPTH.set(self._pending_items)
        if batch:
            self._inflight_cut, self._inflight_items = cut, len(batch)
            self._write_requests.put(batch)
            return
        self._acknowledge(self._pending[:cut])
        del self._pending[:cut]

    def _write(self, batch: Sequence[IngestItem]) -> bool:
        """Commit one batch; ``False`` when the database is unavailable (retry later)."""
        started = time.perf_counter()
        try:
            with self._db_lock:
                result = self.store.write(batch)
        except (OperationalError, DBAPIError) as exc:
            if not _unavailable(exc):
                self._write_one_by_one(batch)
                return True
            delay = random.uniform(BACKOFF_MIN_S / 2, self._db_backoff)  # noqa: S311  (jitter)
            logger.warning(
                "database unavailable for ingest: %s; retrying in %.1f s", exc.orig, delay
            )
            self._write_at = time.monotonic() + delay
            self._db_backoff = min(self._db_backoff * 2, BACKOFF_MAX_S)
            return False
        except Exception:
            logger.exception("ingest batch failed; writing its messages one by one")
            self._write_one_by_one(batch)
            return True
        self._db_backoff = BACKOFF_MIN_S
        self._last_write_s = time.perf_counter() - started
        self._account(result, len(batch), self._last_write_s)
        return True

    def _write_one_by_one(self, batch: Sequence[IngestItem]) -> None:
        """A batch failed on its data: write its items alone and drop the ones that fail."""
        for item in batch:
            try:
                with self._db_lock:
                    result = self.store.write([item])
            except Exception:
                logger.exception(
                    "dropped one %s message for %s", type(item).__name__, item.device_id
                )
                metrics.INGEST_MESSAGES.labels("error").inc()
                continue
            self._account(result, 1, 0.0)

    def _acknowledge(self, entries: list[_Pending]) -> None:
        """Acknowledge committed messages on the connection they came on."""
        client, generation = self._client, self._generation
        if client is None or not self._connected:
            return
        # An older connection's messages come again on the new one (or are gone
        # with a clean session); its message ids may now name other messages.
        if self._reader is not None:
            receive.acknowledge(
                client,
                [mid for _i, mid, qos, on in entries if qos == 1 and on == generation],
            )
            for _item, mid, qos, received_on in entries:
                if qos == 2 and received_on == generation:
                    client.ack(mid, qos)
            return
        for _item, mid, qos, received_on in entries:
            if qos and received_on == generation:
                client.ack(mid, qos)

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
            "command_result": len(result.command_results),
        }
        for label, count in counts.items():
            if count:
                metrics.INGEST_MESSAGES.labels(label).inc(count)
        for reason, count in (("unregistered", result.unregistered), ("revoked", result.revoked)):
            if count:
                metrics.INGEST_MESSAGES.labels("rejected").inc(count)
                metrics.INGEST_REJECTED.labels(reason).inc(count)
        if result.missing_delta > 0:
            metrics.TELEMETRY_MISSING.inc(result.missing_delta)
        if result.late:
            metrics.TELEMETRY_LATE.inc(result.late)
        if result.seq_resets:
            metrics.TELEMETRY_SEQ_RESETS.inc(result.seq_resets)
        if result.ts_untrusted:
            metrics.TELEMETRY_TS_UNTRUSTED.inc(result.ts_untrusted)
        if result.outbox_dropped:
            metrics.OUTBOX_DROPPED.inc(result.outbox_dropped)
        for sent in result.stored_sent_times:
            metrics.INGEST_LATENCY.observe(max(0.0, committed - sent))
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

    # -- upkeep (the event loop) --------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Mark silent devices offline and refresh the fleet gauges; returns those marked."""
        silent, (online, registered, alerts) = await asyncio.to_thread(self._sweep_blocking)
        metrics.DEVICES_ONLINE.set(online)
        metrics.DEVICES_REGISTERED.set(registered)
        metrics.ALERTS_OPEN.set(alerts)
        return silent

    def _sweep_blocking(self) -> tuple[list[str], tuple[int, int, int]]:
        with self._db_lock:
            silent = maintenance.mark_silent(self.engine, self.settings.offline_after_s, utcnow())
            return silent, maintenance.fleet_counts(self.engine)

    async def run_maintenance(self) -> None:
        """Roll up the hours that got samples since the last run, then apply retention."""
        now = utcnow()
        since = self._last_rollup - timedelta(minutes=1)

        def blocking() -> tuple[int, tuple[int, int]]:
            with self._db_lock:
                rows = maintenance.rollup_hours(self.engine, since)
                return rows, maintenance.purge_old(self.engine, self.settings, now)

        rows, (samples, rollups) = await asyncio.to_thread(blocking)
        self._last_rollup = now
        logger.info(
            "rollups: %d rows written; retention: %d samples and %d rollups deleted",
            rows,
            samples,
            rollups,
        )

    async def _upkeep_loop(self) -> None:
        next_maintenance = time.monotonic() + self.maintenance_interval_s
        while True:
            try:
                await self.sweep()
            except (OperationalError, DBAPIError) as exc:
                logger.warning("sweep failed: %s", exc.orig)
            if time.monotonic() >= next_maintenance:
                next_maintenance = time.monotonic() + self.maintenance_interval_s
                try:
                    await self.run_maintenance()
                except (OperationalError, DBAPIError) as exc:
                    logger.warning("rollup or retention failed: %s", exc.orig)
            await asyncio.sleep(self.sweep_interval_s)


def _parse_topic(topic: bytes) -> tuple[str, str] | tuple[()]:
    """``(device_id, kind)`` of a device topic, or ``()`` when it is none."""
    try:
        return topics.parse_device_topic(topic.decode())
    except (ProtocolError, UnicodeDecodeError):
        return ()


def _check_device(claimed: str, topic_device: str) -> None:
    if claimed != topic_device:
        msg = f"payload claims device {claimed!r} on the topic of {topic_device!r}"
        raise ProtocolError(msg, reason="device_mismatch")


def _unavailable(exc: DBAPIError) -> bool:
    """Whether the error means the database is unreachable (retry) rather than bad data."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)
