"""The fleet's periodic SQL: marking silent devices offline, hourly rollups, and retention.

Blocking database code, run on a worker thread by the jobs of
:class:`server.upkeep.FleetUpkeep` under the ingest's lock, so it never races
this process's batches for the same rows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from server.config import ServerSettings
from server.ingest import via
from server.ingest.online import SILENT
from server.models import Alert, Device, TelemetryRollup, TelemetrySample
from server.models.telemetry import DeviceEventRecord
from server.notify.events import online_event, write_events

logger = logging.getLogger(__name__)

DEVICE = Device.__table__  # type: ignore[attr-defined]
SAMPLE = TelemetrySample.__table__  # type: ignore[attr-defined]
ROLLUP = TelemetryRollup.__table__  # type: ignore[attr-defined]
ALERT = Alert.__table__  # type: ignore[attr-defined]
EVENT = DeviceEventRecord.__table__  # type: ignore[attr-defined]
HOUR = timedelta(hours=1)


def mark_silent(engine: Engine, offline_after_s: float, now: datetime) -> list[str]:
    """Mark devices offline (reason ``silent``) that sent nothing for ``offline_after_s``,
    and the online devices a silent gateway watches (``gateway_offline``)."""
    cutoff = now - timedelta(seconds=offline_after_s)
    with engine.begin() as conn:
        stmt = (
            sa.update(DEVICE)
            .where(
                DEVICE.c.online.is_(True),
                sa.or_(DEVICE.c.last_seen.is_(None), DEVICE.c.last_seen < cutoff),
            )
            .values(online=False, online_reason=SILENT, online_changed_at=now)
            .returning(DEVICE.c.id)
        )
        silent = [row.id for row in conn.execute(stmt)]
        if silent:
            conn.execute(
                sa.insert(EVENT),
                [
                    {
                        "device_id": device_id,
                        "type": "offline",
                        "ts": now,
                        "received_at": now,
                        "body": {"reason": SILENT},
                    }
                    for device_id in silent
                ],
            )
            write_events(
                conn,
                [online_event(d, online=False, reason=SILENT, at=now) for d in silent],
            )
            # A silent gateway's watched devices cannot be heard either.
            via.take_watched_offline(
                conn, [(device_id, now) for device_id in silent], skip=set(silent), events=EVENT
            )
    if silent:
        logger.info("marked %d silent device(s) offline", len(silent))
    return silent


def fleet_counts(engine: Engine) -> tuple[int, int, int]:
    """Devices online, devices registered, open alerts."""
    with engine.connect() as conn:
        online = conn.scalar(sa.select(sa.func.count()).where(DEVICE.c.online.is_(True)))
        registered = conn.scalar(sa.select(sa.func.count()).select_from(DEVICE))
        alerts = conn.scalar(sa.select(sa.func.count()).where(ALERT.c.open.is_(True)))
    return int(online or 0), int(registered or 0), int(alerts or 0)


def hour_of(ts: datetime) -> datetime:
    """The start of the hour ``ts`` falls in."""
    return ts.replace(minute=0, second=0, microsecond=0)


def _upsert_rollups(conn: Connection, rows: list[dict[str, object]]) -> None:
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(ROLLUP)
    else:
        stmt = sqlite.insert(ROLLUP)
    stmt = stmt.on_conflict_do_update(
        index_elements=["device_id", "metric", "bucket"],
        set_={name: stmt.excluded[name] for name in ("count", "min", "max", "sum")},
    )
    conn.execute(stmt, rows)


def rollup_hours(engine: Engine, received_since: datetime) -> int:
    """Recompute the hourly rollups of every hour that got samples since ``received_since``.

    Each touched (device, hour) is aggregated again from all its raw samples and
    upserted, so running this twice, or in two processes, gives the same rows.
    Returns the number of rollup rows written.
    """
    with engine.begin() as conn:
        touched: set[tuple[str, datetime]] = set()
        for row in conn.execute(
            sa.select(SAMPLE.c.device_id, SAMPLE.c.ts).where(SAMPLE.c.received_at >= received_since)
        ):
            touched.add((row.device_id, hour_of(row.ts)))
        by_device: dict[str, set[datetime]] = defaultdict(set)
        for device_id, bucket in touched:
            by_device[device_id].add(bucket)
        rows: list[dict[str, object]] = []
        for device_id, buckets in sorted(by_device.items()):
            start, end = min(buckets), max(buckets) + HOUR
            aggregates: dict[tuple[str, datetime], list[float]] = {}
            for sample in conn.execute(
                sa.select(SAMPLE.c.ts, SAMPLE.c.metrics).where(
                    SAMPLE.c.device_id == device_id, SAMPLE.c.ts >= start, SAMPLE.c.ts < end
                )
            ):
                bucket = hour_of(sample.ts)
                if bucket not in buckets:
                    continue
                for metric, value in (sample.metrics or {}).items():
                    agg = aggregates.get((metric, bucket))
                    if agg is None:
                        aggregates[(metric, bucket)] = [1, value, value, value]
                    else:
                        agg[0] += 1
                        agg[1] = min(agg[1], value)
                        agg[2] = max(agg[2], value)
                        agg[3] += value
            rows.extend(
                {
                    "device_id": device_id,
                    "metric": metric[:128],
                    "bucket": bucket,
                    "count": int(agg[0]),
                    "min": agg[1],
                    "max": agg[2],
                    "sum": agg[3],
                }
                for (metric, bucket), agg in aggregates.items()
            )
        for offset in range(0, len(rows), 1000):
            _upsert_rollups(conn, rows[offset : offset + 1000])
    return len(rows)


def purge_old(engine: Engine, settings: ServerSettings, now: datetime) -> tuple[int, int]:
    """Delete raw samples and rollups past their retention; returns the rows deleted."""
    sample_cutoff = now - timedelta(days=settings.telemetry_retention_days)
    rollup_cutoff = now - timedelta(days=settings.rollup_retention_days)
    with engine.begin() as conn:
        samples = conn.execute(sa.delete(SAMPLE).where(SAMPLE.c.received_at < sample_cutoff))
        rollups = conn.execute(sa.delete(ROLLUP).where(ROLLUP.c.bucket < rollup_cutoff))
    return samples.rowcount or 0, rollups.rowcount or 0
