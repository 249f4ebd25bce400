"""Writing a batch of validated messages to the database in one transaction.

This is blocking code: the ingest runs it on a worker thread, one batch at a
time. A batch locks the rows of the devices it touches (``FOR UPDATE`` on
PostgreSQL; SQLite has one writer anyway), so several server processes sharing
the fleet's messages keep the per-device counters exact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pydantic_core
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError

from server.config import ServerSettings
from server.ingest.alerts import (
    AlertDetails,
    AlertKey,
    AlertPlan,
    ThresholdCheck,
    apply_plan,
    match_rules,
    plan_for_checks,
    rule_violation,
)
from server.ingest.clock import ClockOffsetEstimator, is_skewed
from server.ingest.online import SILENT, OnlineStatus, next_status, server_time
from server.ingest.sequence import NewSample, SequenceMark, account_samples
from server.ingest.timestamps import future_bound_s
from server.models import Alert, Device, TelemetrySample
from server.models.telemetry import DeviceEventRecord
from shared.ids import utcnow
from shared.models import CommandResult, DeviceEvent, DeviceState, Fault, HealthSample
from shared.wire import FAULT_CLEARED, FAULT_RAISED, SESSION_EVENT_PREFIX

logger = logging.getLogger(__name__)

DEVICE = Device.__table__  # type: ignore[attr-defined]
SAMPLE = TelemetrySample.__table__  # type: ignore[attr-defined]
ALERT = Alert.__table__  # type: ignore[attr-defined]
EVENT = DeviceEventRecord.__table__  # type: ignore[attr-defined]

#: SQLite: the rows go as one JSON array of arrays (``WHERE true``: SQLite's UPSERT
#: after a SELECT needs it); ``->>`` gives SQL values, ``->`` the JSON text of an object.
SQLITE_INSERT_SAMPLES_SQL = (
    "INSERT INTO telemetry_sample (device_id, boot_id, seq, ts, received_at, status, metrics, "
    "faults, ts_untrusted) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, "
    "value ->> 4, value ->> 5, value -> 6, value -> 7, value ->> 8 FROM json_each(?) WHERE true "
    "ON CONFLICT (device_id, boot_id, seq) DO NOTHING RETURNING device_id, boot_id, seq"
)
#: SQLite: the ids go as one JSON array, so each statement text is fixed (prepared once).
SQLITE_OPEN_ALERTS_SQL = (
    "SELECT id, device_id, source, code, metric FROM alert "
    "WHERE open = 1 AND device_id IN (SELECT value FROM json_each(?))"
)
#: PostgreSQL: fixed statement texts (prepared once by psycopg); rows go as one JSON document.
PG_OPEN_ALERTS_SQL = (
    "SELECT id, device_id, source, code, metric FROM alert "
    "WHERE open AND device_id = ANY(%b::text[])"
)
#: Only for registered, unrevoked devices (their rows are locked by this transaction already).
PG_INSERT_SAMPLES_SQL = (
    "INSERT INTO telemetry_sample (device_id, boot_id, seq, ts, received_at, status, metrics, "
    "faults, ts_untrusted) SELECT v.device_id, v.boot_id, v.seq, v.ts, v.received_at, v.status, "
    "v.metrics, v.faults, v.ts_untrusted FROM jsonb_to_recordset(%s::jsonb) AS v(device_id text, "
    "boot_id text, seq bigint, ts timestamptz, received_at timestamptz, status text, "
    "metrics jsonb, faults jsonb, ts_untrusted boolean) "
    "JOIN device ON device.id = v.device_id "
    "AND device.revoked_at IS NULL "
    "ON CONFLICT (device_id, boot_id, seq) DO NOTHING RETURNING device_id, boot_id, seq"
)
#: PostgreSQL type of each column the ingest writes back to ``device``.
_PG_TYPES = {
    "id": "text",
    "boot_id": "text",
    "last_seq": "bigint",
    "last_seen": "timestamptz",
    "online": "boolean",
    "online_reason": "text",
    "online_changed_at": "timestamptz",
    "agent_version": "text",
    "clock_offset_s": "float8",
    "clock_skewed": "boolean",
    "telemetry_received": "bigint",
    "telemetry_missing": "bigint",
    "telemetry_rejected": "bigint",
    "status": "text",
    "health_ts": "timestamptz",
    "health": "jsonb",
}
#: SQLite's default ``wal_autocheckpoint``, put back on the connection when the store lets it go.
SQLITE_AUTOCHECKPOINT_PAGES = 1000
#: Times a batch is retried when the database reports a lock conflict or deadlock.
WRITE_ATTEMPTS = 5


@dataclass(slots=True)
class SampleItem:
    """A valid health sample, as received.

    ``ts_untrusted``: the device's ``ts`` was implausible and ``sample.ts`` has been
    replaced with ``received_at`` (see :func:`server.ingest.service.plausible_ts`).
    """

    device_id: str
    sample: HealthSample
    received_at: datetime
    ts_untrusted: bool = False


@dataclass(slots=True)
class StateItem:
    """A valid birth or death; ``retained`` when replayed at subscribe time."""

    device_id: str
    state: DeviceState
    retained: bool
    received_at: datetime


@dataclass(slots=True)
class EventItem:
    """A valid device event."""

    device_id: str
    event: DeviceEvent
    received_at: datetime


@dataclass(slots=True)
class CommandResultItem:
    """A valid ``cmd/result``: handed on to the server once its device is known good."""

    device_id: str
    result: CommandResult
    received_at: datetime


@dataclass(slots=True)
class RejectedItem:
    """A rejected message on a device's topic: counted on the device if it is registered."""

    device_id: str
    reason: str


