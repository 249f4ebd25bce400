"""docs/kpis.md by hand: every figure on small incident sets whose answers are worked out below.

Each test runs on SQLite and PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.kpi.compute import CALL_TABLE, INCIDENT_TABLE, compute_kpis
from server.kpi.config import KpiSettings
from server.models import Customer
from tests.fixtures.kpi_reference import DEVICES, Case, add_devices, store

pytestmark = pytest.mark.integration

MARCH = datetime(2026, 3, 1, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, tzinfo=UTC)
TYPE_OF = {d: t for d, t, _ in DEVICES}
REGION_OF = {d: r for d, _, r in DEVICES}
CUSTOMER_TABLE: sa.Table = Customer.__table__  # type: ignore[attr-defined]


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated database of ``db_engine`` (SQLite, then PostgreSQL) with this module's
    devices."""
    add_devices(db_engine)
    return db_engine


def incident(
    device_id: str,
    *,
    closed_at: datetime | None,
    ttr_h: float,
    resolution: str | None,
    remote: bool = False,
    answer_s: float | None = None,
    channel: str | None = None,
) -> Case:
    """An incident that went down an hour before it was closed minus its ttr."""
    anchor = closed_at or MARCH + timedelta(days=10)
    restored_at = anchor - timedelta(minutes=30)
    down_at = restored_at - timedelta(hours=ttr_h)
    opened_at = down_at + timedelta(minutes=5)
    return Case(
        device_id=device_id,
        device_type=TYPE_OF[device_id],
        region=REGION_OF[device_id],
        opened_at=opened_at,
        down_at=down_at,
        restored_at=restored_at,
        closed_at=closed_at,
        resolution=resolution,
        remote_session_used=remote,
        answered_at=opened_at + timedelta(seconds=answer_s) if answer_s is not None else None,
        channel=channel,
    )


