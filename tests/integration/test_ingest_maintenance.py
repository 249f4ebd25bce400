"""Hourly rollups and retention against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from server.config import ServerSettings
from server.ingest import maintenance
from server.models import Device, TelemetryRollup, TelemetrySample
from server.upkeep import FleetUpkeep

pytestmark = pytest.mark.integration

#: A fixed "now" well inside an hour, so the buckets below are easy to read.
NOW = datetime(2026, 11, 23, 18, 30, tzinfo=UTC)
H = timedelta(hours=1)
HOUR_0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated database of ``db_engine`` (SQLite, then PostgreSQL) with this module's
    devices."""
    with Session(db_engine) as db:
        for device_id in ("mfp-0001", "srv-0001"):
            db.add(Device(id=device_id, serial=device_id, model="X", type="mfp", customer="ACME"))
        db.commit()
    return db_engine


def add_samples(
    engine: Engine,
    device_id: str,
    samples: list[tuple[datetime, dict[str, float]]],
    *,
    received_at: datetime = NOW,
    boot_id: str = "b1",
    first_seq: int = 0,
) -> None:
    with Session(engine) as db:
        for seq, (ts, values) in enumerate(samples, start=first_seq):
            db.add(
                TelemetrySample(
                    device_id=device_id,
                    boot_id=boot_id,
                    seq=seq,
                    ts=ts,
                    received_at=received_at,
                    status="ok",
                    metrics=values,
                    faults=[],
                )
            )
        db.commit()


def rollups(engine: Engine) -> dict[tuple[str, str, datetime], tuple[int, float, float, float]]:
    with Session(engine) as db:
        rows = db.exec(select(TelemetryRollup)).all()
    return {
        (r.device_id, r.metric, r.bucket.astimezone(UTC)): (r.count, r.min, r.max, r.sum)
        for r in rows
    }


def count(engine: Engine, model: type[TelemetrySample] | type[TelemetryRollup]) -> int:
    with Session(engine) as db:
        return int(db.exec(select(sa.func.count()).select_from(model)).one())


def test_rollup_aggregates_each_device_metric_and_hour(engine: Engine) -> None:
    add_samples(
        engine,
        "mfp-0001",
        [
            (HOUR_0 + timedelta(minutes=5), {"cpu_percent": 10.0, "mem_percent": 40.0}),
            (HOUR_0 + timedelta(minutes=35), {"cpu_percent": 30.0}),
            (HOUR_0 + timedelta(minutes=59, seconds=59.5), {"cpu_percent": 20.0}),
            (HOUR_0 + H, {"cpu_percent": -5.5, "mem_percent": 41.0}),  # on the hour
            (HOUR_0 + 3 * H + timedelta(minutes=1), {"cpu_percent": 99.0}),
        ],
    )
    add_samples(engine, "srv-0001", [(HOUR_0 + timedelta(minutes=10), {"cpu_percent": 7.0})])

    written = maintenance.rollup_hours(engine, NOW - timedelta(minutes=5))

    expected = {
        ("mfp-0001", "cpu_percent", HOUR_0): (3, 10.0, 30.0, 60.0),
        ("mfp-0001", "mem_percent", HOUR_0): (1, 40.0, 40.0, 40.0),
        ("mfp-0001", "cpu_percent", HOUR_0 + H): (1, -5.5, -5.5, -5.5),
        ("mfp-0001", "mem_percent", HOUR_0 + H): (1, 41.0, 41.0, 41.0),
        ("mfp-0001", "cpu_percent", HOUR_0 + 3 * H): (1, 99.0, 99.0, 99.0),
        ("srv-0001", "cpu_percent", HOUR_0): (1, 7.0, 7.0, 7.0),
    }
    assert written == len(expected)
    assert rollups(engine) == expected


def test_rollup_is_idempotent_and_upserts_an_hour_that_got_more_samples(engine: Engine) -> None:
    add_samples(
        engine,
        "mfp-0001",
        [(HOUR_0 + timedelta(minutes=m), {"cpu_percent": float(m)}) for m in (0, 20, 40)],
    )
    maintenance.rollup_hours(engine, NOW - timedelta(minutes=5))
    first = rollups(engine)
    assert first == {("mfp-0001", "cpu_percent", HOUR_0): (3, 0.0, 40.0, 60.0)}

    # Run again (or in a second process): the same rows, not doubled counts.
    maintenance.rollup_hours(engine, NOW - timedelta(minutes=5))
    assert rollups(engine) == first
    assert count(engine, TelemetryRollup) == 1

    # A late sample of the same hour arrives later: the row is recomputed in place.
    later = NOW + timedelta(minutes=10)
    add_samples(
        engine,
        "mfp-0001",
        [(HOUR_0 + timedelta(minutes=50), {"cpu_percent": 75.5})],
        received_at=later,
        first_seq=3,
    )
    written = maintenance.rollup_hours(engine, later - timedelta(minutes=1))
    assert written == 1
    assert rollups(engine) == {("mfp-0001", "cpu_percent", HOUR_0): (4, 0.0, 75.5, 135.5)}


