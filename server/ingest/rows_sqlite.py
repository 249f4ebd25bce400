"""SQLite: the ingest's hand-written statements, run on the sqlite3 connection directly.

This is the hot path, so it goes around SQLAlchemy's per-value type processing:
values are serialized here exactly as the column types would (UTC timestamps as
naive text, JSON text), and lists go as one JSON document into fixed statement
texts (prepared once per connection). The batch holds SQLite's write lock
(``BEGIN IMMEDIATE``) before it reads the device rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic_core
from sqlalchemy.engine import Connection

from server.ingest.alerts import AlertKey
from server.ingest.device_row import (
    HEALTH_COLUMNS,
    ROW_COLUMNS,
    TIME_COLUMNS,
    UPDATE_COLUMNS,
    DeviceRow,
    OpenAlerts,
    SampleKey,
)
from server.ingest.items import SampleItem

#: The rows go as one JSON array of arrays (``WHERE true``: SQLite's UPSERT after a
#: SELECT needs it); ``->>`` gives SQL values, ``->`` the JSON text of an object.
INSERT_SAMPLES_SQL = (
    "INSERT INTO telemetry_sample (device_id, boot_id, seq, ts, received_at, status, metrics, "
    "faults, ts_untrusted) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, "
    "value ->> 4, value ->> 5, value -> 6, value -> 7, value ->> 8 FROM json_each(?) WHERE true "
    "ON CONFLICT (device_id, boot_id, seq) DO NOTHING RETURNING device_id, boot_id, seq"
)
#: The ids go as one JSON array, so each statement text is fixed (prepared once).
OPEN_ALERTS_SQL = (
    "SELECT id, device_id, source, code, metric FROM alert "
    "WHERE open = 1 AND device_id IN (SELECT value FROM json_each(?))"
)
#: Only the known column names are joined in (as in every statement text here).
DEVICE_SELECT_SQL = (
    f"SELECT {', '.join(ROW_COLUMNS)} FROM device "  # noqa: S608
    "WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
)
UPDATE_SQL = (
    f"UPDATE device SET {', '.join(f'{name} = ?' for name in UPDATE_COLUMNS)} "  # noqa: S608
    "WHERE id = ?"
)
UPDATE_WITH_HEALTH_SQL = (
    "UPDATE device SET "  # noqa: S608
    f"{', '.join(f'{name} = ?' for name in UPDATE_COLUMNS + HEALTH_COLUMNS)} WHERE id = ?"
)
#: SQLite's default ``wal_autocheckpoint``, put back on a connection the ingest lets go.
AUTOCHECKPOINT_PAGES = 1000

_NO_OFFSET = timedelta(0)


def driver(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy one."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)  # noqa: S101  (the engine's driver)
    return raw


def sqlite_utc(value: datetime) -> str:
    """A timestamp as SQLAlchemy stores ``UTCDateTime`` on SQLite (naive UTC text).

    ``YYYY-MM-DD HH:MM:SS.ffffff``, as ``strftime("%Y-%m-%d %H:%M:%S.%f")`` but faster.
    """
    if value.utcoffset() == _NO_OFFSET:  # already UTC: cut off the "+00:00"
        return value.isoformat(" ", "microseconds")[:26]
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def checkpoint(conn: Connection) -> tuple[int, int, int]:
    """One passive WAL checkpoint on ``conn`` (never waits for readers or writers);
    returns SQLite's ``(busy, frames in the log, frames checkpointed)``."""
    busy, log, done = driver(conn).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(log), int(done)


class SqliteRows:
    """The batch's reads and writes on SQLite (one per store: it remembers a timestamp)."""

    def __init__(self) -> None:
        #: The last timestamp :func:`sqlite_utc` converted (a read's messages share one).
        self._stamp_memo: tuple[datetime | None, str] = (None, "")

    def _stamp(self, value: datetime) -> str:
        """:func:`sqlite_utc`, remembering the last value (``received_at`` repeats)."""
        last, text = self._stamp_memo
        if value is not last:
            text = sqlite_utc(value)
            self._stamp_memo = (value, text)
        return text

    def load_devices(self, conn: Connection, ids: set[str]) -> dict[str, DeviceRow]:
        """The devices' rows (the write lock is held already)."""
        if not ids:
            return {}
        rows: dict[str, DeviceRow] = {}
        for raw in driver(conn).execute(DEVICE_SELECT_SQL, (json.dumps(sorted(ids)),)):
            row = DeviceRow.from_values(raw)
            rows[row.id] = row
        return rows

    def load_open_alerts(self, conn: Connection, ids: Sequence[str]) -> OpenAlerts:
        """The open alerts of these devices, by device."""
        result: OpenAlerts = {device_id: {} for device_id in ids}
        if not ids:
            return result
        for alert_id, device_id, source, code, metric in driver(conn).execute(
            OPEN_ALERTS_SQL, (json.dumps(list(ids)),)
        ):
            result[device_id][AlertKey(source, code, metric)] = alert_id
        return result

    def insert_samples(self, conn: Connection, samples: list[SampleItem]) -> set[SampleKey]:
        """Insert new samples; the keys actually inserted (duplicates are skipped)."""
        if not samples:
            return set()
        stamp = self._stamp
        rows = []
        for item in samples:
            sample = item.sample
            faults = sample.faults
            rows.append(
                (
                    item.device_id,
                    sample.boot_id,
                    sample.seq,
                    sqlite_utc(sample.ts),
                    stamp(item.received_at),
                    sample.status,
                    # Metric values are finite (validated), so this is plain JSON.
                    sample.metrics,
                    [f.model_dump() for f in faults] if faults else (),
                    item.ts_untrusted,
                )
            )
        document = pydantic_core.to_json(rows).decode()
        return {
            (row[0], row[1], row[2])
            for row in driver(conn).execute(INSERT_SAMPLES_SQL, (document,)).fetchall()
        }

    def update_devices(
        self, conn: Connection, dirty: list[DeviceRow], with_health: set[str]
    ) -> None:
        """Write the changed device rows back, in two executemany groups (with and
        without health), with fixed statement texts."""
        sqlite = driver(conn)
        stamp = self._stamp
        to_json = pydantic_core.to_json
        for health in (True, False):
            group = [d for d in dirty if (d.id in with_health) is health]
            if not group:
                continue
            columns = UPDATE_COLUMNS + (HEALTH_COLUMNS if health else [])
            params = []
            for device in group:
                row: list[Any] = []
                for name in columns:
                    value = getattr(device, name)
                    if name in TIME_COLUMNS and value is not None:
                        value = stamp(value)
                    elif name == "health":
                        value = to_json(value).decode()
                    row.append(value)
                row.append(device.id)
                params.append(row)
            sqlite.executemany(UPDATE_WITH_HEALTH_SQL if health else UPDATE_SQL, params)
