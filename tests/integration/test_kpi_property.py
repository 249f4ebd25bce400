"""The SQL KPIs equal a plain-Python reading of docs/kpis.md on random incident sets.

Runs on SQLite and PostgreSQL (``database_url``); one database per test, the
incidents replaced for each example.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from server.kpi.compute import compute_kpis
from server.kpi.config import KpiSettings
from tests.fixtures.kpi_reference import (
    DEVICES,
    Case,
    add_devices,
    assert_report_equal,
    reference_kpis,
    store,
)

pytestmark = pytest.mark.integration

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Dispatches three times as likely, so that baselines get measured (odd and even counts).
RESOLUTIONS = ("remote", "phone", "dispatch", "dispatch", "dispatch", "no_fault")


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated database of ``db_engine`` (SQLite, then PostgreSQL) with this module's
    devices."""
    add_devices(db_engine)
    return db_engine


@st.composite
def cases(draw: st.DrawFn) -> Case:
    device_id, device_type, region = draw(st.sampled_from(DEVICES))
    # Whole seconds: SQLite's date arithmetic keeps milliseconds.
    opened_at = EPOCH + timedelta(seconds=draw(st.integers(0, 75 * 86400)))
    down_at = opened_at - timedelta(seconds=draw(st.integers(0, 3 * 86400)))
    closed = draw(st.booleans()) or draw(st.booleans())
    ttr = draw(st.one_of(st.just(0), st.integers(0, 10 * 86400)))
    restored_at = down_at + timedelta(seconds=ttr)
    closed_at = None
    if closed:
        # On a month boundary now and then, to exercise the window's ends.
        on_boundary = draw(st.integers(0, 9)) == 0
        later = max(opened_at, restored_at) + timedelta(seconds=draw(st.integers(0, 5 * 86400)))
        next_month = (
            datetime(later.year, later.month, 1, tzinfo=UTC) + timedelta(days=31)
        ).replace(day=1)
        closed_at = next_month if on_boundary else later
    answered = draw(st.booleans())
    return Case(
        device_id=device_id,
        device_type=device_type,
        region=region,
        opened_at=opened_at,
        down_at=down_at,
        restored_at=restored_at if closed or draw(st.booleans()) else None,
        closed_at=closed_at,
        resolution=draw(st.sampled_from(RESOLUTIONS)) if closed or draw(st.booleans()) else None,
        remote_session_used=draw(st.booleans()),
        answered_at=opened_at + timedelta(seconds=draw(st.integers(0, 3600))) if answered else None,
        channel=draw(st.sampled_from((None, "phone", "alert"))),
    )


windows = st.tuples(st.integers(0, 2), st.integers(1, 3)).map(
    lambda a: (
        datetime(2026, 1 + a[0], 1, tzinfo=UTC),
        datetime(2026, 1 + a[0] + a[1], 1, tzinfo=UTC),
    )
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    incidents=st.lists(cases(), min_size=20, max_size=50),
    window=windows,
    min_samples=st.integers(1, 4),
    day_shift=st.integers(0, 20),
)
def test_sql_kpis_equal_the_reference(
    engine: Engine,
    incidents: list[Case],
    window: tuple[datetime, datetime],
    min_samples: int,
    day_shift: int,
) -> None:
    start, end = window
    # Windows that do not start on a month boundary too.
    start += timedelta(days=day_shift, hours=day_shift)
    config = KpiSettings(baseline_min_samples=min_samples)
    store(engine, incidents)
    with engine.connect() as connection:
        for group_by in ("none", "month", "device_type", "region"):
            report = compute_kpis(
                connection, start=start, end=end, group_by=group_by, settings=config
            )
            expected = reference_kpis(incidents, start, end, group_by, config)
            assert_report_equal(report.model_dump(), expected)
            if group_by == "month":
                total = report.total
                for name in ("incidents_closed", "dispatches", "dispatches_avoided"):
                    assert sum(getattr(g, name) for g in report.groups) == getattr(total, name)
                for name in ("downtime_saved_hours", "cost_saved"):
                    assert sum(getattr(g, name) for g in report.groups) == pytest.approx(
                        getattr(total, name)
                    )
