"""When a maintenance window is open: one-off and RRULE windows, time zones, hostile rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.maintenance.schedule import (
    Timing,
    local_start,
    next_starts,
    normal_rule,
    occurrence_at,
    parse_rule,
)
from shared.errors import InvalidInput


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_one_off_window_is_open_from_its_start_to_its_end_only() -> None:
    window = Timing(utc(2026, 12, 13, 2), 120, None, "UTC")
    assert occurrence_at(window, utc(2026, 12, 13, 1, 59)) is None
    assert occurrence_at(window, utc(2026, 12, 13, 2)) == (
        utc(2026, 12, 13, 2),
        utc(2026, 12, 13, 4),
    )
    assert occurrence_at(window, utc(2026, 12, 13, 3, 59)) is not None
    assert occurrence_at(window, utc(2026, 12, 13, 4)) is None
    assert next_starts(window, utc(2026, 12, 1)) == [utc(2026, 12, 13, 2)]
    assert next_starts(window, utc(2026, 12, 14)) == []


def test_a_weekly_window_keeps_its_local_time_across_daylight_saving() -> None:
    # Saturdays 22:00-23:30 in Berlin: 20:00 UTC in summer, 21:00 UTC in winter.
    start = local_start(datetime(2026, 7, 4, 22, 0), "Europe/Berlin")
    assert start == utc(2026, 7, 4, 20)
    window = Timing(start, 90, normal_rule("RRULE:freq=weekly;byday=SA"), "Europe/Berlin")
    assert occurrence_at(window, utc(2026, 7, 11, 20, 30)) is not None
    assert occurrence_at(window, utc(2026, 11, 7, 20, 30)) is None  # 21:30 local: before it
    assert occurrence_at(window, utc(2026, 11, 7, 21, 30)) == (
        utc(2026, 11, 7, 21),
        utc(2026, 11, 7, 22, 30),
    )
    assert occurrence_at(window, utc(2026, 11, 8, 21, 30)) is None  # a Sunday
    assert next_starts(window, utc(2026, 10, 20), limit=3) == [
        utc(2026, 10, 24, 20),
        utc(2026, 10, 31, 21),
        utc(2026, 11, 7, 21),
    ]


def test_a_window_longer_than_its_interval_is_open_throughout() -> None:
    window = Timing(utc(2026, 1, 1), 36 * 60, "FREQ=DAILY", "UTC")
    assert occurrence_at(window, utc(2026, 3, 5, 23, 59)) is not None


def test_a_rule_that_has_ended_opens_no_more_windows() -> None:
    window = Timing(utc(2026, 1, 1, 1), 60, "FREQ=DAILY;COUNT=3", "UTC")
    assert occurrence_at(window, utc(2026, 1, 3, 1, 30)) is not None
    assert occurrence_at(window, utc(2026, 1, 4, 1, 30)) is None
    assert next_starts(window, utc(2026, 1, 2, 12)) == [utc(2026, 1, 3, 1)]


def test_a_time_with_an_offset_is_taken_as_given() -> None:
    given = datetime(2026, 7, 4, 22, 0, tzinfo=UTC)
    assert local_start(given, "Asia/Tokyo") == given


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ("FREQ=MINUTELY", "FREQ must be DAILY"),
        ("FREQ=SECONDLY;COUNT=100000000", "FREQ must be DAILY"),
        ("FREQ=HOURLY", "FREQ must be DAILY"),
        ("BYDAY=SU", "FREQ must be DAILY"),
        ("DTSTART:19700101T000000Z\nRRULE:FREQ=DAILY", "without DTSTART"),
        ("FREQ=DAILY;DTSTART=19700101", "without DTSTART"),
        ("FREQ=WEEKLY;BYDAY=XX", "rrule:"),
        ("FREQ=DAILY;UNTIL=20200101T000000Z", "no occurrence"),
        ("EXRULE:FREQ=DAILY", "without DTSTART"),
        ("", "without DTSTART"),
    ],
)
def test_a_rule_a_window_cannot_have_is_refused_with_a_clear_error(rule: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_rule(rule, utc(2026, 1, 1), "UTC")


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown time zone"):
        parse_rule("FREQ=DAILY", utc(2026, 1, 1), "Mars/Olympus_Mons")
    with pytest.raises(InvalidInput, match="unknown time zone"):
        local_start(datetime(2026, 1, 1), "../../etc/passwd")


def test_an_old_daily_window_is_answered_for_years_ahead() -> None:
    window = Timing(utc(2020, 1, 1, 3), 60, "FREQ=DAILY", "Asia/Tokyo")
    at = utc(2030, 6, 1, 3, 30)
    assert occurrence_at(window, at) == (utc(2030, 6, 1, 3), utc(2030, 6, 1, 4))
    assert occurrence_at(window, at + timedelta(hours=2)) is None
