"""The ingest's logic: sequence accounting, clock offset, thresholds, alerts, online state, and
the MQTT receive path (over a real socket pair)."""

from __future__ import annotations

import select
import socket
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from provisioning.broker import ingest_group
from provisioning.ca import CertificateAuthority
from server.config import DEFAULT_THRESHOLDS, ServerSettings, ThresholdRule
from server.ingest.alerts import (
    AlertKey,
    apply_plan,
    evaluate_thresholds,
    plan_for_sample,
    rule_matches,
)
from server.ingest.clock import ClockOffsetEstimator, is_skewed
from server.ingest.online import OnlineStatus, next_status
from server.ingest.receive import PublishReader, acknowledge
from server.ingest.sequence import MAX_SEQ_JUMP, NewSample, SequenceMark, account_samples
from server.ingest.service import default_group
from server.ingest.timestamps import FUTURE_MARGIN_S, plausible_ts
from shared import topics
from shared.models import DeviceState, Fault

T0 = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
EMPTY = SequenceMark(None, None, None)


def samples(*seqs: int, boot: str = "b1", start: datetime = T0) -> list[NewSample]:
    return [NewSample(boot, seq, start + timedelta(seconds=seq)) for seq in seqs]


# -- sequence accounting ---------------------------------------------------------------


def test_contiguous_samples_count_nothing_missing() -> None:
    outcome = account_samples(EMPTY, samples(0, 1, 2, 3))
    assert outcome.missing_delta == 0
    assert outcome.mark.last_seq == 3
    assert outcome.mark.boot_id == "b1"


def test_a_gap_counts_the_skipped_numbers() -> None:
    assert account_samples(EMPTY, samples(0, 1, 5)).missing_delta == 3


def test_a_boot_first_seen_mid_way_counts_its_start_missing() -> None:
    assert account_samples(EMPTY, samples(4)).missing_delta == 4


def test_a_late_sample_uncounts_its_gap() -> None:
    first = account_samples(EMPTY, samples(0, 3))
    assert first.missing_delta == 2
    late = account_samples(first.mark, samples(1))
    assert late.missing_delta == -1
    assert late.late == 1
    assert late.mark.last_seq == 3


def test_a_new_boot_starts_again_from_zero() -> None:
    first = account_samples(EMPTY, samples(0, 1, 2))
    reboot = account_samples(first.mark, samples(0, 1, boot="b2", start=T0 + timedelta(hours=1)))
    assert reboot.missing_delta == 0
    assert reboot.mark.boot_id == "b2"
    assert reboot.mark.last_seq == 1


def numbered(*seqs: int, boot: str = "b1") -> list[NewSample]:
    """Samples in arrival order, a second apart, whatever their ``seq``."""
    return [NewSample(boot, seq, T0 + timedelta(seconds=i)) for i, seq in enumerate(seqs)]


def test_an_implausible_jump_is_a_reset_not_a_trillion_missing() -> None:
    outcome = account_samples(EMPTY, numbered(0, 1, 10**12, 10**12 + 1))
    assert outcome.missing_delta == 0
    assert outcome.resets == 1
    assert outcome.mark.last_seq == 10**12 + 1


def test_a_jump_back_down_is_a_reset_too_not_a_late_sample() -> None:
    first = account_samples(EMPTY, numbered(0, 10**12))
    back = account_samples(first.mark, numbered(2, 3))
    assert (back.resets, back.late, back.missing_delta) == (1, 0, 0)
    assert back.mark.last_seq == 3


def test_the_largest_plausible_gap_is_still_counted_missing() -> None:
    outcome = account_samples(EMPTY, numbered(0, MAX_SEQ_JUMP))
    assert (outcome.missing_delta, outcome.resets) == (MAX_SEQ_JUMP - 1, 0)
    beyond = account_samples(EMPTY, numbered(0, MAX_SEQ_JUMP + 1))
    assert (beyond.missing_delta, beyond.resets) == (0, 1)


def test_a_boot_first_seen_at_an_implausible_seq_is_a_reset() -> None:
    outcome = account_samples(EMPTY, numbered(2**63 - 1))
    assert (outcome.missing_delta, outcome.resets) == (0, 1)


@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=30))
def test_missing_never_exceeds_a_bounded_amount_per_sample(seqs: list[int]) -> None:
    outcome = account_samples(EMPTY, numbered(*seqs))
    assert outcome.missing_delta <= len(seqs) * MAX_SEQ_JUMP


