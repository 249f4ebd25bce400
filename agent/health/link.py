"""The agent's MQTT link: online state, publishing the outbox, reconnecting with jitter.

On every connect the agent publishes a retained birth on its ``state`` topic;
the broker holds a retained last will that says ``connection_lost``. A clean
stop publishes a retained ``shutdown`` state before disconnecting. Samples are
published at QoS 1 from the outbox and marked sent there once the broker has
acknowledged them (PUBACK).

When a server instance announces itself on :data:`shared.topics.SERVER_STATE`
(a newer ``ts`` or a new instance), the agent publishes its birth again, so a
server that started after the agent still sees every device, and re-publishes
every sample it sent since its own most recent connect that is still in the
outbox's resend window, oldest first and before newer samples. A PUBACK only
proves that the broker took a sample: after a broker restart the server's
shared subscription is not restored (Mosquitto 2.0 does not persist it), so
what the agent drains before the server is back reaches nobody. The server's
announcement is the end-to-end signal that it is subscribed; it stores each
``(device_id, boot_id, seq)`` once, so a resent sample is never counted twice.

The agent subscribes (QoS 1) to its own ``cmd`` topic before it publishes its
birth, so a birth proves that commands reach it. Each command runs in a task
of its own (:class:`agent.remote.commands.CommandDispatcher` verifies it and runs its
handler); what it answers (result, refusal event) is published at QoS 1.
Commands are not queued for an offline agent (clean session): they expire
soon anyway, and the server waits for each result with a timeout.

Device events that do not answer a command (the remote sessions' ``session.*``)
go through :meth:`BrokerLink.publish_event`: queued in memory (bounded), published
at QoS 1 in order while connected, and flushed on reconnect and before a clean stop.

A renewed certificate takes effect without a restart: :meth:`BrokerLink.use_tls`
ends the current connection (cleanly, so the broker does not publish the last
will) and the link connects again at once with the new TLS context; samples
wait in the outbox meanwhile, as during any reconnect.

paho alone reconnects without jitter, which would bring a whole fleet back in
one wave after a broker restart; :func:`reconnect_delay` spreads them. It, the
TLS context and the device-tagged logger are in :mod:`agent.health.link_setup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiomqtt

from agent.health.link_setup import DeviceLogger, reconnect_delay
from agent.health.outbox import Outbox
from agent.health.samples import with_sent_at
from shared import __version__ as AGENT_VERSION
from shared import topics
from shared.broker_url import BrokerAddress
from shared.ids import isoformat_z, utcnow
from shared.wire import VIA_SESSIONS

if TYPE_CHECKING:
    from agent.remote.commands import CommandDispatcher

logger = logging.getLogger(__name__)

#: How long a publish may wait for its PUBACK before the link counts as broken.
PUBLISH_TIMEOUT_S = 10.0
#: How long a clean stop waits for the broker to take the ``shutdown`` state.
SHUTDOWN_PUBLISH_TIMEOUT_S = 3.0
#: Device events held while the broker is away; the oldest go first past it.
MAX_QUEUED_EVENTS = 256


def _state_payload(**fields: Any) -> bytes:
    return json.dumps({"v": 1, **fields}, separators=(",", ":")).encode()


def _parse_server_state(payload: Any) -> tuple[str, datetime, bool] | None:
    try:
        data = json.loads(payload)
        instance, online = data["instance"], data["online"]
        ts = datetime.fromisoformat(data["ts"])
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(instance, str) or not isinstance(online, bool) or ts.tzinfo is None:
        return None
    return instance, ts, online


class BrokerLink:
    """One device's connection to the broker, kept up until told to stop.

    Args:
        device_id: The device, also the MQTT client id.
        broker: Where the broker listens.
        outbox: Where samples wait for the broker.
        boot_id: This run's id, sent in the birth and will.
        wake: Set by the sampler whenever a sample lands in the outbox.
        keepalive_s: MQTT keepalive.
        tls: TLS context (``None`` for plain MQTT).
        reconnect_min_s: Floor of the reconnect delay.
        reconnect_max_s: Cap of the reconnect delay.
        inflight_window: Samples published at once (awaiting their PUBACKs together).
        rng: Randomness of the reconnect jitter.
        commands: Verifies and runs the commands on the device's ``cmd`` topic
            (``None``: the link does not subscribe to it).
    """

    def __init__(
        self,
        device_id: str,
        broker: BrokerAddress,
        outbox: Outbox,
        *,
        boot_id: str,
        wake: asyncio.Event,
        keepalive_s: int = 30,
        tls: ssl.SSLContext | None = None,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        inflight_window: int = 20,
        rng: random.Random | None = None,
        commands: CommandDispatcher | None = None,
    ) -> None:
        self.device_id = device_id
        self.broker = broker
        self.outbox = outbox
        self.boot_id = boot_id
        self.keepalive_s = keepalive_s
        self.tls = tls
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.inflight_window = inflight_window
        self.connected = asyncio.Event()
        #: The TLS context of the current (or most recent) connection.
        self.connected_tls: ssl.SSLContext | None = None
        self._connection_made = asyncio.Event()
        self._reconnect = asyncio.Event()
        #: Samples the broker acknowledged (first sends).
        self.published = 0
        #: Samples re-published after a server announced itself.
        self.resent = 0
        self._wake = wake
        # Outbox id of the first sample published on the current connection (None: none yet).
        self._connection_first_id: int | None = None
        # Next outbox id to re-publish while a resend is under way (None: no resend).
        self._resend_cursor: int | None = None
        # Bumped by each announcement, so a resend under way starts over from the top.
        self._resend_generation = 0
        self._resend_count = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._server_instances: dict[str, datetime] = {}
        self._state_topic = topics.state(device_id)
        self._telemetry_topic = topics.telemetry(device_id)
        self._cmd_topic = topics.cmd(device_id)
        self.commands = commands
        self._command_tasks: set[asyncio.Task[None]] = set()
        # Events to publish, oldest first, and who publishes them while connected.
        self._events: deque[tuple[str, bytes]] = deque()
        #: Events dropped because too many waited for the broker.
        self.events_dropped = 0
        self._live_client: aiomqtt.Client | None = None
        self._event_flusher: asyncio.Task[None] | None = None
        self._log = DeviceLogger(logger, {"device_id": device_id})
        #: Retained births published after this device's own (a site gateway's
        #: watched devices: :mod:`agent.health.gateway`).
        self.more_births: Callable[[], Iterable[tuple[str, bytes]]] | None = None
        #: Called when a server announces itself, after this device's own resend was
        #: requested (a site gateway re-publishes its watched devices' samples).
        self.on_server_announced: Callable[[], None] | None = None
        #: Connections made so far (bumped before ``connected`` is set for each).
        self.connections = 0

    def publish_event(self, topic: str, payload: bytes) -> None:
        """Publish a device event at QoS 1 now, or as soon as the broker is back.

        Events are published in the order given. At most :data:`MAX_QUEUED_EVENTS`
        wait for the broker; past that the oldest is dropped (and logged).
        """
        if len(self._events) >= MAX_QUEUED_EVENTS:
            self._events.popleft()
            self.events_dropped += 1
            self._log.warning("event queue full: dropped the oldest event")
        self._events.append((topic, payload))
        self._start_event_flush()

    async def publish_now(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 on the live connection, waiting for the PUBACK.

        Raises:
            aiomqtt.MqttError: when there is no connection, or it fails meanwhile.
        """
        client = self._live_client
        if client is None:
            msg = "not connected"
            raise aiomqtt.MqttError(msg)
        await client.publish(topic, payload, qos=1)

    def _start_event_flush(self) -> None:
        client = self._live_client
        if client is None or not self._events:
            return
        if self._event_flusher is not None and not self._event_flusher.done():
            return
        self._event_flusher = asyncio.create_task(self._flush_events(client))

    async def _flush_events(self, client: aiomqtt.Client) -> None:
        """Publish queued events in order; on a broker error they wait for the next connection."""
        while self._events:
            topic, payload = head = self._events[0]
            try:
                await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError as exc:
                self._log.info("events wait for the broker (%s)", exc)
                return
            if self._events and self._events[0] is head:
                self._events.popleft()

    def use_tls(self, tls: ssl.SSLContext) -> None:
        """Connect with ``tls`` from now on: reconnect at once (a renewed certificate)."""
        self.tls = tls
        self._reconnect.set()

    async def wait_connected_with(self, tls: ssl.SSLContext, timeout_s: float) -> bool:
        """Wait until the link is connected with ``tls``; whether it did within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not (self.connected.is_set() and self.connected_tls is tls):
                    self._connection_made.clear()
                    await self._connection_made.wait()
        except TimeoutError:
            return False
        return True

    def _client(self, tls: ssl.SSLContext | None) -> aiomqtt.Client:
        will = aiomqtt.Will(
            self._state_topic,
            _state_payload(
                online=False,
                reason="connection_lost",
                boot_id=self.boot_id,
                agent_version=AGENT_VERSION,
            ),
            qos=1,
            retain=True,
        )
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.device_id,
            keepalive=self.keepalive_s,
            will=will,
            tls_context=tls,
            max_inflight_messages=self.inflight_window,
            timeout=PUBLISH_TIMEOUT_S,
            logger=logging.getLogger("aiomqtt"),
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Stay connected until ``stopping`` is set, then publish ``shutdown`` and disconnect."""
        attempt = 0
        while not stopping.is_set():
            # A use_tls() from here on ends the connection this iteration makes.
            self._reconnect.clear()
            tls = self.tls
            try:
                async with self._client(tls) as client:
                    attempt = 0
                    self._log.info("connected to %s:%d", self.broker.host, self.broker.port)
                    await self._serve(client, stopping, tls)
                    if stopping.is_set():
                        return
                    continue  # use_tls(): connect again at once with the new context
            except Exception as exc:
                self.connected.clear()
                if not isinstance(exc, aiomqtt.MqttError):
                    # A bug must not end the link for good: log it and reconnect.
                    self._log.exception("unexpected error on the broker link")
                delay = reconnect_delay(
                    attempt, self.reconnect_min_s, self.reconnect_max_s, self._rng
                )
                log = self._log.warning if attempt == 0 else self._log.info
                log("broker unavailable (%s); reconnecting in %.1f s", exc, delay)
                attempt += 1
                await self._pause(stopping, delay)
        self.connected.clear()

    async def _pause(self, stopping: asyncio.Event, delay: float) -> None:
        """Wait ``delay`` seconds, less if stopping or given a new TLS context meanwhile."""
        waits = (
            asyncio.create_task(stopping.wait()),
            asyncio.create_task(self._reconnect.wait()),
        )
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _serve(
        self,
        client: aiomqtt.Client,
        stopping: asyncio.Event,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        # A resend cut short by the lost connection goes on on this one; otherwise the
        # resend range starts with the first sample this connection publishes.
        self._connection_first_id = self._resend_cursor
        client.pending_calls_threshold = max(client.pending_calls_threshold, self.inflight_window)
        if self.commands is not None:
            # Before the birth: a server that sees the birth may send commands at once.
            await client.subscribe(self._cmd_topic, qos=1)
        await self.publish_birth(client)
        await client.subscribe(topics.SERVER_STATE, qos=1)
        self.connections += 1
        self.connected_tls = tls
        self.connected.set()
        self._connection_made.set()
        self._live_client = client
        self._start_event_flush()
        listener = asyncio.create_task(self._listen(client))
        drainer = asyncio.create_task(self._drain(client))
        stop = asyncio.create_task(stopping.wait())
        reconnect = asyncio.create_task(self._reconnect.wait())
        tasks = (listener, drainer, stop, reconnect)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if stopping.is_set() and self._events:
                # Last words first: a session's "closed" event before the "shutdown" state.
                self._start_event_flush()
                if self._event_flusher is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            asyncio.shield(self._event_flusher), SHUTDOWN_PUBLISH_TIMEOUT_S
                        )
        finally:
            self._live_client = None
            flusher = self._event_flusher
            stragglers = [flusher] if flusher is not None else []
            for task in (*tasks, *self._command_tasks, *stragglers):
                task.cancel()
            await asyncio.gather(*tasks, *self._command_tasks, *stragglers, return_exceptions=True)
            self._event_flusher = None
        if not stopping.is_set() and self._reconnect.is_set():
            self.connected.clear()
            self._log.info("reconnecting with a new TLS context")
            return
        if not stopping.is_set():
            # The listener or drainer ended: the link broke. Surface its error.
            for task in (listener, drainer):
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error
            msg = "connection ended"
            raise aiomqtt.MqttError(msg)
        self.connected.clear()
        try:
            await client.publish(
                self._state_topic,
                _state_payload(
                    online=False,
                    ts=isoformat_z(utcnow()),
                    boot_id=self.boot_id,
                    agent_version=AGENT_VERSION,
                    reason="shutdown",
                ),
                qos=1,
                retain=True,
                timeout=SHUTDOWN_PUBLISH_TIMEOUT_S,
            )
        except aiomqtt.MqttError as exc:
            self._log.warning("could not publish the shutdown state: %s", exc)

    async def publish_birth(self, client: aiomqtt.Client) -> None:
        """Publish the retained birth: online, with this run's ``boot_id`` and version."""
        await client.publish(
            self._state_topic,
            _state_payload(
                online=True,
                ts=isoformat_z(utcnow()),
                boot_id=self.boot_id,
                agent_version=AGENT_VERSION,
                capabilities=[VIA_SESSIONS],
            ),
            qos=1,
            retain=True,
        )
        if self.more_births is not None:
            for topic, payload in self.more_births():
                await client.publish(topic, payload, qos=1, retain=True)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if self.commands is not None and message.topic.matches(self._cmd_topic):
                payload = message.payload
                raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
                task = asyncio.create_task(self._answer_command(client, self.commands, raw))
                self._command_tasks.add(task)
                task.add_done_callback(self._command_tasks.discard)
                continue
            if not message.topic.matches(topics.SERVER_STATE):
                continue
            state = _parse_server_state(message.payload)
            if state is None:
                self._log.warning("ignored a malformed server state")
                continue
            instance, ts, online = state
            known = self._server_instances.get(instance)
            self._server_instances[instance] = max(ts, known) if known else ts
            # A retained state arrives right after we subscribed, just after our birth.
            if online and not message.retain and (known is None or ts > known):
                self._log.info("server %s announced itself; publishing birth again", instance)
                self.request_resend()
                if self.on_server_announced is not None:
                    self.on_server_announced()
                await self.publish_birth(client)

    async def _answer_command(
        self, client: aiomqtt.Client, commands: CommandDispatcher, payload: bytes
    ) -> None:
        """Verify and run one command, then publish its result or refusal."""
        try:
            answers = await commands.handle(payload)
            for answer in answers:
                await client.publish(answer.topic, answer.payload, qos=1)
        except aiomqtt.MqttError as exc:
            self._log.warning("could not publish a command's answer: %s", exc)
        except Exception:
            # A bug in a command must not take the link down.
            self._log.exception("unexpected error while handling a command")

    def request_resend(self) -> None:
        """Re-publish what this connection sent so far (a server has just subscribed)."""
        if self._connection_first_id is None:
            return
        self._resend_cursor = self._connection_first_id
        self._resend_generation += 1
        self._resend_count = 0
        self._wake.set()

    async def _publish_batch(
        self, client: aiomqtt.Client, batch: list[tuple[int, bytes]]
    ) -> tuple[list[int], BaseException | None]:
        """Publish ``batch`` at QoS 1 together; the acknowledged ids and the first error."""
        sent_at = utcnow()
        results = await asyncio.gather(
            *(
                client.publish(self._telemetry_topic, with_sent_at(payload, sent_at), qos=1)
                for _, payload in batch
            ),
            return_exceptions=True,
        )
        acked = [
            row_id for (row_id, _), result in zip(batch, results, strict=True) if result is None
        ]
        error = next((r for r in results if isinstance(r, BaseException)), None)
        return acked, error

    async def _resend_step(self, client: aiomqtt.Client, cursor: int) -> None:
        """Re-publish the next window of sent samples from ``cursor`` on."""
        generation = self._resend_generation
        batch = await self.outbox.sent_since(cursor, self.inflight_window)
        if not batch:
            if generation == self._resend_generation:
                self._resend_cursor = None
                self._log.info(
                    "re-sent %d samples after the server announced itself", self._resend_count
                )
                await self.outbox.prune()
            return
        acked, error = await self._publish_batch(client, batch)
        self.resent += len(acked)
        self._resend_count += len(acked)
        if error is not None:
            raise error
        if generation == self._resend_generation:
            self._resend_cursor = batch[-1][0] + 1

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            if self._resend_cursor is not None:
                # Re-sends go before newer samples, with the same in-flight window.
                await self._resend_step(client, self._resend_cursor)
                continue
            batch = await self.outbox.peek(self.inflight_window)
            if not batch:
                await self._wake.wait()
                continue
            if self._connection_first_id is None:
                self._connection_first_id = batch[0][0]
            acked, error = await self._publish_batch(client, batch)
            await self.outbox.mark_sent(acked)
            self.published += len(acked)
            if error is not None:
                raise error