IngestItem = SampleItem | StateItem | EventItem | CommandResultItem | RejectedItem


@dataclass
class BatchResult:
    """What one batch did, for the metrics."""

    stored: int = 0
    duplicates: int = 0
    states: int = 0
    stale_states: int = 0
    events: int = 0
    unregistered: int = 0
    #: Messages from a device whose ``revoked_at`` is set (dropped, counted on the device).
    revoked: int = 0
    missing_delta: int = 0
    late: int = 0
    #: Implausible jumps of ``seq`` taken as a new stream (not counted missing).
    seq_resets: int = 0
    #: Stored samples whose ``ts`` was replaced with the receive time.
    ts_untrusted: int = 0
    #: ``(device_id, telemetry_missing)`` of each device that sent samples in this
    #: batch and still has samples counted missing (it may resend them).
    gap_devices: list[tuple[str, int]] = field(default_factory=list)
    outbox_dropped: int = 0
    #: ``sent_at`` (or ``received_at``) of each stored sample, as UNIX times.
    stored_sent_times: list[float] = field(default_factory=list)
    #: ``(device_id, result)`` of each accepted ``cmd/result``, in arrival order.
    command_results: list[tuple[str, CommandResult]] = field(default_factory=list)
    #: ``(device_id, event)`` of each accepted ``session.*`` event, in arrival order.
    session_events: list[tuple[str, DeviceEvent]] = field(default_factory=list)


@dataclass
class _DeviceRow:
    """The registry columns the ingest reads and writes, for one device."""

    id: str
    boot_id: str | None
    last_seq: int | None
    status: str | None
    health_ts: datetime | None
    last_seen: datetime | None
    online: bool
    online_reason: str | None
    online_changed_at: datetime | None
    agent_version: str | None
    clock_offset_s: float | None
    clock_skewed: bool
    telemetry_received: int
    telemetry_missing: int
    telemetry_rejected: int
    #: Read only: set when the device was revoked; nothing it sends is accepted then.
    revoked_at: datetime | None = None
    dirty: bool = False
    #: The newest sample's metrics when it changed in this batch (never read back).
    health: dict[str, Any] | None = None

    def seen(self, when: datetime) -> None:
        if self.last_seen is None or when > self.last_seen:
            self.last_seen = when
            self.dirty = True

    def status_now(self) -> OnlineStatus:
        return OnlineStatus(self.online, self.online_reason, self.online_changed_at, self.boot_id)

    def set_status(self, status: OnlineStatus) -> None:
        self.online, self.online_reason = status.online, status.reason
        self.online_changed_at = status.changed_at
        self.dirty = True


