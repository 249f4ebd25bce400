"""KPI benchmark: a year's KPIs by month over 1,000,000 incidents, and CSV import speed.

Run: ``.venv/bin/python -m bench.kpi [--incidents N] [--devices N] [--no-postgres]``.

On SQLite and on PostgreSQL (a private cluster on a free port), the database
gets 50,000 devices and 1,000,000 incidents spread over three years,
generated inside the database (a recursive CTE on SQLite, ``generate_series``
on PostgreSQL). Then, in the same run:

- the baseline: one plain ``SELECT count(*), avg(ttr)`` over the incidents
  closed in the middle year (the same ``closed_at`` window as the KPIs, so a
  full read of the same rows);
- ``compute_kpis`` for that year grouped by month (the baseline median and
  the grouped scan), reported as a ratio to the baseline (target <= 3x);
- the CSV import of 100,000 new rows through ``import_incidents_csv`` (checks
  every row, then bulk inserts), as rows/s and as a ratio to parsing the same
  file with ``csv.reader`` and inserting it with one bare ``executemany``;
  and the re-import of the same file (every row found unchanged).

Each timing is the median of a few repetitions.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.db import create_schema, make_engine
from server.incidents.csv_io import import_incidents_csv
from server.kpi.compute import INCIDENT_TABLE, compute_kpis
from server.kpi.sql import hours_between
from tests.fixtures.postgres import PostgresCluster

RESULTS = Path(__file__).parent / "results" / "kpi.md"
YEAR = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
SPAN_S = 3 * 365 * 86400

_SQLITE_DEVICES = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :devices - 1)
INSERT INTO device (id, serial, model, type, customer, region, created_at, online,
                    clock_skewed, telemetry_received, telemetry_missing, telemetry_rejected)
SELECT 'dev-' || i, 'S' || i, 'bench',
       CASE i % 3 WHEN 0 THEN 'mfp' WHEN 1 THEN 'imaging' ELSE 'server' END,
       'customer-' || (i % 500), 'region-' || (i % 7), '2024-01-01 00:00:00.000000', 0, 0, 0, 0, 0
FROM n
"""

_SQLITE_INCIDENTS = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :incidents - 1),
r AS (
  SELECT abs(random()) % :devices AS d, abs(random()) % :span AS o,
         abs(random()) % 100 AS p, abs(random()) % 100000 AS t
  FROM n
),
s AS (
  SELECT d, t, p,
         julianday('2024-01-01') + o / 86400.0 AS opened,
         CASE WHEN p < 35 THEN 'remote' WHEN p < 58 THEN 'phone'
              WHEN p < 94 THEN 'dispatch' ELSE 'no_fault' END AS resolution,
         CASE WHEN p < 35 THEN 300 + t % 14400 WHEN p < 58 THEN 120 + t % 7200
              WHEN p < 94 THEN 3600 + t * 3 ELSE t % 3600 END AS ttr_s
  FROM r
)
INSERT INTO incident (device_id, device_type, opened_at, answered_at, down_at, restored_at, closed_at,
                      channel, resolution, remote_session_used, created_at, updated_at)
SELECT 'dev-' || d,
       CASE d % 3 WHEN 0 THEN 'mfp' WHEN 1 THEN 'imaging' ELSE 'server' END,
       strftime('%Y-%m-%d %H:%M:%S', opened) || '.000000',
       CASE WHEN p % 5 = 0 THEN NULL
            ELSE strftime('%Y-%m-%d %H:%M:%S', opened + (t % 300) / 86400.0) || '.000000' END,
       strftime('%Y-%m-%d %H:%M:%S', opened - (t % 3600) / 86400.0) || '.000000',
       strftime('%Y-%m-%d %H:%M:%S', opened + (ttr_s - t % 3600) / 86400.0) || '.000000',
       CASE WHEN t % 50 = 0 THEN NULL
            ELSE strftime('%Y-%m-%d %H:%M:%S',
                          opened + (ttr_s + 600 + t % 7200) / 86400.0) || '.000000' END,
       'phone',
       CASE WHEN t % 50 = 0 THEN NULL ELSE resolution END,
       CASE WHEN resolution = 'remote' OR p % 7 = 0 THEN 1 ELSE 0 END,
       '2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000'
FROM s
"""

_PG_DEVICES = """
INSERT INTO device (id, serial, model, type, customer, region, created_at, online,
                    clock_skewed, telemetry_received, telemetry_missing, telemetry_rejected)
SELECT 'dev-' || i, 'S' || i, 'bench',
       CASE i % 3 WHEN 0 THEN 'mfp' WHEN 1 THEN 'imaging' ELSE 'server' END,
       'customer-' || (i % 500), 'region-' || (i % 7), '2024-01-01Z', false, false, 0, 0, 0