@pytest.mark.parametrize(
    ("offset_s", "plausible"),
    [
        (0.0, True),
        (-3600.0, True),  # an outbox sent late
        (60.0 + FUTURE_MARGIN_S, True),
        (60.0 + FUTURE_MARGIN_S + 1, False),
        (-31 * 86400.0, False),  # older than the retention
        (2**40, False),
    ],
)
def test_plausible_ts_is_bounded_by_the_skew_ahead_and_the_retention_behind(
    offset_s: float, plausible: bool
) -> None:
    settings = ServerSettings(clock_skew_max_s=60.0, telemetry_retention_days=30)
    received = T0
    ts = (
        received + timedelta(seconds=offset_s)
        if offset_s < 2**39
        else datetime(2099, 1, 1, tzinfo=UTC)
    )
    assert plausible_ts(ts, received, settings) is plausible
    assert plausible_ts(datetime(1970, 1, 1, tzinfo=UTC), received, settings) is False


def test_a_straggler_of_an_older_boot_is_not_counted() -> None:
    newer = account_samples(EMPTY, samples(0, 1, boot="b2", start=T0 + timedelta(hours=1)))
    old = account_samples(newer.mark, samples(7, boot="b1"))
    assert old.stale_boot == 1
    assert old.missing_delta == 0
    assert old.mark == newer.mark


@given(st.permutations(list(range(30))), st.integers(min_value=1, max_value=29))
def test_any_arrival_order_of_a_complete_boot_ends_with_nothing_missing(
    order: list[int], split: int
) -> None:
    """Whatever order samples arrive in (and however batched), all of them means none missing."""
    first = account_samples(EMPTY, [NewSample("b", s, T0) for s in order[:split]])
    second = account_samples(first.mark, [NewSample("b", s, T0) for s in order[split:]])
    assert first.missing_delta + second.missing_delta == 0


@given(st.sets(st.integers(min_value=0, max_value=50), min_size=1))
def test_missing_is_the_numbers_never_received(received: set[int]) -> None:
    outcome = account_samples(EMPTY, [NewSample("b", s, T0) for s in sorted(received)])
    assert outcome.missing_delta == max(received) + 1 - len(received)


# -- clock offset ------------------------------------------------------------------------


def test_clock_offset_discounts_queueing_delay() -> None:
    clock = ClockOffsetEstimator()
    # The device runs 10 s ahead; deliveries take 0.05 to 3 s.
    for delay in (3.0, 0.05, 1.5, 2.0):
        sent = T0 + timedelta(seconds=10)
        estimate = clock.observe("d", sent, T0 + timedelta(seconds=delay))
    assert estimate == pytest.approx(10 - 0.05)
    assert clock.estimate("d") == estimate
    assert clock.estimate("other") is None


def test_clock_offset_window_forgets_old_observations() -> None:
    clock = ClockOffsetEstimator(window=3)
    clock.observe("d", T0 + timedelta(seconds=100), T0)  # before the clock was set right
    for _ in range(3):
        estimate = clock.observe("d", T0, T0 + timedelta(seconds=0.1))
    assert estimate == pytest.approx(-0.1)


@pytest.mark.parametrize(
    ("offset", "skewed"), [(None, False), (0.5, False), (60.0, False), (61.0, True), (-90, True)]
)
def test_skew_is_past_the_limit_either_way(offset: float | None, skewed: bool) -> None:
    assert is_skewed(offset, 60.0) is skewed


# -- thresholds and alerts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "metric", "matches"),
    [
        ("mem_percent", "mem_percent", True),
        ("mem_percent", "mem_percent_x", False),
        ("disk_percent:*", "disk_percent:/", True),
        ("disk_percent:*", "disk_percent:/var", True),
        ("disk_percent:*", "disk_percent", False),
        ("mfp.toner_*", "mfp.toner_black_percent", True),
        ("*", "anything", True),
    ],
)
def test_rule_matching(pattern: str, metric: str, matches: bool) -> None:
    assert rule_matches(pattern, metric) is matches


def test_default_rules_watch_each_disk_on_its_own() -> None:
    violated, satisfied = evaluate_thresholds(
        DEFAULT_THRESHOLDS,
        {"disk_percent:/": 95.0, "disk_percent:/var": 10.0, "mem_percent": 40.0},
    )
    assert set(violated) == {AlertKey("rule", "disk_full", "disk_percent:/")}
    assert violated[AlertKey("rule", "disk_full", "disk_percent:/")].severity == "warning"
    assert satisfied == {
        AlertKey("rule", "disk_full", "disk_percent:/var"),
        AlertKey("rule", "memory_high", "mem_percent"),
    }


def test_rule_below_and_above_bounds() -> None:
    rule = ThresholdRule(metric="temp", above=80, below=5, severity="critical")
    violated, _ = evaluate_thresholds([rule], {"temp": 2.0})
    (details,) = violated.values()
    assert details.message == "temp 2 below 5"
    assert details.severity == "critical"
    assert evaluate_thresholds([rule], {"temp": 20.0})[0] == {}


