"""The ingest's broker connection: paho on the ingest thread, subscribed, announced, acknowledging.

:class:`BrokerConnection` owns one paho client (MQTT 5, manual acknowledgements)
and is driven by the ingest thread: :meth:`~BrokerConnection.read` reads what
the broker sent (PUBLISH packets through :mod:`server.ingest.receive`),
:meth:`~BrokerConnection.reconnect_if_due` dials again after a jittered
backoff, :meth:`~BrokerConnection.acknowledge` sends the PUBACKs of committed
messages on the connection they came on. On each connection it subscribes to
the fleet's topics through the center's shared subscription and, once
subscribed, publishes the server's retained announcement (its will says the
opposite); the service is ready once the broker holds it.

The group's name is a secret of the center (:func:`default_group`): never logged.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from provisioning.broker import ingest_group
from provisioning.ca import CertificateAuthority
from provisioning.pki import CaNotInitialized
from server import metrics
from server.config import ServerSettings
from server.ingest import receive
from server.ingest.items import Pending
from server.mqtt import broker_endpoint, make_paho_client
from shared import topics
from shared.ids import new_id, utcnow
from shared.models import ServerState, dump_message

logger = logging.getLogger(__name__)

#: Reconnect backoff bounds (seconds); each wait is drawn uniformly below the bound,
#: which doubles on each failure.
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
#: paho's wake-up socket pair (its ``loop()`` selects on the read end too).
WAKEUP_READ, WAKEUP_WRITE = "_sockpairR", "_sockpairW"


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


class BrokerConnection:
    """The ingest's MQTT client and its state (every method runs on the ingest thread).

    Args:
        settings: The broker URL, TLS files, ``ingest_batch_size``.
        instance_id: This process's instance id (client id, announcement).
        group: The shared-subscription group.
        persistent_session: Keep the broker session across restarts (a configured
            ``instance_id``).
        on_publish: Each PUBLISH received, fast path or paho's.
        on_ready: The broker holds the announcement (the service is ready).
        on_lost: The connection is lost (no longer ready).
    """

    def __init__(
        self,
        settings: ServerSettings,
        *,
        instance_id: str,
        group: str,
        persistent_session: bool,
        on_publish: receive.PublishHandler,
        on_ready: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self.group = group
        self.persistent_session = persistent_session
        self.on_publish = on_publish
        self.on_ready = on_ready
        self.on_lost = on_lost
        self.connected = False
        #: Bumped on every connection: an acknowledgement is only sent on its own one.
        self.generation = 0
        #: The broker confirmed the UNSUBSCRIBE of a stopping clean session.
        self.unsubscribed = False
        self._connect_at = 0.0
        self._backoff = BACKOFF_MIN_S
        self._connected_before = False
        self._subscribe_mid: int | None = None
        self._legacy_unsubscribe_mid: int | None = None
        self._announcement_mid: int | None = None
        self.client = self._make_client()
        self.reader = receive.fast_reader(self.client, on_publish)

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
        client.will_set(topics.SERVER_STATE, self.announcement(online=False), qos=1, retain=True)
        # Only records where and how to connect; the ingest thread connects.
        client.connect_async(
            host,
            port,
            keepalive=KEEPALIVE_S,
            clean_start=not self.persistent_session,
            properties=properties,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_publish = self._on_published
        client.on_message = self._on_message
        return client

    def announcement(self, *, online: bool) -> bytes:
        """The server's retained ``server/state`` payload."""
        return dump_message(ServerState(online=online, ts=utcnow(), instance=self.instance_id))

    # -- reading -----------------------------------------------------------------------

    def read(self, timeout: float, budget: int, received: Callable[[], int]) -> bool:
        """Read what the broker sent (waiting up to ``timeout`` for it); ``True`` when
        the socket is drained for now (the last read found no message).

        While messages keep coming (``received()`` grows), it reads on without a
        ``select()`` per message, up to ``budget`` messages.
        """
        client = self.client
        first = before = received()
        if self.reader is not None and self.reader.pending():
            # select() cannot see what is buffered already: read it first.
            rc = client.loop_read()
            if rc == paho.MQTT_ERR_SUCCESS:
                rc = client.loop(0.0)
        else:
            rc = client.loop(timeout)
        while rc == paho.MQTT_ERR_SUCCESS and received() != before and received() - first < budget:
            before = received()
            rc = client.loop_read()
        if rc != paho.MQTT_ERR_SUCCESS:
            self._lost()
        return received() == before

    def reconnect_if_due(self, poll_s: float, stop: threading.Event) -> None:
        """Dial the broker when the backoff allows, else wait (at most ``poll_s``)."""
        now = time.monotonic()
        if now >= self._connect_at:
            try:
                self.client.reconnect()
                self.connected = True
            except OSError as exc:
                self._retry_connect(f"cannot reach the broker: {exc}")
        else:
            stop.wait(min(poll_s, self._connect_at - now))

    def nap(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the writer's wake-up only, leaving the broker's
        messages in the socket (one read for them all later); ``False`` if it cannot."""
        wakeup = getattr(self.client, WAKEUP_READ, None)
        if wakeup is None:
            return False
        try:
            ready, _, _ = select.select([wakeup], [], [], seconds)
            if ready:
                wakeup.recv(4096)  # the writer's wake-up bytes
        except (OSError, ValueError):
            return False
        return True

    def wake(self) -> None:
        """End the ingest thread's wait on the broker's socket (from any thread)."""
        wakeup = getattr(self.client, WAKEUP_WRITE, None)
        if wakeup is not None:
            with contextlib.suppress(OSError):
                wakeup.send(b"w")

    def _retry_connect(self, why: str) -> None:
        delay = random.uniform(BACKOFF_MIN_S / 2, self._backoff)  # noqa: S311  (jitter)
        logger.warning("%s; retrying in %.1f s", why, delay)
        self._connect_at = time.monotonic() + delay
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def _lost(self) -> None:
        self.connected = False
        metrics.INGEST_CONNECTED.set(0)
        self.on_lost()
        # The will of the next connection carries that connection's time.
        self.client.will_set(
            topics.SERVER_STATE, self.announcement(online=False), qos=1, retain=True
        )
        self._retry_connect("lost the broker")

    # -- acknowledging and stopping -------------------------------------------------------

    def acknowledge(self, entries: Iterable[Pending]) -> None:
        """Acknowledge committed messages on the connection they came on."""
        client, generation = self.client, self.generation
        if not self.connected:
            return
        # An older connection's messages come again on the new one (or are gone
        # with a clean session); its message ids may now name other messages.
        if self.reader is not None:
            entries = list(entries)
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

    def unsubscribe(self) -> None:
        """Stop the deliveries (a stopping clean session; :attr:`unsubscribed` follows)."""
        self.client.unsubscribe(list(topics.ingest_filters(self.group)))

    def announce_offline(self, timeout_s: float) -> None:
        """Publish the server's offline announcement and wait (a while) for the broker."""
        if not self.connected:
            return
        client = self.client
        info = client.publish(
            topics.SERVER_STATE, self.announcement(online=False), qos=1, retain=True
        )
        deadline = time.monotonic() + timeout_s
        while self.connected and not info.is_published() and time.monotonic() < deadline:
            if client.loop(0.05) != paho.MQTT_ERR_SUCCESS:
                self.connected = False

    def disconnect(self) -> None:
        """Close the connection (the will is not published)."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.connected = False

    # -- paho's callbacks -----------------------------------------------------------------

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
        self.generation += 1
        self.unsubscribed = False
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
            topics.SERVER_STATE, self.announcement(online=True), qos=1, retain=True
        )
        # Ready once the broker holds the announcement (see _on_published).
        self._announcement_mid = info.mid
        self._backoff = BACKOFF_MIN_S
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
            self.on_ready()

    def _on_unsubscribe(self, _client: paho.Client, _userdata: Any, mid: int, *_args: Any) -> None:
        if mid == self._legacy_unsubscribe_mid:
            self._legacy_unsubscribe_mid = None
            return
        self.unsubscribed = True

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        """paho's path: messages :class:`receive.PublishReader` leaves to paho (or all of them)."""
        try:
            topic = message.topic.encode()
        except UnicodeDecodeError:
            topic = b""
        self.on_publish(
            topic, bytes(message.payload), message.mid, message.qos, message.retain, utcnow()
        )
