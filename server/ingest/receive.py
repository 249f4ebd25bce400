"""The ingest's receive path through paho: PUBLISH packets decoded here, acks sent in bulk.

paho's own receive path costs about 40 µs of CPU per message under MQTT 5 (three
or four ``recv()`` calls per packet, a ``Properties`` object built and cleared
for every PUBLISH, an ``MQTTMessage``, two log calls), and a manual
acknowledgement costs two system calls (a wake-up byte and a ``send()``).
:class:`PublishReader` takes over paho's ``_packet_read`` for one client:

- it reads the broker's socket in chunks of :data:`RECEIVE_CHUNK` bytes
  (through paho's own ``_sock_recv``, so TLS is unchanged) and splits them into
  packets itself;
- a QoS 0 or 1 PUBLISH without properties (what Mosquitto sends the ingest) is
  decoded here and handed to ``on_publish`` as bytes, with no objects built;
- every other packet (CONNACK, SUBACK, PUBACKs of our own publishes, PINGRESP,
  DISCONNECT, a PUBLISH with properties or at QoS 2) is handed to paho's own
  handler exactly as paho would have read it.

:func:`acknowledge` sends many PUBACKs as one write.

This relies on paho internals (:data:`PAHO_INTERNALS`, the keys of ``_in_packet``,
``paho.time_func``); :func:`supported` checks they are there, and :func:`fast_reader`
falls back to paho's plain path when they are not, with a warning (once per
process): the ingest still works, at several times the CPU per message. A canary
test (``tests/unit/server/test_ingest_receive.py``) fails when a paho upgrade
changes them.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho
from paho import mqtt as paho_mqtt
from paho.mqtt.enums import MQTTErrorCode

from shared.ids import utcnow

logger = logging.getLogger(__name__)

#: Bytes per ``recv()`` of the broker's socket.
RECEIVE_CHUNK = 65536
#: ``(topic, payload, mid, qos, retain, received_at)``; the time is that of the ``recv()``.
PublishHandler = Callable[[bytes, bytes, int, int, bool, datetime], None]

_PUBLISH = 0x30
_MALFORMED_LENGTH = -2
_PUBACK = 0x40
_UNSIGNED_SHORT = struct.Struct("!H")
_PUBACK_PACKET = struct.Struct("!BBH")
#: paho 2.2 has it in ``paho.mqtt.exception``, older ones elsewhere: take client.py's import.
_MALFORMED: type[Exception] = getattr(paho, "MalformedPacket", ValueError)
#: The attributes of a paho client the fast path reads, calls or replaces.
PAHO_INTERNALS = (
    "_packet_read",
    "_packet_handle",
    "_packet_queue",
    "_in_packet",
    "_sock",
    "_sock_recv",
    "_msgtime_mutex",
    "_easy_log",
    "_protocol",
    "_last_bytes_received",
)
_fallback_warned = False


def supported(client: paho.Client) -> bool:
    """Whether this paho has the internals :class:`PublishReader` takes over."""
    return all(hasattr(client, name) for name in PAHO_INTERNALS) and hasattr(paho, "time_func")


def fast_reader(client: paho.Client, on_publish: PublishHandler) -> PublishReader | None:
    """A :class:`PublishReader` for ``client``, or ``None`` when this paho lacks the
    internals it takes over (then paho reads, and ``on_message`` gets every message).

    The fallback is logged as a warning, once per process.
    """
    if supported(client):
        return PublishReader(client, on_publish)
    global _fallback_warned  # once per process, not per connection
    if not _fallback_warned:
        _fallback_warned = True
        missing = [name for name in PAHO_INTERNALS if not hasattr(client, name)]
        if not hasattr(paho, "time_func"):
            missing.append("paho.time_func")
        logger.warning(
            "paho %s lacks the internals of the ingest's fast PUBLISH path (%s): "
            "falling back to paho's own reader (several times the CPU per message)",
            getattr(paho_mqtt, "__version__", "?"),
            ", ".join(missing),
        )
    return None


def _packet_end(data: bytes | bytearray, start: int) -> tuple[int, int]:
    """``(end, body start)`` of the packet at ``start``; ``end`` is -1 while its fixed
    header is incomplete, :data:`_MALFORMED_LENGTH` when that is invalid, and may lie
    past the data read so far."""
    size = len(data)
    if size - start < 2:
        return -1, 0
    # The type byte, then 1-4 bytes of "remaining length".
    length = shift = 0
    index = start + 1
    while index < size:
        byte = data[index]
        index += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return index + length, index
        shift += 7
        if shift > 21:
            return _MALFORMED_LENGTH, 0
    return -1, 0


def _fresh_in_packet() -> dict[str, Any]:
    """paho's empty ``_in_packet`` (no packet being read)."""
    return {
        "command": 0,
        "have_remaining": 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": 0,
        "packet": bytearray(b""),
        "to_process": 0,
        "pos": 0,
    }