def test_a_fault_opens_one_alert_and_clears_when_gone() -> None:
    fault = Fault(code="SC-541", message="Fuser thermistor open")
    plan = plan_for_sample(set(), [fault, fault], {}, [])
    assert list(plan.to_open) == [AlertKey("device", "SC-541")]
    still_open = apply_plan(set(), plan)
    assert not plan_for_sample(still_open, [fault], {}, [])  # no second alert
    cleared = plan_for_sample(still_open, [], {}, [])
    assert cleared.to_clear == {AlertKey("device", "SC-541")}
    assert apply_plan(still_open, cleared) == set()


def test_a_rule_alert_stays_open_while_its_metric_is_absent() -> None:
    key = AlertKey("rule", "disk_full", "disk_percent:/")
    assert not plan_for_sample({key}, [], {"cpu_percent": 1.0}, DEFAULT_THRESHOLDS)
    plan = plan_for_sample({key}, [], {"disk_percent:/": 50.0}, DEFAULT_THRESHOLDS)
    assert plan.to_clear == {key}


# -- online state ------------------------------------------------------------------------

ONLINE = OnlineStatus(True, "online", T0, "b1")


def state(online: bool, ts: datetime | None = T0, **fields: str) -> DeviceState:
    return DeviceState(online=online, ts=ts, **fields)


def test_live_will_and_shutdown_give_their_reasons() -> None:
    later = T0 + timedelta(minutes=1)
    will = next_status(ONLINE, state(False), retained=False, received_at=later, clock_offset_s=0)
    assert will == OnlineStatus(False, "connection_lost", later, "b1")
    down = next_status(
        ONLINE, state(False, reason="shutdown"), retained=False, received_at=later, clock_offset_s=0
    )
    assert down is not None
    assert down.reason == "shutdown"


def test_a_repeated_birth_changes_nothing() -> None:
    assert (
        next_status(ONLINE, state(True), retained=False, received_at=T0, clock_offset_s=0) is None
    )


def test_a_retained_birth_older_than_the_registry_is_ignored() -> None:
    silent = OnlineStatus(False, "silent", T0 + timedelta(minutes=5), "b1")
    assert next_status(silent, state(True), retained=True, received_at=T0, clock_offset_s=0) is None
    newer = state(True, ts=T0 + timedelta(minutes=6))
    after = next_status(
        silent, newer, retained=True, received_at=T0 + timedelta(minutes=7), clock_offset_s=0
    )
    assert after is not None
    assert after.online
    assert after.changed_at == T0 + timedelta(minutes=6)


def test_a_retained_birth_is_compared_on_the_servers_clock() -> None:
    silent = OnlineStatus(False, "silent", T0 + timedelta(minutes=5), "b1")
    # Stamped 6 min after T0 by a device clock 2 minutes fast: really 4 min, older.
    ahead = state(True, ts=T0 + timedelta(minutes=6))
    got = next_status(
        silent, ahead, retained=True, received_at=T0 + timedelta(minutes=7), clock_offset_s=120
    )
    assert got is None


def test_a_retained_will_of_the_same_boot_ends_the_session() -> None:
    # The will was composed at connect time, before the birth it outlives.
    will = state(False, ts=T0 - timedelta(seconds=1), boot_id="b1")
    later = T0 + timedelta(minutes=1)
    got = next_status(ONLINE, will, retained=True, received_at=later, clock_offset_s=0)
    assert got == OnlineStatus(False, "connection_lost", later, "b1")


def test_a_retained_will_of_an_older_boot_is_ignored() -> None:
    will = state(False, ts=T0 - timedelta(hours=1), boot_id="b0")
    assert next_status(ONLINE, will, retained=True, received_at=T0, clock_offset_s=0) is None


# -- the receive path (PublishReader over a real socket pair) ----------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, byte = divmod(value, 128)
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _publish_packet(
    topic: str,
    payload: bytes,
    *,
    mid: int = 0,
    qos: int = 1,
    retain: bool = False,
    properties: bytes = b"\x00",
    v5: bool = True,
) -> bytes:
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name
    if qos:
        body += struct.pack("!H", mid)
    if v5:
        body += properties
    body += payload
    header = 0x30 | (qos << 1) | int(retain)
    return bytes([header]) + _varint(len(body)) + body


Received = tuple[str, bytes, int, int, bool, str]