def march(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


# Scenario A, the window March 2026:
#  1 mfp-a     remote    ttr 2h   remote session  answered after 30 s
#  2 mfp-a     phone     ttr 1h                   answered after 90 s
#  3 mfp-b     dispatch  ttr 10h                  never answered  opened by a fault (alert)
#  4 mfp-b     no_fault  ttr 0.5h remote session  answered after 60 s
#  5 imaging-a remote    ttr 3h   remote session  answered after 120 s
#  6 server-a  dispatch  ttr 6h                                   opened by a fault (alert)
#  7 mfp-a     dispatch  closed exactly on April 1st 00:00 (the window's end: out)
#  8 mfp-b     remote    ttr 4h   remote session, closed exactly on March 1st 00:00 (in)
#  9 mfp-a     still open (out), opened by a fault
# 10 mfp-a     remote    closed a second before March (out)
SCENARIO_A = [
    incident("mfp-a", closed_at=march(2), ttr_h=2, resolution="remote", remote=True, answer_s=30),
    incident("mfp-a", closed_at=march(3), ttr_h=1, resolution="phone", answer_s=90),
    incident("mfp-b", closed_at=march(4), ttr_h=10, resolution="dispatch", channel="alert"),
    incident(
        "mfp-b", closed_at=march(5), ttr_h=0.5, resolution="no_fault", remote=True, answer_s=60
    ),
    incident(
        "imaging-a", closed_at=march(6), ttr_h=3, resolution="remote", remote=True, answer_s=120
    ),
    incident("server-a", closed_at=march(7), ttr_h=6, resolution="dispatch", channel="alert"),
    incident("mfp-a", closed_at=APRIL, ttr_h=5, resolution="dispatch"),
    incident("mfp-b", closed_at=MARCH, ttr_h=4, resolution="remote", remote=True),
    incident("mfp-a", closed_at=None, ttr_h=1, resolution=None, channel="alert"),
    incident("mfp-a", closed_at=MARCH - timedelta(seconds=1), ttr_h=1, resolution="remote"),
]
SCENARIO_A[8].restored_at = None

EXPECTED_A = {
    # C = {1,2,3,4,5,6,8}
    "incidents_closed": 7,
    # sessions used in 1, 4, 5, 8
    "remote_usage_rate": 4 / 7,
    # opened by device faults: 3 and 6 (9 is open: out)
    "proactive_share": 2 / 7,
    # F = C without the no_fault 4: {1,2,3,5,6,8}; remote or phone: 1, 2, 5, 8
    "self_resolution_rate": 4 / 6,
    "remote_resolution_rate": 3 / 6,
    "dispatches": 2,
    "dispatches_avoided": 3,
    "mttr_hours": (2 + 1 + 10 + 3 + 6 + 4) / 6,
    "mttr_remote_hours": (2 + 3 + 4) / 3,
    "mttr_dispatch_hours": (10 + 6) / 2,
    # answered among C: 30, 90, 60 (the no_fault counts for asa), 120
    "asa_seconds": (30 + 90 + 60 + 120) / 4,
    # one dispatch per type at most: every baseline is the configured fallback
    # (mfp 24, imaging 12): (24 - 2) + (12 - 3) + (24 - 4)
    "downtime_saved_hours": 22 + 9 + 20,
    "cost_saved": 150 + 600 + 150,
}


def figures(group: Any) -> dict[str, Any]:
    data: dict[str, Any] = group.model_dump()
    data.pop("key", None)
    data.pop("calls", None)  # a group's recorded calls: test_asa_of_recorded_calls_per_...
    return data


def approx_equal(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        if value is None:
            assert actual[name] is None, name
        else:
            assert actual[name] == pytest.approx(value, rel=1e-12, abs=1e-9), name


def test_every_figure_of_a_month(engine: Engine) -> None:
    store(engine, SCENARIO_A)
    with engine.connect() as connection:
        report = compute_kpis(connection, start=MARCH, end=APRIL)
    approx_equal(figures(report.total), EXPECTED_A)
    assert report.baseline_ttr_hours == {"mfp": 24.0, "imaging": 12.0, "server": 8.0}
    assert report.baseline_source == dict.fromkeys(("mfp", "imaging", "server"), "configured")
    assert report.groups == []
    dumped = report.model_dump(mode="json", by_alias=True)
    assert dumped["from"] == "2026-03-01T00:00:00Z"
    assert dumped["to"] == "2026-04-01T00:00:00Z"
    assert list(dumped) == [
        "from",
        "to",
        "group_by",
        "baseline_ttr_hours",
        "baseline_source",
        "total",
        "groups",
        "calls",
    ]


def test_groups_by_device_type_and_region_add_up(engine: Engine) -> None:
    store(engine, SCENARIO_A)
    with engine.connect() as connection:
        by_type = compute_kpis(connection, start=MARCH, end=APRIL, group_by="device_type")
        by_region = compute_kpis(connection, start=MARCH, end=APRIL, group_by="region")
    groups = {g.key: g for g in by_type.groups}
    assert list(groups) == ["mfp", "imaging", "server"]
    # mfp: 1, 2, 3, 4, 8; F = 1, 2, 3, 8
    assert groups["mfp"].incidents_closed == 5
    assert groups["mfp"].self_resolution_rate == pytest.approx(3 / 4)
    assert groups["mfp"].mttr_hours == pytest.approx((2 + 1 + 10 + 4) / 4)
    assert groups["mfp"].downtime_saved_hours == pytest.approx(22 + 20)
    assert groups["imaging"].downtime_saved_hours == pytest.approx(9)
    assert groups["server"].dispatches == 1
    assert groups["server"].self_resolution_rate == 0
    assert groups["server"].asa_seconds is None
    regions = {g.key: g for g in by_region.groups}
    assert list(regions) == ["north", "south", None]
    # north: mfp-a (1, 2) and imaging-a (5); south: mfp-b (3, 4, 8); none: server-a (6)
    assert [regions[k].incidents_closed for k in regions] == [3, 3, 1]
    for report in (by_type, by_region):
        for name in ("incidents_closed", "dispatches", "dispatches_avoided"):
            assert sum(getattr(g, name) for g in report.groups) == getattr(report.total, name)
        for name in ("downtime_saved_hours", "cost_saved"):
            assert sum(getattr(g, name) for g in report.groups) == pytest.approx(
                getattr(report.total, name)
            )


def test_months_share_the_window_baseline_and_add_up(engine: Engine) -> None:
    # Five mfp dispatches in January (ttr 2, 4, 6, 10, 100: median 6) make the
    # baseline measured for the whole quarter; a remote fix in March (ttr 1)
    # saves 6 - 1 = 5 hours although March has no dispatch of its own.
    jan = datetime(2026, 1, 15, tzinfo=UTC)
    cases = [
        incident("mfp-a", closed_at=jan + timedelta(days=i), ttr_h=t, resolution="dispatch")
        for i, t in enumerate((2, 4, 6, 10, 100))
    ]
    cases.append(incident("mfp-b", closed_at=march(20), ttr_h=1, resolution="remote"))
    cases.append(incident("mfp-b", closed_at=march(21), ttr_h=9, resolution="remote"))
    store(engine, cases)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.connect() as connection:
        report = compute_kpis(connection, start=start, end=APRIL, group_by="month")
        march_only = compute_kpis(connection, start=MARCH, end=APRIL)
    assert report.baseline_ttr_hours["mfp"] == pytest.approx(6)
    assert report.baseline_source["mfp"] == "measured"
    assert [g.key for g in report.groups] == ["2026-01", "2026-02", "2026-03"]
    jan_group, feb_group, mar_group = report.groups
    assert jan_group.dispatches == 5
    assert feb_group.incidents_closed == 0
    assert feb_group.mttr_hours is None
    assert feb_group.downtime_saved_hours == 0
    # ttr 9 is longer than the baseline: max(0, 6 - 9) = 0
    assert mar_group.downtime_saved_hours == pytest.approx(5)
    assert report.total.downtime_saved_hours == pytest.approx(5)
    assert report.total.cost_saved == pytest.approx(300)
    assert sum(g.incidents_closed for g in report.groups) == report.total.incidents_closed == 7
    # March alone has no dispatches: the configured 24 h, (24 - 1) + (24 - 9)
    assert march_only.baseline_source["mfp"] == "configured"
    assert march_only.total.downtime_saved_hours == pytest.approx(23 + 15)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two(engine: Engine) -> None:
    cases = [
        incident("mfp-a", closed_at=march(d), ttr_h=t, resolution="dispatch")
        for d, t in zip((2, 3, 4, 5), (10, 2, 6, 4), strict=True)
    ]
    store(engine, cases)
    with engine.connect() as connection:
        measured = compute_kpis(
            connection, start=MARCH, end=APRIL, settings=KpiSettings(baseline_min_samples=4)
        )
        too_few = compute_kpis(connection, start=MARCH, end=APRIL)
    assert measured.baseline_ttr_hours["mfp"] == pytest.approx((4 + 6) / 2)
    assert measured.baseline_source == {
        "mfp": "measured",
        "imaging": "configured",
        "server": "configured",
    }
    # four dispatches are fewer than the default five samples
    assert too_few.baseline_ttr_hours["mfp"] == 24.0
    assert too_few.baseline_source["mfp"] == "configured"


def test_configured_fallbacks_and_costs_are_used(engine: Engine) -> None:
    store(engine, [incident("server-a", closed_at=march(2), ttr_h=1, resolution="remote")])
    settings = KpiSettings.model_validate(
        {"baseline_ttr_fallback_hours": {"server": 5}, "dispatch_cost": {"server": 1000}}
    )
    with engine.connect() as connection:
        report = compute_kpis(connection, start=MARCH, end=APRIL, settings=settings)
    assert report.baseline_ttr_hours["server"] == 5
    assert report.total.downtime_saved_hours == pytest.approx(4)
    assert report.total.cost_saved == pytest.approx(1000)


def test_an_empty_window_has_zero_counts_and_null_rates(engine: Engine) -> None:
    store(engine, SCENARIO_A)
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)
    with engine.connect() as connection:
        report = compute_kpis(connection, start=start, end=end, group_by="month")
    empty = {
        "incidents_closed": 0,
        "remote_usage_rate": None,
        "proactive_share": None,
        "self_resolution_rate": None,
        "remote_resolution_rate": None,
        "dispatches": 0,
        "dispatches_avoided": 0,
        "mttr_hours": None,
        "mttr_remote_hours": None,
        "mttr_dispatch_hours": None,
        "asa_seconds": None,
        "downtime_saved_hours": 0.0,
        "cost_saved": 0.0,
    }
    assert figures(report.total) == empty
    assert [g.key for g in report.groups] == ["2025-01", "2025-02"]
    assert all(figures(g) == empty for g in report.groups)
    assert set(report.baseline_source.values()) == {"configured"}


def test_only_no_fault_and_unanswered_calls(engine: Engine) -> None:
    cases = [
        incident("mfp-a", closed_at=march(2), ttr_h=1, resolution="no_fault", remote=True),
        incident("mfp-b", closed_at=march(3), ttr_h=2, resolution="no_fault"),
    ]
    store(engine, cases)
    with engine.connect() as connection:
        report = compute_kpis(connection, start=MARCH, end=APRIL)
    total = report.total
    assert total.incidents_closed == 2
    assert total.remote_usage_rate == 0.5
    # F is empty: rates over it and means over it are null
    assert total.self_resolution_rate is None
    assert total.remote_resolution_rate is None
    assert total.mttr_hours is None
    assert total.dispatches == 0
    # nobody answered: the mean over nothing is null
    assert total.asa_seconds is None


def test_window_boundaries_from_included_to_excluded(engine: Engine) -> None:
    on_from = incident("mfp-a", closed_at=MARCH, ttr_h=1, resolution="phone")
    on_to = incident("mfp-a", closed_at=APRIL, ttr_h=1, resolution="phone")
    store(engine, [on_from, on_to])
    with engine.connect() as connection:
        march_report = compute_kpis(connection, start=MARCH, end=APRIL)
        april_report = compute_kpis(connection, start=APRIL, end=APRIL + timedelta(days=30))
        # a window given in another offset is the same instant
        cet = datetime.fromisoformat("2026-03-01T01:00:00+01:00")
        same = compute_kpis(connection, start=cet, end=APRIL)
    assert march_report.total.incidents_closed == 1
    assert april_report.total.incidents_closed == 1
    assert same.total.incidents_closed == 1
    assert same.model_dump(mode="json", by_alias=True)["from"] == "2026-03-01T00:00:00Z"


def test_asa_of_recorded_calls_beside_the_incidents(engine: Engine) -> None:
    """docs/kpis.md "ASA from recorded calls": the calls that started in the window."""
    store(engine, [incident("mfp-a", closed_at=march(2), ttr_h=1, resolution="remote")])
    with engine.begin() as connection:
        linked = connection.execute(sa.select(INCIDENT_TABLE.c.id)).scalar_one()
        rows = [
            # (started, answered after s, linked to the incident)
            (MARCH, 20.0, True),  # from is included
            (march(5), 100.0, False),
            (march(6), None, False),  # never answered: counted, not in the mean
            (march(7), -30.0, False),  # answered "before" it rang (a bad clock): left out
            (APRIL, 5.0, False),  # to is excluded
            (MARCH - timedelta(seconds=1), 5.0, False),
        ]
        connection.execute(
            sa.insert(CALL_TABLE),
            [
                {
                    "ani": "+41445551234",
                    "started_at": started,
                    "answered_at": None if wait is None else started + timedelta(seconds=wait),
                    "incident_id": linked if is_linked else None,
                }
                for started, wait, is_linked in rows
            ],
        )
    with engine.connect() as connection:
        report = compute_kpis(connection, start=MARCH, end=APRIL, group_by="month")
        empty = compute_kpis(
            connection, start=APRIL + timedelta(days=40), end=APRIL + timedelta(days=60)
        )
    assert report.calls.model_dump() == {
        "calls": 4, "answered": 2, "linked": 1, "asa_seconds": 60.0,
    }  # fmt: skip
    assert empty.calls.model_dump() == {
        "calls": 0, "answered": 0, "linked": 0, "asa_seconds": None,
    }  # fmt: skip


def test_asa_of_recorded_calls_per_month_device_type_and_region(engine: Engine) -> None:
    """docs/kpis.md "ASA from recorded calls": each group its own calls; the total, all."""
    with engine.begin() as connection:
        connection.execute(
            sa.insert(CUSTOMER_TABLE),
            [{"number": "900001", "name": "East Co", "region": "east", "created_at": MARCH}],
        )
        rows = [
            # (started, answered after s, device, customer)
            (march(2), 10.0, "mfp-a", None),  # mfp, north
            (march(3), 30.0, "imaging-a", None),  # imaging, north
            (march(4), None, "mfp-b", None),  # mfp, south: unanswered
            (APRIL - timedelta(days=20), 50.0, "server-a", None),  # server, no region
            (APRIL - timedelta(days=10), 90.0, None, "900001"),  # no device: customer's region
            (APRIL - timedelta(days=5), 70.0, None, None),  # neither
            (APRIL + timedelta(days=3), 200.0, "mfp-a", None),  # April
        ]
        connection.execute(
            sa.insert(CALL_TABLE),
            [
                {
                    "ani": "+41445551234",
                    "started_at": started,
                    "answered_at": None if wait is None else started + timedelta(seconds=wait),
                    "device_id": device,
                    "customer_number": customer,
                }
                for started, wait, device, customer in rows
            ],
        )
    end = APRIL + timedelta(days=30)

    def asa(group_by: str) -> tuple[dict[str | None, tuple[int, int, float | None]], Any]:
        with engine.connect() as connection:
            report = compute_kpis(connection, start=MARCH, end=end, group_by=group_by)
        groups = {
            g.key: (g.calls.calls, g.calls.answered, g.calls.asa_seconds) for g in report.groups
        }
        return groups, report.calls

    by_month, total = asa("month")
    assert by_month == {"2026-03": (6, 5, 50.0), "2026-04": (1, 1, 200.0)}
    assert (total.calls, total.answered) == (7, 6)
    assert total.asa_seconds == pytest.approx(450.0 / 6)
    by_type, same_total = asa("device_type")
    assert by_type == {
        "mfp": (3, 2, 105.0), "imaging": (1, 1, 30.0), "server": (1, 1, 50.0),
    }  # fmt: skip
    assert same_total == total  # the calls without a device count in the total only
    by_region, _ = asa("region")
    assert by_region == {
        "east": (1, 1, 90.0), "north": (3, 3, 80.0), "south": (1, 0, None), None: (2, 2, 60.0),
    }  # fmt: skip
    assert list(by_region) == ["east", "north", "south", None]