FROM generate_series(0, :devices - 1) AS i
"""

_PG_INCIDENTS = """
WITH r AS (
  SELECT floor(random() * :devices)::int AS d, floor(random() * :span)::int AS o,
         floor(random() * 100)::int AS p, floor(random() * 100000)::int AS t
  FROM generate_series(1, :incidents)
),
s AS (
  SELECT d, t, p,
         timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => o) AS opened,
         CASE WHEN p < 35 THEN 'remote' WHEN p < 58 THEN 'phone'
              WHEN p < 94 THEN 'dispatch' ELSE 'no_fault' END AS resolution,
         CASE WHEN p < 35 THEN 300 + t % 14400 WHEN p < 58 THEN 120 + t % 7200
              WHEN p < 94 THEN 3600 + t * 3 ELSE t % 3600 END AS ttr_s
  FROM r
)
INSERT INTO incident (device_id, device_type, opened_at, answered_at, down_at, restored_at, closed_at,
                      channel, resolution, remote_session_used, created_at, updated_at)
SELECT 'dev-' || d,
       CASE d % 3 WHEN 0 THEN 'mfp' WHEN 1 THEN 'imaging' ELSE 'server' END,
       opened,
       CASE WHEN p % 5 = 0 THEN NULL ELSE opened + make_interval(secs => t % 300) END,
       opened - make_interval(secs => t % 3600),
       opened + make_interval(secs => ttr_s - t % 3600),
       CASE WHEN t % 50 = 0 THEN NULL
            ELSE opened + make_interval(secs => ttr_s + 600 + t % 7200) END,
       'phone',
       CASE WHEN t % 50 = 0 THEN NULL ELSE resolution END,
       resolution = 'remote' OR p % 7 = 0,
       timestamptz '2024-01-01Z', timestamptz '2024-01-01Z'
FROM s
"""


def _median_time(action: Callable[[], Any], repeat: int) -> float:
    action()  # warm the caches once
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def populate(engine: Engine, incidents: int, devices: int) -> float:
    """Fill the database; returns the seconds it took."""
    started = time.perf_counter()
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as connection:
        params = {"devices": devices, "incidents": incidents, "span": SPAN_S}
        connection.execute(sa.text(_SQLITE_DEVICES if sqlite else _PG_DEVICES), params)
        connection.execute(sa.text(_SQLITE_INCIDENTS if sqlite else _PG_INCIDENTS), params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("ANALYZE"))
    return time.perf_counter() - started


def baseline_scan(engine: Engine) -> tuple[int, float]:
    """One plain count and mean over the incidents closed in the year."""
    table = INCIDENT_TABLE.c
    query = sa.select(
        sa.func.count(), sa.func.avg(hours_between(table.restored_at, table.down_at))
    ).where(table.closed_at >= YEAR[0], table.closed_at < YEAR[1])
    with engine.connect() as connection:
        count, mean = connection.execute(query).one()
    return int(count), float(mean)


def year_by_month(engine: Engine) -> int:
    with engine.connect() as connection:
        report = compute_kpis(connection, start=YEAR[0], end=YEAR[1], group_by="month")
    return report.total.incidents_closed


def import_csv_text(rows: int, devices: int, tag: str) -> str:
    rng = random.Random(rows)  # reproducible
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "external_id",
            "device_id",
            "opened_at",
            "answered_at",
            "restored_at",
            "closed_at",
            "channel",
            "symptom",
            "resolution",
            "remote_session_used",
        ]
    )
    start = datetime(2026, 6, 1, tzinfo=UTC)
    for i in range(rows):
        opened = start + timedelta(seconds=rng.randrange(86400 * 60))
        restored = opened + timedelta(seconds=rng.randrange(60, 86400))
        resolution = rng.choice(("remote", "phone", "dispatch", "no_fault"))
        writer.writerow(
            [
                f"{tag}-{i:07d}",
                f"dev-{rng.randrange(devices)}",
                opened.isoformat(),
                (opened + timedelta(seconds=rng.randrange(300))).isoformat(),
                restored.isoformat(),
                (restored + timedelta(minutes=10)).isoformat(),
                "phone",
                "printer offline",
                resolution,
                "true" if resolution == "remote" else "false",
            ]
        )
    return buffer.getvalue()


def bare_insert(engine: Engine, text: str) -> None:
    """The import's baseline: csv.reader, then one executemany of the rows as given."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    columns = ", ".join([*header, "device_type", "down_at", "created_at", "updated_at"])
    marks = ", ".join(["?" if engine.dialect.name == "sqlite" else "%s"] * (len(header) + 4))
    rows = [(*row[:9], row[9] == "true", "mfp", row[2], row[2], row[2]) for row in reader]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.executemany(f"INSERT INTO bench_bare ({columns}) VALUES ({marks})", rows)  # noqa: S608
        raw.rollback()
    finally:
        raw.close()