_ROW_COLUMNS = [name for name in _DeviceRow.__dataclass_fields__ if name not in ("dirty", "health")]
_UPDATE_COLUMNS = [
    name for name in _ROW_COLUMNS if name not in ("id", "status", "health_ts", "revoked_at")
]
_HEALTH_COLUMNS = ["status", "health_ts", "health"]
#: Only the known column names are joined in (as in every statement text here).
_PG_DEVICE_SELECT_SQL = (
    f"SELECT {', '.join(_ROW_COLUMNS)} FROM device "  # noqa: S608
    "WHERE id = ANY(%b::text[]) ORDER BY id FOR UPDATE"
)
_SQLITE_DEVICE_SELECT_SQL = (
    f"SELECT {', '.join(_ROW_COLUMNS)} FROM device "  # noqa: S608
    "WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
)
_SQLITE_UPDATE_SQL = (
    f"UPDATE device SET {', '.join(f'{name} = ?' for name in _UPDATE_COLUMNS)} "  # noqa: S608
    "WHERE id = ?"
)
_SQLITE_UPDATE_WITH_HEALTH_SQL = (
    "UPDATE device SET "  # noqa: S608
    f"{', '.join(f'{name} = ?' for name in _UPDATE_COLUMNS + _HEALTH_COLUMNS)} WHERE id = ?"
)
_TIME_COLUMNS = frozenset({"health_ts", "last_seen", "online_changed_at", "revoked_at"})
_BOOL_COLUMNS = frozenset({"online", "clock_skewed"})


def _retryable(exc: StatementError) -> bool:
    text = str(exc.orig).lower()
    return any(word in text for word in ("locked", "deadlock", "could not serialize", "busy"))


