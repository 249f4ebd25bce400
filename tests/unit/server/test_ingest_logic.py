"""The ingest's pure logic: sequence accounting, clock offset, thresholds, alerts, online state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.config import DEFAULT_THRESHOLDS, ThresholdRule
from server.ingest.alerts import (
    AlertKey,
    apply_plan,
    evaluate_thresholds,
    plan_for_sample,
    rule_matches,
)
from server.ingest.clock import ClockOffsetEstimator, is_skewed
from server.ingest.online import OnlineStatus, next_status
from server.ingest.sequence import NewSample, SequenceMark, account_samples
from shared.protocol import DeviceState, Fault

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