def run(
    engine: Engine, name: str, incidents: int, devices: int, import_rows: int
) -> dict[str, Any]:
    create_schema(engine)
    fill_s = populate(engine, incidents, devices)
    print(f"[{name}] {incidents:,} incidents and {devices:,} devices generated in {fill_s:.1f} s")
    closed_in_year = baseline_scan(engine)[0]
    baseline_s = _median_time(lambda: baseline_scan(engine), 5)
    kpi_s = _median_time(lambda: year_by_month(engine), 5)
    load = os.getloadavg()[0]
    assert year_by_month(engine) == closed_in_year
    print(
        f"[{name}] year by month: {kpi_s * 1000:.0f} ms; plain count/avg scan "
        f"{baseline_s * 1000:.0f} ms; ratio {kpi_s / baseline_s:.2f}x ({closed_in_year:,} closed; "
        f"load average {load:.2f})"
    )
    # A copy of the incident table without indexes or constraints for the bare insert.
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(sa.text("CREATE TABLE bench_bare AS SELECT * FROM incident WHERE 0"))
        else:
            connection.execute(
                sa.text("CREATE TABLE bench_bare (LIKE incident INCLUDING DEFAULTS)")
            )
    text = import_csv_text(import_rows, devices, f"bench-{name}")
    bare_s = _median_time(lambda: bare_insert(engine, text), 1)
    started = time.perf_counter()
    with Session(engine) as session:
        first = import_incidents_csv(session, text)
    import_s = time.perf_counter() - started
    assert first.inserted == import_rows, first
    started = time.perf_counter()
    with Session(engine) as session:
        again = import_incidents_csv(session, text)
    reimport_s = time.perf_counter() - started
    assert again.skipped == import_rows, again
    print(
        f"[{name}] import of {import_rows:,} rows: {import_rows / import_s:,.0f} rows/s "
        f"({import_s / bare_s:.2f}x a bare csv.reader + executemany at "
        f"{import_rows / bare_s:,.0f} rows/s); re-import {import_rows / reimport_s:,.0f} rows/s"
    )
    return {
        "database": name,
        "incidents": incidents,
        "closed_in_year": closed_in_year,
        "baseline_ms": baseline_s * 1000,
        "kpi_ms": kpi_s * 1000,
        "ratio": kpi_s / baseline_s,
        "load": load,
        "import_rows_s": import_rows / import_s,
        "import_ratio": import_s / bare_s,
        "bare_rows_s": import_rows / bare_s,
        "reimport_rows_s": import_rows / reimport_s,
    }


def report(results: list[dict[str, Any]], devices: int, import_rows: int) -> str:
    lines = [
        "## KPIs and incident import (`bench/kpi.py`)",
        "",
        f"{results[0]['incidents']:,} incidents over three years across {devices:,} devices; "
        "the KPIs of one year grouped by month (`compute_kpis`: one statement with the median "
        "baseline and the grouped sums) against one plain `SELECT count(*), avg(ttr)` over the same year's "
        "incidents (the same `closed_at` window), measured in the same run (median of 5; the load "
        f"average is the 1-minute one right after). Import: {import_rows:,} CSV rows "
        "through `import_incidents_csv` (every row checked, then bulk inserted) against "
        "`csv.reader` plus one bare `executemany` of the same rows into an unindexed table.",
        "",
        "| database | closed in the year | plain scan | year by month | ratio | load average "
        "| import rows/s "
        "| import vs bare insert | re-import (unchanged) rows/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['database']} | {r['closed_in_year']:,} | {r['baseline_ms']:.0f} ms "
            f"| {r['kpi_ms']:.0f} ms | {r['ratio']:.2f}x | {r['load']:.2f} "
            f"| {r['import_rows_s']:,.0f} "
            f"| {r['import_ratio']:.2f}x ({r['bare_rows_s']:,.0f} rows/s) "
            f"| {r['reimport_rows_s']:,.0f} |"
        )
    lines += [
        "",
        "Target: the year by month within 3x the plain scan; import in the thousands of rows/s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="fieldlink-bench-kpi-") as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'kpi.db'}")
        try:
            results.append(run(engine, "SQLite", args.incidents, args.devices, args.import_rows))
        finally:
            engine.dispose()
    if not args.no_postgres:
        cluster = PostgresCluster()
        cluster.start()
        try:
            engine = make_engine(cluster.create_database())
            try:
                results.append(
                    run(engine, "PostgreSQL", args.incidents, args.devices, args.import_rows)
                )
            finally:
                engine.dispose()
        finally:
            cluster.stop()
    text = report(results, args.devices, args.import_rows)
    RESULTS.write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