class _Harness:
    """A paho client whose socket is one end of a socket pair; the test writes the other."""

    def __init__(self, v5: bool = True) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id="reader-test",
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            manual_ack=True,
        )
        self.ours, self.broker = socket.socketpair()
        self.ours.setblocking(False)
        self.client._sock = self.ours
        self.received: list[Received] = []
        self.reader = PublishReader(self.client, self._fast)
        self.client.on_message = self._slow

    def _fast(
        self, topic: bytes, payload: bytes, mid: int, qos: int, retain: bool, _at: Any
    ) -> None:
        self.received.append((topic.decode(), payload, mid, qos, retain, "fast"))

    def _slow(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.received.append(
            (
                message.topic,
                bytes(message.payload),
                message.mid,
                message.qos,
                message.retain,
                "paho",
            )
        )

    def feed(self, data: bytes) -> None:
        self.broker.sendall(data)
        while True:
            rc = self.client.loop_read()
            assert rc == paho.MQTT_ERR_SUCCESS
            if not self.reader.pending() and not self._readable():
                return

    def _readable(self) -> bool:
        return bool(select.select([self.ours], [], [], 0)[0])

    def close(self) -> None:
        self.client._sock = None
        self.ours.close()
        self.broker.close()


def _mixed_stream() -> tuple[bytes, list[Received]]:
    content_type = Properties(PacketTypes.PUBLISH)
    content_type.ContentType = "application/json"
    messages = [
        (_publish_packet("fieldlink/v1/a-1/telemetry", b'{"x":1}', mid=1), "fast"),
        (_publish_packet("fieldlink/v1/a-2/state", b"", mid=0, qos=0, retain=True), "fast"),
        (
            _publish_packet(
                "fieldlink/v1/a-3/events", b"e" * 300, mid=2, properties=content_type.pack()
            ),
            "paho",
        ),
        (_publish_packet("fieldlink/v1/a-4/telemetry", b"p" * 70_000, mid=65535), "fast"),
        (_publish_packet("fieldlink/v1/a-5/telemetry", b"{}", mid=3), "fast"),
    ]
    expected = [
        ("fieldlink/v1/a-1/telemetry", b'{"x":1}', 1, 1, False, "fast"),
        ("fieldlink/v1/a-2/state", b"", 0, 0, True, "fast"),
        ("fieldlink/v1/a-3/events", b"e" * 300, 2, 1, False, "paho"),
        ("fieldlink/v1/a-4/telemetry", b"p" * 70_000, 65535, 1, False, "fast"),
        ("fieldlink/v1/a-5/telemetry", b"{}", 3, 1, False, "fast"),
    ]
    return b"".join(packet for packet, _ in messages), expected


def test_the_reader_decodes_publishes_and_leaves_properties_to_paho() -> None:
    stream, expected = _mixed_stream()
    harness = _Harness()
    try:
        harness.feed(stream)
        assert harness.received == expected
    finally:
        harness.close()


@given(st.lists(st.integers(min_value=1, max_value=75_000), min_size=1, max_size=8))
def test_the_reader_reassembles_packets_split_anywhere(cuts: list[int]) -> None:
    stream, expected = _mixed_stream()
    harness = _Harness()
    try:
        position = 0
        for cut in sorted(cuts):
            if cut > position:
                harness.feed(stream[position:cut])
                position = cut
        harness.feed(stream[position:])
        assert harness.received == expected
    finally:
        harness.close()


def test_the_reader_speaks_mqtt_311_too() -> None:
    harness = _Harness(v5=False)
    try:
        harness.feed(_publish_packet("fieldlink/v1/a-1/telemetry", b"{}", mid=7, v5=False))
        assert harness.received == [("fieldlink/v1/a-1/telemetry", b"{}", 7, 1, False, "fast")]
    finally:
        harness.close()


def test_other_packets_go_to_paho_and_a_closed_socket_is_a_lost_connection() -> None:
    harness = _Harness()
    try:
        harness.client._ping_t = 123.0
        harness.feed(b"\xd0\x00")  # PINGRESP
        assert harness.client._ping_t == 0
        harness.broker.close()
        assert harness.client.loop_read() == paho.MQTT_ERR_CONN_LOST
    finally:
        harness.close()


def test_acknowledge_sends_every_puback_in_one_write() -> None:
    harness = _Harness()
    try:
        assert acknowledge(harness.client, [1, 2, 300]) == paho.MQTT_ERR_SUCCESS
        sent = harness.broker.recv(100)
        assert sent == b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x01\x2c"
        assert acknowledge(harness.client, []) == paho.MQTT_ERR_SUCCESS
    finally:
        harness.close()


def test_a_malformed_length_is_a_protocol_error() -> None:
    harness = _Harness()
    try:
        harness.broker.sendall(b"\x30\xff\xff\xff\xff\x01")
        assert harness.client.loop_read() == paho.MQTT_ERR_PROTOCOL
    finally:
        harness.close()


def test_the_ingest_joins_the_centers_secret_group(tmp_path: Path) -> None:
    """Devices can subscribe to any ``$share/`` group on Mosquitto 2.0: the server's
    is derived from the center's keys, not the public default."""
    settings = ServerSettings(state_dir=tmp_path / "state")
    assert default_group(settings) == topics.INGEST_GROUP  # no CA yet: a loopback demo
    ca = CertificateAuthority.init(tmp_path / "state")
    assert default_group(settings) == ingest_group(ca) != topics.INGEST_GROUP