class IngestStore:
    """Applies batches of ingest items to the registry, telemetry, alerts and history."""

    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = ClockOffsetEstimator()
        self._check_cache: dict[tuple[str, ...], list[ThresholdCheck]] = {}
        #: The store's own connection, kept between batches (no pool checkout and
        #: ping per batch); dropped on any error, reopened on the next.
        self._conn: Connection | None = None
        self._postgres = engine.dialect.name == "postgresql"
        self._driver_error: type[Exception] = psycopg.Error if self._postgres else sqlite3.Error
        #: SQLite: the ingest runs WAL checkpoints on a thread of their own (see
        #: :meth:`_connection`); set before the first batch.
        self.checkpoint_elsewhere = False
        #: The last timestamp :func:`_sqlite_utc` converted (a read's messages share one).
        self._stamp_memo: tuple[datetime | None, str] = (None, "")

    def _checks_for(self, sample: HealthSample) -> list[ThresholdCheck]:
        """The threshold checks on the sample's metrics (cached by metric names)."""
        names = tuple(sample.metrics)
        checks = self._check_cache.get(names)
        if checks is None:
            checks = match_rules(self.settings.thresholds, names)
            if len(self._check_cache) > 10_000:
                self._check_cache.clear()
            self._check_cache[names] = checks
        return checks

    def _trusted(self, health_ts: datetime | None) -> datetime | None:
        """A device's stored ``health_ts``, or ``None`` when it lies in the future.

        Rows written before ``ts`` was bounded may hold a year ahead (one sample
        in 2099 froze a device's health until 2099): such a value is ignored, so
        the next genuine sample becomes the latest again.
        """
        if health_ts is None:
            return None
        if health_ts > utcnow() + timedelta(seconds=future_bound_s(self.settings)):
            return None
        return health_ts

    def _stamp(self, value: datetime) -> str:
        """:func:`_sqlite_utc`, remembering the last value (``received_at`` repeats)."""
        last, text = self._stamp_memo
        if value is not last:
            text = _sqlite_utc(value)
            self._stamp_memo = (value, text)
        return text

    def write(self, items: Sequence[IngestItem]) -> BatchResult:
        """Write one batch in one transaction (retried on lock conflicts).

        SQLite: ``BEGIN IMMEDIATE`` takes the write lock before the device rows
        are read, so that another writer (a second server process) cannot update
        them between the read and the write.
        """
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            conn = self._connection()
            try:
                with conn.begin():
                    if not self._postgres:
                        _sqlite_driver(conn).execute("BEGIN IMMEDIATE")
                    return self._write(conn, items)
            except self._driver_error as exc:
                self._discard(conn)
                # Raised by the raw statements (pipelined on PostgreSQL): as SQLAlchemy would.
                error = DBAPIError.instance(
                    "ingest batch", None, exc, self._driver_error, hide_parameters=True
                )
                if attempt == WRITE_ATTEMPTS or not _retryable(error):
                    raise error from exc
                logger.warning("ingest batch conflicted (attempt %d), retrying", attempt)
                time.sleep(0.05 * attempt)
            except (OperationalError, DBAPIError) as exc:
                self._discard(conn)
                if attempt == WRITE_ATTEMPTS or not _retryable(exc):
                    raise
                logger.warning("ingest batch conflicted (attempt %d), retrying", attempt)
                time.sleep(0.05 * attempt)
        msg = "unreachable"
        raise AssertionError(msg)

    def _connection(self) -> Connection:
        """The store's connection (opened on first use or after an error).

        SQLite: with ``checkpoint_elsewhere`` its commits never run a WAL
        checkpoint (copying the log back into the database and syncing it: tens
        of milliseconds now and then); :meth:`checkpoint` on another thread does.
        """
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._conn = self.engine.connect()
            if not self._postgres and self.checkpoint_elsewhere:
                _sqlite_driver(conn).execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _discard(self, conn: Connection) -> None:
        """Drop a connection after an error: it may be broken or mid-transaction."""
        self._conn = None
        with contextlib.suppress(Exception):
            conn.invalidate()
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        """Return the store's connection (the ingest calls this when it stops)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if not self._postgres and self.checkpoint_elsewhere:
                    _sqlite_driver(conn).execute(
                        f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}"
                    )
            with contextlib.suppress(Exception):
                conn.close()

    def checkpoint(self, conn: Connection) -> tuple[int, int, int]:
        """SQLite: one passive WAL checkpoint on ``conn`` (never waits for readers or
        writers); returns SQLite's ``(busy, frames in the log, frames checkpointed)``."""
        busy, log, done = _sqlite_driver(conn).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(log), int(done)

    # -- the transaction --------------------------------------------------------------

    def _load_devices(self, conn: Connection, ids: set[str]) -> dict[str, _DeviceRow]:
        """SQLite: load the devices' rows (raw SQL, as it runs per batch; the write
        lock is held already)."""
        if not ids:
            return {}
        sqlite = _sqlite_driver(conn)
        rows: dict[str, _DeviceRow] = {}
        for raw in sqlite.execute(_SQLITE_DEVICE_SELECT_SQL, (json.dumps(sorted(ids)),)):
            values = dict(zip(_ROW_COLUMNS, raw, strict=True))
            for name in _TIME_COLUMNS:
                values[name] = _read_utc(values[name])
            for name in _BOOL_COLUMNS:
                values[name] = bool(values[name])
            rows[values["id"]] = _DeviceRow(**values)
        return rows

    def _read_postgres(
        self, conn: Connection, items: Sequence[IngestItem]
    ) -> tuple[dict[str, _DeviceRow], dict[str, dict[AlertKey, int]], set[tuple[str, str, int]]]:
        """PostgreSQL, in one round trip (a pipeline): lock the batch's device rows, read
        their open alerts, and insert the samples of the registered, unrevoked ones.

        Returns the device rows, their open alerts, and the keys of the samples
        actually inserted (a duplicate is skipped by ``ON CONFLICT DO NOTHING``).
        """
        ids = sorted({item.device_id for item in items})
        samples = [item for item in items if isinstance(item, SampleItem)]
        pg = conn.connection.driver_connection
        assert isinstance(pg, psycopg.Connection)  # noqa: S101  (the engine's driver)
        with pg.pipeline():
            device_cursor = pg.execute(_PG_DEVICE_SELECT_SQL, (ids,))
            alert_cursor = pg.execute(PG_OPEN_ALERTS_SQL, (ids,))
            insert_cursor = (
                pg.execute(PG_INSERT_SAMPLES_SQL, (_pg_samples_json(samples),)) if samples else None
            )
        devices: dict[str, _DeviceRow] = {}
        for raw in device_cursor.fetchall():
            values = dict(zip(_ROW_COLUMNS, raw, strict=True))
            for name in _TIME_COLUMNS:
                values[name] = _read_utc(values[name])
            devices[values["id"]] = _DeviceRow(**values)
        open_ids: dict[str, dict[AlertKey, int]] = {device_id: {} for device_id in ids}
        for alert_id, device_id, source, code, metric in alert_cursor.fetchall():
            open_ids[device_id][AlertKey(source, code, metric)] = alert_id
        inserted: set[tuple[str, str, int]] = set()
        if insert_cursor is not None:
            inserted.update((row[0], row[1], row[2]) for row in insert_cursor.fetchall())
        return devices, open_ids, inserted

    def _update_devices_postgres(
        self, conn: Connection, dirty: list[_DeviceRow], with_health: set[str]
    ) -> None:
        """Write the changed device rows back in ONE ``UPDATE ... FROM jsonb_to_recordset``,
        and commit.

        The rows go as one JSON document (serialized in C by pydantic-core, parsed
        in C by PostgreSQL): much cheaper than one array parameter per column.
        """
        if not dirty:
            return
        columns = ["id", *_UPDATE_COLUMNS, *_HEALTH_COLUMNS]
        rows: list[dict[str, Any]] = []
        for device in dirty:
            row = {name: getattr(device, name) for name in columns}
            row["with_health"] = health = device.id in with_health
            if not health:
                row["health"] = None
            rows.append(row)
        document = pydantic_core.to_json(rows).decode()
        pg = conn.connection.driver_connection
        assert isinstance(pg, psycopg.Connection)  # noqa: S101  (the engine's driver)
        # The update and the commit in one round trip; SQLAlchemy's commit that
        # follows finds no transaction open and sends nothing.
        with pg.pipeline():
            pg.execute(_pg_update_sql(columns), (document,))
            pg.commit()

    def _load_open_alerts(
        self, conn: Connection, ids: Sequence[str]
    ) -> dict[str, dict[AlertKey, int]]:
        """SQLite: the open alerts of these devices, by device."""
        result: dict[str, dict[AlertKey, int]] = {device_id: {} for device_id in ids}
        if not ids:
            return result
        sqlite = _sqlite_driver(conn)
        for alert_id, device_id, source, code, metric in sqlite.execute(
            SQLITE_OPEN_ALERTS_SQL, (json.dumps(list(ids)),)
        ):
            result[device_id][AlertKey(source, code, metric)] = alert_id
        return result

    def _insert_samples(
        self, conn: Connection, samples: list[SampleItem]
    ) -> set[tuple[str, str, int]]:
        """SQLite: insert new samples; returns the keys actually inserted (duplicates are skipped).

        This is the hot path, so it goes around SQLAlchemy's per-value type
        processing: values are serialized here exactly as the column types would
        (UTC timestamps as text, JSON text), and the rows go as one JSON document
        into one ``INSERT ... SELECT FROM json_each(?) ON CONFLICT DO NOTHING
        RETURNING`` (a fixed statement text: prepared once per connection).
        """
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
                    _sqlite_utc(sample.ts),
                    stamp(item.received_at),
                    sample.status,
                    # Metric values are finite (validated), so this is plain JSON.
                    sample.metrics,
                    [f.model_dump() for f in faults] if faults else (),
                    item.ts_untrusted,
                )
            )
        sqlite = _sqlite_driver(conn)
        document = pydantic_core.to_json(rows).decode()
        return {
            (row[0], row[1], row[2])
            for row in sqlite.execute(SQLITE_INSERT_SAMPLES_SQL, (document,)).fetchall()
        }

    def _update_devices(
        self, conn: Connection, dirty: list[_DeviceRow], with_health: set[str]
    ) -> None:
        """SQLite: write the changed device rows back, in two executemany groups
        (with/without health), with fixed statement texts."""
        sqlite = _sqlite_driver(conn)
        stamp = self._stamp
        to_json = pydantic_core.to_json
        for health in (True, False):
            group = [d for d in dirty if (d.id in with_health) is health]
            if not group:
                continue
            columns = _UPDATE_COLUMNS + (_HEALTH_COLUMNS if health else [])
            params = []
            for device in group:
                row: list[Any] = []
                for name in columns:
                    value = getattr(device, name)
                    if name in _TIME_COLUMNS and value is not None:
                        value = stamp(value)
                    elif name == "health":
                        value = to_json(value).decode()
                    row.append(value)
                row.append(device.id)
                params.append(row)
            sqlite.executemany(
                _SQLITE_UPDATE_WITH_HEALTH_SQL if health else _SQLITE_UPDATE_SQL, params
            )

    def _write(self, conn: Connection, items: Sequence[IngestItem]) -> BatchResult:
        result = BatchResult()
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            devices, open_ids, inserted = self._read_postgres(conn, items)
        else:
            devices = self._load_devices(conn, {item.device_id for item in items})
        samples: list[SampleItem] = []
        accepted: list[IngestItem] = []
        for item in items:
            device = devices.get(item.device_id)
            if device is None:
                if not isinstance(item, RejectedItem):
                    result.unregistered += 1
            elif device.revoked_at is not None or isinstance(item, RejectedItem):
                # A revoked device is refused everything, births included; the
                # refusal is counted on the device like any other rejection.
                if not isinstance(item, RejectedItem):
                    result.revoked += 1
                device.telemetry_rejected += 1
                device.dirty = True
            else:
                accepted.append(item)
                if isinstance(item, SampleItem):
                    samples.append(item)
        items = accepted
        if not postgres:
            inserted = self._insert_samples(conn, samples)
            alert_devices = sorted(
                {i.device_id for i in items if isinstance(i, SampleItem | EventItem)}
                & devices.keys()
            )
            open_ids = self._load_open_alerts(conn, alert_devices)
        open_keys = {device_id: set(keys) for device_id, keys in open_ids.items()}
        opened: list[dict[str, Any]] = []
        cleared: dict[int, datetime] = {}
        events: list[dict[str, Any]] = []
        new_samples: dict[str, list[NewSample]] = {}
        newest: dict[str, SampleItem] = {}

        def open_alert(device_id: str, key: AlertKey, details: AlertDetails, at: datetime) -> None:
            opened.append(
                {
                    "device_id": device_id,
                    "source": key.source,
                    "code": key.code,
                    "metric": key.metric,
                    "severity": details.severity,
                    "message": details.message[:1024],
                    "raised_at": at,
                    "cleared_at": None,
                    "open": True,
                }
            )

        def clear_alert(device_id: str, key: AlertKey, at: datetime) -> None:
            alert_id = open_ids[device_id].pop(key, None)
            if alert_id is not None:
                cleared[alert_id] = at
                return
            # Opened earlier in this same batch: close the pending row.
            for row in reversed(opened):
                if row["device_id"] == device_id and row["open"] and _key_of(row) == key:
                    row["open"], row["cleared_at"] = False, at
                    return

        def apply_alerts(device_id: str, plan: AlertPlan, at: datetime) -> None:
            for key in plan.to_clear:
                clear_alert(device_id, key, at)
            for key, details in plan.to_open.items():
                open_alert(device_id, key, details, at)
            open_keys[device_id] = apply_plan(open_keys[device_id], plan)

        def record(
            device_id: str, kind: str, ts: datetime, at: datetime, body: dict[str, Any]
        ) -> None:
            events.append(
                {"device_id": device_id, "type": kind, "ts": ts, "received_at": at, "body": body}
            )

        def change_status(device: _DeviceRow, status: OnlineStatus, at: datetime) -> None:
            device.set_status(status)
            kind = "online" if status.online else "offline"
            record(device.id, kind, status.changed_at or at, at, {"reason": status.reason})

        pending_plans: dict[str, SampleItem] = {}

        def flush_plan(device: _DeviceRow) -> None:
            """Apply the alerts of the device's newest sample so far (before an event)."""
            item = pending_plans.pop(device.id, None)
            if item is None:
                return
            sample = item.sample
            open_now = open_keys[device.id]
            checks = self._checks_for(sample)
            if not open_now and not sample.faults:
                # Nothing to clear, no fault to open: only a violated rule matters.
                values = sample.metrics
                if all(rule_violation(c.rule, values[c.metric]) is None for c in checks):
                    return
            at = _alert_time(sample.ts, device.clock_offset_s, item.received_at)
            plan = plan_for_checks(open_now, sample.faults, sample.metrics, checks)
            apply_alerts(device.id, plan, at)

        for item in items:
            device = devices[item.device_id]
            if isinstance(item, CommandResultItem):
                result.command_results.append((device.id, item.result))
            elif isinstance(item, SampleItem):
                sample = item.sample
                device.seen(item.received_at)
                key = (item.device_id, sample.boot_id, sample.seq)
                if key not in inserted:
                    result.duplicates += 1
                    continue
                inserted.discard(key)
                result.stored += 1
                if item.ts_untrusted:
                    result.ts_untrusted += 1
                result.outbox_dropped += sample.outbox_dropped
                result.stored_sent_times.append((sample.sent_at or item.received_at).timestamp())
                device.telemetry_received += 1
                device.dirty = True
                new_samples.setdefault(device.id, []).append(
                    NewSample(sample.boot_id, sample.seq, sample.ts)
                )
                if sample.sent_at is not None:
                    offset = self.clock.observe(device.id, sample.sent_at, item.received_at)
                    device.clock_offset_s = round(offset, 3)
                    device.clock_skewed = is_skewed(offset, self.settings.clock_skew_max_s)
                if not device.online and device.online_reason in (None, SILENT):
                    change_status(
                        device,
                        OnlineStatus(True, "online", item.received_at, device.boot_id),
                        item.received_at,
                    )
                latest = newest.get(device.id)
                latest_ts = latest.sample.ts if latest else self._trusted(device.health_ts)
                if latest_ts is None or sample.ts > latest_ts:
                    newest[device.id] = item
                    pending_plans[device.id] = item
                    flush_plan(device)
            elif isinstance(item, StateItem):
                flush_plan(device)
                result.states += 1
                state = item.state
                if not item.retained and state.online:
                    device.seen(item.received_at)
                if (
                    state.online
                    and state.agent_version
                    and state.agent_version != device.agent_version
                ):
                    device.agent_version = state.agent_version[:64]
                    device.dirty = True
                status = next_status(
                    device.status_now(),
                    state,
                    retained=item.retained,
                    received_at=item.received_at,
                    clock_offset_s=device.clock_offset_s,
                )
                if status is None:
                    if item.retained:
                        result.stale_states += 1
                    continue
                if item.retained and status.online and status.changed_at:
                    device.seen(status.changed_at)
                change_status(device, status, item.received_at)
            elif isinstance(item, EventItem):
                flush_plan(device)
                result.events += 1
                event = item.event
                device.seen(item.received_at)
                record(device.id, event.type, event.ts, item.received_at, dict(event.body))
                if event.type.startswith(SESSION_EVENT_PREFIX):
                    result.session_events.append((device.id, event))
                at = _alert_time(event.ts, device.clock_offset_s, item.received_at)
                fault = _event_fault(event)
                fault_key = AlertKey("device", fault.code) if fault is not None else None
                if fault is not None and fault_key is not None:
                    is_open = fault_key in open_keys[device.id]
                    if event.type == FAULT_RAISED and not is_open:
                        details = AlertDetails(fault.severity, fault.message)
                        apply_alerts(device.id, AlertPlan(to_open={fault_key: details}), at)
                    elif event.type == FAULT_CLEARED and is_open:
                        apply_alerts(device.id, AlertPlan(to_clear={fault_key}), at)

        for device_id in list(pending_plans):
            flush_plan(devices[device_id])
        for device_id, fresh in new_samples.items():
            device = devices[device_id]
            outcome = account_samples(
                SequenceMark(device.boot_id, device.last_seq, self._trusted(device.health_ts)),
                fresh,
            )
            device.boot_id, device.last_seq = outcome.mark.boot_id, outcome.mark.last_seq
            device.telemetry_missing = max(0, device.telemetry_missing + outcome.missing_delta)
            result.missing_delta += outcome.missing_delta
            result.late += outcome.late
            result.seq_resets += outcome.resets
            if device.telemetry_missing > 0:
                result.gap_devices.append((device_id, device.telemetry_missing))
        for device_id, item in newest.items():
            device = devices[device_id]
            device.status = item.sample.status
            device.health = dict(item.sample.metrics)
            device.health_ts = item.sample.ts

        if opened:
            conn.execute(sa.insert(ALERT), opened)
        if cleared:
            conn.execute(
                sa.update(ALERT)
                .where(ALERT.c.id == sa.bindparam("alert_id"))
                .values(open=False, cleared_at=sa.bindparam("at")),
                [{"alert_id": k, "at": v} for k, v in cleared.items()],
            )
        if events:
            conn.execute(sa.insert(EVENT), events)
        dirty = [d for d in devices.values() if d.dirty]
        if postgres:
            self._update_devices_postgres(conn, dirty, set(newest))
        else:
            self._update_devices(conn, dirty, set(newest))
        return result


