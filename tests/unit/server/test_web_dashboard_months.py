"""The dashboard tells a partial month from a whole one (issue 17)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.web.dashboard import Period, month_coverage

YEAR = Period(datetime(2025, 7, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
NOW = datetime(2026, 6, 10, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("month", "period", "coverage"),
    [
        ("2026-05", YEAR, 1.0),
        ("2026-06", YEAR, (9.5 / 30)),
        ("2026-07", YEAR, 0.0),
        ("2025-07", Period(datetime(2025, 7, 16, tzinfo=UTC), YEAR.end), 16 / 31),
        ("2026-02", Period(YEAR.start, datetime(2026, 2, 15, tzinfo=UTC)), 14 / 28),
    ],
)
def test_month_coverage(month: str, period: Period, coverage: float) -> None:
    assert month_coverage(month, period, NOW) == pytest.approx(coverage)