class PublishReader:
    """Reads one paho client's socket in chunks and decodes PUBLISH packets itself.

    Args:
        client: An MQTT 5 paho client (``manual_ack=True``: nothing here acknowledges).
        on_publish: Called for each fast-path PUBLISH; paho's ``on_message`` still
            receives the rest (with properties, QoS 2).
    """

    def __init__(self, client: paho.Client, on_publish: PublishHandler) -> None:
        self._client = client
        self._on_publish = on_publish
        self._recv: Callable[[int], bytes] = client._sock_recv  # paho's own, TLS included
        self._socket: object = None
        self._data: bytes | bytearray = b""
        self._position = 0
        self._received_at = utcnow()
        self._v5 = client._protocol == paho.MQTTv5
        # An instance attribute shadows the method: paho's loop() and loop_read() call this.
        client._packet_read = self.packet_read  # type: ignore[method-assign]

    def pending(self) -> bool:
        """Whether a complete packet waits here (``select()`` would not see it).

        Only after a handler's error: :meth:`packet_read` handles every complete
        packet it has before it returns.
        """
        if self._client._sock is not self._socket:
            return False
        end, _index = _packet_end(self._data, self._position)
        return 0 <= end <= len(self._data)

    def packet_read(self) -> MQTTErrorCode:
        """paho's ``_packet_read``: handle the complete packets buffered, else read more.

        Returns paho's codes: ``MQTT_ERR_AGAIN`` when nothing could be read,
        ``MQTT_ERR_CONN_LOST`` when the socket failed or closed, a handler's
        error, else ``MQTT_ERR_SUCCESS``.
        """
        client = self._client
        if client._sock is not self._socket:
            # A new connection: whatever the old one left here is void.
            self._socket, self._data, self._position = client._sock, b"", 0
        handled = False
        while True:
            data, start = self._data, self._position
            end, index = _packet_end(data, start)
            if end == _MALFORMED_LENGTH:
                client._easy_log(paho.MQTT_LOG_ERR, "malformed remaining length")
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            if end < 0 or end > len(data):
                if handled:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                rc = self._read_more(data, start)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return rc
                continue
            command = data[start]
            self._position = end
            handled = True
            if command & 0xF0 == _PUBLISH and not command & 0x04:  # QoS 0 or 1
                rc = self._publish(command, data, index, end, start)
            else:
                rc = self._paho_handle(command, data, start, index, end)
                if client._sock is not self._socket:
                    return rc  # paho closed the connection (a DISCONNECT from the broker)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc

    def _read_more(self, data: bytes | bytearray, start: int) -> MQTTErrorCode:
        """One ``recv()``, appended to what is left of the buffer (as paho reports errors)."""
        client = self._client
        try:
            chunk = self._recv(RECEIVE_CHUNK)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:  # TimeoutError and ConnectionError included
            client._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not chunk:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if start >= len(data):
            self._data = chunk
        elif isinstance(data, bytearray) and start == 0:
            data += chunk  # a large packet grows in place (no quadratic copying)
        else:
            rest = bytearray(data[start:])
            rest += chunk
            self._data = rest
        self._position = 0
        self._received_at = utcnow()
        with client._msgtime_mutex:
            client._last_bytes_received = paho.time_func()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _publish(
        self, command: int, data: bytes | bytearray, index: int, end: int, start: int
    ) -> MQTTErrorCode:
        """Decode a QoS 0/1 PUBLISH; one with properties goes to paho instead."""
        if end - index < 2:
            return self._paho_handle(command, data, start, index, end)
        topic_end = index + 2 + _UNSIGNED_SHORT.unpack_from(data, index)[0]
        if topic_end > end or topic_end == index + 2:
            # Malformed, or an empty topic (MQTT 5: a topic alias): paho's case.
            return self._paho_handle(command, data, start, index, end)
        qos = (command & 0x06) >> 1
        mid = 0
        position = topic_end
        if qos:
            position += 2
            if position > end:
                return self._paho_handle(command, data, start, index, end)
            mid = _UNSIGNED_SHORT.unpack_from(data, topic_end)[0]
        if self._v5:
            if position >= end or data[position] != 0:
                # Properties (or a malformed packet): paho decodes those.
                return self._paho_handle(command, data, start, index, end)
            position += 1
        self._on_publish(
            bytes(data[index + 2 : topic_end]),
            bytes(data[position:end]),
            mid,
            qos,
            bool(command & 0x01),
            self._received_at,
        )
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _paho_handle(
        self, command: int, data: bytes | bytearray, start: int, index: int, end: int
    ) -> MQTTErrorCode:
        """Hand one complete packet to paho's own handler, as its reader would."""
        client = self._client
        length_bytes = list(data[start + 1 : index])
        packet: Any = {
            "command": command,
            "have_remaining": 1,
            "remaining_count": length_bytes,
            "remaining_mult": 128 ** len(length_bytes),
            "remaining_length": end - index,
            "packet": bytearray(data[index:end]),
            "to_process": 0,
            "pos": 0,
        }
        client._in_packet = packet
        try:
            rc = client._packet_handle()
        except _MALFORMED as exc:
            client._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            fresh: Any = _fresh_in_packet()
            client._in_packet = fresh
        return rc


def acknowledge(client: paho.Client, mids: Iterable[int]) -> MQTTErrorCode:
    """Send a PUBACK for each QoS 1 message id, all in one write.

    paho's ``client.ack()`` queues and writes each PUBACK on its own (two system
    calls a message); this queues them as one packet of concatenated PUBACKs,
    which paho writes like any other (MQTT 3.1.1 and 5: 4 bytes each, reason
    code "success" implied).
    """
    pack = _PUBACK_PACKET.pack
    data = b"".join([pack(_PUBACK, 2, mid) for mid in mids])
    if not data:
        return MQTTErrorCode.MQTT_ERR_SUCCESS
    return client._packet_queue(_PUBACK, data, 0, 1)