def _sqlite_driver(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy one."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)  # noqa: S101  (the engine's driver)
    return driver


def _pg_samples_json(samples: Sequence[SampleItem]) -> str:
    """The samples as one JSON array of rows, for ``PG_INSERT_SAMPLES_SQL``."""
    rows = [
        {
            "device_id": item.device_id,
            "boot_id": item.sample.boot_id,
            "seq": item.sample.seq,
            "ts": item.sample.ts,
            "received_at": item.received_at,
            "status": item.sample.status,
            # Metric values are finite (validated), so this is plain JSON.
            "metrics": item.sample.metrics,
            "faults": [f.model_dump() for f in item.sample.faults],
            "ts_untrusted": item.ts_untrusted,
        }
        for item in samples
    ]
    return pydantic_core.to_json(rows).decode()


_PG_UPDATE_SQL: dict[tuple[str, ...], str] = {}


def _pg_update_sql(columns: Sequence[str]) -> str:
    """``UPDATE device ... FROM jsonb_to_recordset``: health columns only where ``with_health``."""
    key = tuple(columns)
    sql = _PG_UPDATE_SQL.get(key)
    if sql is None:
        record = ", ".join(f"{name} {_PG_TYPES[name]}" for name in columns)
        assignments = ", ".join(
            f"{name} = CASE WHEN v.with_health THEN v.{name} ELSE device.{name} END"
            if name in _HEALTH_COLUMNS
            else f"{name} = v.{name}"
            for name in columns
            if name != "id"
        )
        sql = (  # only column names and array types are joined in; values are bound
            f"UPDATE device SET {assignments} FROM jsonb_to_recordset(%s::jsonb) "  # noqa: S608
            f"AS v({record}, with_health boolean) WHERE device.id = v.id"
        )
        _PG_UPDATE_SQL[key] = sql
    return sql


def _aware_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


_NO_OFFSET = timedelta(0)


def _sqlite_utc(value: datetime) -> str:
    """A timestamp as SQLAlchemy stores ``UTCDateTime`` on SQLite (naive UTC text).

    ``YYYY-MM-DD HH:MM:SS.ffffff``, as ``strftime("%Y-%m-%d %H:%M:%S.%f")`` but faster.
    """
    if value.utcoffset() == _NO_OFFSET:  # already UTC: cut off the "+00:00"
        return value.isoformat(" ", "microseconds")[:26]
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _read_utc(value: datetime | str | None) -> datetime | None:
    """A timestamp as the driver returns it (SQLite: naive UTC text) made aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _key_of(row: dict[str, Any]) -> AlertKey:
    return AlertKey(row["source"], row["code"], row["metric"])


def _alert_time(ts: datetime, clock_offset_s: float | None, received_at: datetime) -> datetime:
    """When an alert happened, on the server's clock, never after we learned of it."""
    corrected = server_time(ts, clock_offset_s)
    assert corrected is not None  # noqa: S101  (ts is never None here)
    return min(corrected, received_at)


def _event_fault(event: DeviceEvent) -> Fault | None:
    """The fault a ``fault.raised`` / ``fault.cleared`` event names, if its body is valid."""
    if event.type not in (FAULT_RAISED, FAULT_CLEARED):
        return None
    try:
        return Fault.model_validate(event.body)
    except ValueError:
        logger.info("device %s sent %s without a valid fault body", event.device_id, event.type)
        return None