def test_rollup_leaves_hours_without_new_samples_alone(engine: Engine) -> None:
    add_samples(engine, "mfp-0001", [(HOUR_0, {"cpu_percent": 1.0})], received_at=NOW - 3 * H)
    maintenance.rollup_hours(engine, NOW - 4 * H)
    # Edit the rollup by hand: a run that only looks at recent arrivals must not touch it.
    with Session(engine) as db:
        row = db.exec(select(TelemetryRollup)).one()
        row.count = 42
        db.add(row)
        db.commit()
    add_samples(
        engine,
        "srv-0001",
        [(HOUR_0 + 2 * H, {"cpu_percent": 2.0})],
        received_at=NOW,
    )
    maintenance.rollup_hours(engine, NOW - timedelta(minutes=5))
    got = rollups(engine)
    assert got[("mfp-0001", "cpu_percent", HOUR_0)][0] == 42
    assert got[("srv-0001", "cpu_percent", HOUR_0 + 2 * H)] == (1, 2.0, 2.0, 2.0)


def test_rollup_of_many_samples_matches_a_direct_computation(engine: Engine) -> None:
    values = [math.sin(i) * 50 + 50 for i in range(600)]
    add_samples(
        engine,
        "srv-0001",
        [(HOUR_0 + timedelta(seconds=30 * i), {"load": v}) for i, v in enumerate(values)],
    )
    maintenance.rollup_hours(engine, NOW - timedelta(minutes=5))
    got = rollups(engine)
    assert len(got) == 5  # 600 samples every 30 s span five hours
    for hour in range(5):
        chunk = values[hour * 120 : (hour + 1) * 120]
        n, low, high, total = got[("srv-0001", "load", HOUR_0 + hour * H)]
        assert (n, low, high) == (120, min(chunk), max(chunk))
        assert total == pytest.approx(sum(chunk))


def test_retention_deletes_only_old_raw_samples_and_old_rollups(engine: Engine) -> None:
    settings = ServerSettings(telemetry_retention_days=7, rollup_retention_days=30)
    recent = NOW - timedelta(days=6, hours=23)
    old = NOW - timedelta(days=7, minutes=1)
    add_samples(engine, "mfp-0001", [(old, {"cpu_percent": 1.0})] * 2, received_at=old)
    add_samples(
        engine,
        "mfp-0001",
        [(recent, {"cpu_percent": 2.0})] * 3,
        received_at=recent,
        first_seq=2,
    )
    # Collected long ago but received recently (a device back from an outage): kept.
    add_samples(
        engine,
        "srv-0001",
        [(NOW - timedelta(days=20), {"cpu_percent": 3.0})],
        received_at=recent,
    )
    with Session(engine) as db:
        for bucket in (
            hour_start(NOW - timedelta(days=31)),
            hour_start(NOW - timedelta(days=29)),
            hour_start(NOW - timedelta(days=2)),
        ):
            db.add(
                TelemetryRollup(
                    device_id="mfp-0001",
                    metric="cpu_percent",
                    bucket=bucket,
                    count=1,
                    min=1.0,
                    max=1.0,
                    sum=1.0,
                )
            )
        db.commit()

    deleted = maintenance.purge_old(engine, settings, NOW)

    assert deleted == (2, 1)
    with Session(engine) as db:
        kept = db.exec(
            select(TelemetrySample.device_id, TelemetrySample.seq).order_by(
                sa.column("device_id"), sa.column("seq")
            )
        ).all()
    assert [tuple(k) for k in kept] == [
        ("mfp-0001", 2),
        ("mfp-0001", 3),
        ("mfp-0001", 4),
        ("srv-0001", 0),
    ]
    buckets = sorted(bucket for (_d, _m, bucket) in rollups(engine))
    assert buckets == [hour_start(NOW - timedelta(days=29)), hour_start(NOW - timedelta(days=2))]
    # Nothing left to delete: a second run deletes nothing.
    assert maintenance.purge_old(engine, settings, NOW) == (0, 0)


async def test_run_maintenance_rolls_up_recent_samples_then_applies_retention(
    engine: Engine, database_url: str
) -> None:
    now = datetime.now(UTC)
    this_hour = hour_start(now)
    add_samples(
        engine,
        "mfp-0001",
        [(this_hour, {"cpu_percent": 4.0}), (this_hour, {"cpu_percent": 6.0})],
        received_at=now,
    )
    long_ago = now - timedelta(days=45)
    add_samples(engine, "srv-0001", [(long_ago, {"cpu_percent": 1.0})], received_at=long_ago)
    settings = ServerSettings(database_url=database_url, telemetry_retention_days=30)
    fleet = FleetUpkeep(settings, engine)  # the upkeep's job, run once: no broker needed
    await fleet.run_maintenance()
    got = rollups(engine)
    assert got[("mfp-0001", "cpu_percent", this_hour)] == (2, 4.0, 6.0, 10.0)
    assert count(engine, TelemetrySample) == 2


def hour_start(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)
