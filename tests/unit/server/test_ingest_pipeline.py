"""The ingest's stages on their own, without a broker or a database.

The batching policy with the clock passed in, validation of raw bytes, and the
rules that apply a batch to plain device rows (alerts, online state, sequence
gaps, clock offset). The end-to-end behaviour is tests/integration/test_ingest.py's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from server.config import ServerSettings
from server.ingest.apply import BatchRules, ThresholdChecks, admit
from server.ingest.batcher import GATHER_S, Batcher
from server.ingest.clock import ClockOffsetEstimator
from server.ingest.device_row import DeviceRow
from server.ingest.items import (
    BatchResult,
    EventItem,
    IngestItem,
    RejectedItem,
    SampleItem,
    StateItem,
)
from server.ingest.validate import Validator
from shared import topics
from shared.ids import utcnow
from shared.models import DeviceEvent, DeviceState, Fault, HealthSample, dump_message

SETTINGS = ServerSettings(database_url="sqlite://", ingest_batch_size=3, ingest_flush_ms=100)
NOW = utcnow()


def _sample(device_id: str, seq: int, **fields: Any) -> HealthSample:
    values: dict[str, Any] = {
        "device_id": device_id,
        "boot_id": "b1",
        "seq": seq,
        "ts": NOW + timedelta(seconds=seq),
        "status": "ok",
        "metrics": {"cpu_percent": 3.0},
    }
    values.update(fields)
    return HealthSample(**values)


def _item(device_id: str, seq: int, **fields: Any) -> SampleItem:
    return SampleItem(device_id, _sample(device_id, seq, **fields), NOW)


# -- the batching policy --------------------------------------------------------------------


def test_a_full_batch_goes_at_once_and_is_acknowledged_only_once_committed() -> None:
    batcher = Batcher(batch_size=3, flush_s=0.1, clock=lambda: 10.0)
    items: list[IngestItem] = [_item("mfp-1", seq) for seq in range(4)]
    for mid, item in enumerate(items, start=1):
        batcher.add(item, mid, 1, 1)
    batch, done = batcher.take(10.0, idle=False)
    assert (batch, done) == (items[:3], [])
    assert batcher.in_flight
    assert batcher.take(10.0, idle=False) == ([], [])  # one batch in flight at a time
    committed = batcher.settle(True)
    assert [mid for _item, mid, _qos, _gen in committed] == [1, 2, 3]
    assert batcher.pending_items == 1


def test_a_partial_batch_waits_for_the_gather_time_when_idle_else_the_flush_time() -> None:
    batcher = Batcher(batch_size=3, flush_s=0.1, clock=lambda: 10.0)
    batcher.add(_item("mfp-1", 0), 1, 1, 1)
    assert batcher.take(10.0 + GATHER_S / 2, idle=True) == ([], [])
    assert batcher.take(10.0 + GATHER_S, idle=False) == ([], [])  # messages keep coming
    batch, _done = batcher.take(10.0 + GATHER_S, idle=True)
    assert len(batch) == 1


def test_a_failed_batch_stays_unacknowledged_until_the_retry_time() -> None:
    batcher = Batcher(batch_size=3, flush_s=0.1, clock=lambda: 10.0)
    batcher.add(_item("mfp-1", 0), 1, 1, 1)
    batch, _done = batcher.take(11.0, idle=False)
    assert batcher.settle(False, retry_at=20.0) == []
    assert batcher.take(19.9, idle=False) == ([], [])
    assert batcher.take(20.0, idle=False)[0] == batch


def test_messages_without_an_item_are_acknowledged_without_a_write() -> None:
    batcher = Batcher(batch_size=3, flush_s=0.1, clock=lambda: 10.0)
    batcher.add(None, 7, 1, 1)
    batch, done = batcher.take(11.0, idle=False)
    assert batch == []
    assert [mid for _item, mid, _qos, _gen in done] == [7]
    assert batcher.pending == []


# -- validation ------------------------------------------------------------------------------


def test_validation_turns_bytes_into_items_and_refuses_what_is_wrong() -> None:
    validate = Validator(SETTINGS)
    good = validate(
        topics.telemetry("mfp-1").encode(),
        dump_message(_sample("mfp-1", 0, ts=NOW)),
        retain=False,
        received_at=NOW,
    )
    assert isinstance(good, SampleItem)
    assert not good.ts_untrusted
    # A device speaking for another: refused, counted on the topic's device.
    other = validate(
        topics.telemetry("mfp-1").encode(),
        dump_message(_sample("mfp-2", 0)),
        retain=False,
        received_at=NOW,
    )
    assert other == RejectedItem("mfp-1", "device_mismatch")
    assert validate(b"not/a/device/topic", b"{}", retain=False, received_at=NOW) is None
    assert validate(b"\xff\xfe", b"{}", retain=False, received_at=NOW) is None
    garbage = validate(topics.state("mfp-1").encode(), b"{", retain=True, received_at=NOW)
    assert isinstance(garbage, RejectedItem)
    # Stamped years ahead: kept at the receive time, flagged.
    future = validate(
        topics.telemetry("mfp-1").encode(),
        dump_message(_sample("mfp-1", 1, ts=NOW + timedelta(days=3650))),
        retain=False,
        received_at=NOW,
    )
    assert isinstance(future, SampleItem)
    assert future.ts_untrusted
    assert future.sample.ts == NOW


# -- the rules --------------------------------------------------------------------------------


def _row(device_id: str, **fields: Any) -> DeviceRow:
    values: dict[str, Any] = {
        "id": device_id,
        "boot_id": None,
        "last_seq": None,
        "status": None,
        "health_ts": None,
        "last_seen": None,
        "online": False,
        "online_reason": None,
        "online_changed_at": None,
        "agent_version": None,
        "clock_offset_s": None,
        "clock_skewed": False,
        "telemetry_received": 0,
        "telemetry_missing": 0,
        "telemetry_rejected": 0,
    }
    values.update(fields)
    return DeviceRow(**values)


def _apply(
    items: list[IngestItem], devices: dict[str, DeviceRow], open_ids: Any = None
) -> tuple[BatchResult, Any]:
    result = BatchResult()
    accepted, samples = admit(items, devices, result)
    inserted = {(i.device_id, i.sample.boot_id, i.sample.seq) for i in samples}
    rules = BatchRules(
        SETTINGS,
        checks_for=ThresholdChecks(SETTINGS),
        clock=ClockOffsetEstimator(),
        devices=devices,
        open_ids=open_ids or {device_id: {} for device_id in devices},
        inserted=inserted,
        result=result,
    )
    return result, rules.apply(accepted)


def test_rules_count_gaps_bring_a_silent_device_online_and_keep_the_newest_health() -> None:
    devices = {"mfp-1": _row("mfp-1", online_reason="silent")}
    items: list[IngestItem] = [_item("mfp-1", 0), _item("mfp-1", 3), _item("mfp-1", 0)]
    result, changes = _apply(items, devices)
    row = devices["mfp-1"]
    assert (result.stored, result.duplicates, result.missing_delta) == (2, 1, 2)
    assert (row.online, row.online_reason, row.last_seq, row.telemetry_missing) == (
        True,
        "online",
        3,
        2,
    )
    assert row.health_ts == NOW + timedelta(seconds=3)
    assert result.gap_devices == [("mfp-1", 2)]
    assert [e["type"] for e in changes.events] == ["online"]
    assert changes.with_health == {"mfp-1"}


def test_rules_refuse_revoked_and_unregistered_devices() -> None:
    devices = {"mfp-1": _row("mfp-1", revoked_at=NOW)}
    state = StateItem("mfp-1", DeviceState(online=True, ts=NOW), False, NOW)
    items: list[IngestItem] = [_item("mfp-1", 0), state, _item("ghost", 0)]
    result, changes = _apply(items, devices)
    assert (result.revoked, result.unregistered, result.stored) == (2, 1, 0)
    assert devices["mfp-1"].telemetry_rejected == 2
    assert devices["mfp-1"].online is False
    assert changes.events == []


def test_a_fault_raised_and_cleared_in_one_batch_is_stored_closed() -> None:
    devices = {"mfp-1": _row("mfp-1", online=True, online_reason="online")}
    fault = Fault(code="SC-541", severity="error", message="fuser")
    events: list[IngestItem] = [
        EventItem(
            "mfp-1",
            DeviceEvent(device_id="mfp-1", ts=NOW, type=kind, body=fault.model_dump()),
            NOW,
        )
        for kind in ("fault.raised", "fault.cleared")
    ]
    result, changes = _apply(events, devices)
    assert result.events == 2
    [alert] = changes.opened
    assert (alert["code"], alert["open"], alert["cleared_at"]) == ("SC-541", False, NOW)
    assert changes.cleared == {}


def test_a_birth_keeps_the_agents_capabilities_and_a_via_birth_does_not() -> None:
    from shared.wire import VIA_SESSIONS

    birth = DeviceState.model_validate_json(
        '{"v": 1, "online": true, "capabilities": ["via-sessions", "x-new"], "later": 1}'
    )
    assert birth.capabilities == [VIA_SESSIONS, "x-new"]
    assert DeviceState(online=True).capabilities == []  # an older agent's birth
    devices = {
        "server-gw": _row("server-gw"),
        "mfp-2": _row("mfp-2", via="server-gw"),
    }
    _apply(
        [
            StateItem("server-gw", birth.model_copy(update={"ts": NOW}), False, NOW),
            # A gateway cannot lend its watched printers a capability through their births.
            StateItem("mfp-2", birth.model_copy(update={"ts": NOW}), False, NOW, via="server-gw"),
        ],
        devices,
    )
    # Kept on the row (only the known ones), written back with it.
    assert (devices["server-gw"].capabilities, devices["server-gw"].dirty) == (VIA_SESSIONS, True)
    assert devices["mfp-2"].capabilities is None
    # A later birth without it (an agent downgraded) takes it back.
    later = NOW + timedelta(seconds=1)
    _apply([StateItem("server-gw", DeviceState(online=True, ts=later), False, later)], devices)
    assert devices["server-gw"].capabilities is None


def _rejected(reason: str) -> float:
    from server import metrics

    return metrics.INGEST_REJECTED.labels(reason)._value.get()


def test_the_servers_own_announcement_is_ignored_and_a_bad_topic_still_counted() -> None:
    from shared.models import ServerState

    validate = Validator(SETTINGS)
    before = _rejected("bad_topic")
    announcement = dump_message(ServerState(online=True, ts=NOW, instance="center-1"))
    # The ingest's ``fieldlink/v1/+/state`` filter matches ``fieldlink/v1/_server/state``.
    for _ in range(2):  # the topic cache answers the second time
        assert (
            validate(topics.SERVER_STATE.encode(), announcement, retain=True, received_at=NOW)
            is None
        )
    assert _rejected("bad_topic") == before
    assert validate(b"fieldlink/v1/_evil/state", b"{}", retain=True, received_at=NOW) is None
    assert validate(b"fieldlink/v1/_server/events", b"{}", retain=False, received_at=NOW) is None
    assert _rejected("bad_topic") == before + 2
