"""The PUBLISH fast path's bargain with paho: a canary on the internals it uses, and the fallback.

:mod:`server.ingest.receive` replaces paho's ``_packet_read`` and calls or reads
other private names. A paho upgrade that renames one would silently send the
ingest down paho's own path (several times the CPU per message): the canary
fails first, naming what changed.
"""

from __future__ import annotations

import inspect
import logging

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from server.ingest import receive
from server.ingest.connection import WAKEUP_READ, WAKEUP_WRITE


def _client() -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)


def test_canary_paho_still_has_every_internal_the_fast_path_touches() -> None:
    client = _client()
    missing = [name for name in receive.PAHO_INTERNALS if not hasattr(client, name)]
    assert missing == [], f"paho changed: {missing} are gone"
    assert callable(getattr(paho, "time_func", None)), "paho.time_func is gone"
    assert client._protocol == paho.MQTTv5
    # The reader resets _in_packet to paho's idle shape, key for key.
    assert set(client._in_packet) == set(receive._fresh_in_packet())
    assert client._in_packet == receive._fresh_in_packet()
    # What it calls, with the arguments it passes.
    assert list(inspect.signature(client._packet_handle).parameters) == []
    assert list(inspect.signature(client._packet_read).parameters) == []
    assert list(inspect.signature(client._packet_queue).parameters)[:4] == [
        "command",
        "packet",
        "mid",
        "qos",
    ]
    assert list(inspect.signature(client._sock_recv).parameters) == ["bufsize"]
    assert list(inspect.signature(client._easy_log).parameters)[:2] == ["level", "fmt"]
    assert isinstance(client._last_bytes_received, float)
    # The ingest's nap and wake-up use paho's socket pair (getattr: optional, but expected).
    assert hasattr(client, WAKEUP_READ)
    assert hasattr(client, WAKEUP_WRITE)
    assert receive.supported(client)


def test_the_fast_path_takes_over_paho_reader() -> None:
    client = _client()
    reader = receive.fast_reader(client, lambda *_args: None)
    assert isinstance(reader, receive.PublishReader)
    assert client._packet_read == reader.packet_read


def test_falling_back_to_paho_reader_is_a_warning_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receive, "_fallback_warned", False)
    changed = _client()
    del changed._in_packet  # as if a paho upgrade renamed it
    original = changed._packet_read
    with caplog.at_level(logging.WARNING, logger="server.ingest.receive"):
        assert receive.fast_reader(changed, lambda *_args: None) is None
        assert receive.fast_reader(_without_in_packet(), lambda *_args: None) is None
    assert changed._packet_read == original  # paho's own reader stays
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "_in_packet" in warnings[0].getMessage()
    assert "falling back to paho's own reader" in warnings[0].getMessage()


def _without_in_packet() -> paho.Client:
    client = _client()
    del client._in_packet
    return client
