"""Writing a batch of validated messages to the database in one transaction.

This is blocking code: the ingest's writer thread runs it, one batch at a time.
:class:`IngestStore` keeps its own connection between batches, retries a batch
on a lock conflict, and runs the three steps of a batch in one transaction:
read the batch's device rows and open alerts and insert its samples (the
dialect's module: :mod:`~server.ingest.rows_sqlite`,
:mod:`~server.ingest.rows_postgres`), apply the rules
(:mod:`~server.ingest.apply`), write the alerts, history and device rows back.
A batch locks the rows of the devices it touches (``FOR UPDATE`` on PostgreSQL;
SQLite has one writer anyway), so several server processes sharing the fleet's
messages keep the per-device counters exact.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Sequence

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError

from server.config import ServerSettings
from server.ingest import rows_postgres, rows_sqlite, via
from server.ingest.apply import BatchChanges, BatchRules, ThresholdChecks, admit, alert_devices
from server.ingest.clock import ClockOffsetEstimator
from server.ingest.incidents import apply_fault_incidents
from server.ingest.items import BatchResult, IngestItem
from server.models import Alert
from server.models.telemetry import DeviceEventRecord
from server.notify.events import write_events

logger = logging.getLogger(__name__)

ALERT = Alert.__table__  # type: ignore[attr-defined]
EVENT = DeviceEventRecord.__table__  # type: ignore[attr-defined]
#: Times a batch is retried when the database reports a lock conflict or deadlock.
WRITE_ATTEMPTS = 5


def _retryable(exc: StatementError) -> bool:
    text = str(exc.orig).lower()
    return any(word in text for word in ("locked", "deadlock", "could not serialize", "busy"))


class IngestStore:
    """Applies batches of ingest items to the registry, telemetry, alerts and history."""

    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = ClockOffsetEstimator()
        self._checks = ThresholdChecks(settings)
        #: The store's own connection, kept between batches (no pool checkout and
        #: ping per batch); dropped on any error, reopened on the next.
        self._conn: Connection | None = None
        self._postgres = engine.dialect.name == "postgresql"
        self._driver_error: type[Exception] = psycopg.Error if self._postgres else sqlite3.Error
        self._sqlite = rows_sqlite.SqliteRows()
        #: SQLite: the ingest runs WAL checkpoints on a thread of their own (see
        #: :meth:`_connection`); set before the first batch.
        self.checkpoint_elsewhere = False

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
                        rows_sqlite.driver(conn).execute("BEGIN IMMEDIATE")
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
                rows_sqlite.driver(conn).execute("PRAGMA wal_autocheckpoint=0")
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
                    rows_sqlite.driver(conn).execute(
                        f"PRAGMA wal_autocheckpoint={rows_sqlite.AUTOCHECKPOINT_PAGES}"
                    )
            with contextlib.suppress(Exception):
                conn.close()

    def checkpoint(self, conn: Connection) -> tuple[int, int, int]:
        """SQLite: one passive WAL checkpoint on ``conn`` (:func:`rows_sqlite.checkpoint`)."""
        return rows_sqlite.checkpoint(conn)

    # -- the transaction --------------------------------------------------------------

    def _write(self, conn: Connection, items: Sequence[IngestItem]) -> BatchResult:
        result = BatchResult()
        postgres = self._postgres
        if postgres:
            devices, open_ids, inserted = rows_postgres.read(conn, items)
        else:
            devices = self._sqlite.load_devices(conn, {item.device_id for item in items})
        accepted, samples = admit(items, devices, result)
        if not postgres:
            inserted = self._sqlite.insert_samples(conn, samples)
            open_ids = self._sqlite.load_open_alerts(conn, alert_devices(accepted, devices))
        rules = BatchRules(
            self.settings,
            checks_for=self._checks,
            clock=self.clock,
            devices=devices,
            open_ids=open_ids,
            inserted=inserted,
            result=result,
        )
        changes = rules.apply(accepted)
        self._write_history(conn, changes)
        via.write_inventories(conn, changes.inventories)
        # For the notification worker: rows only when an alert or online state changed.
        write_events(conn, changes.notices)
        if result.gateways_offline:
            via.take_watched_offline(conn, result.gateways_offline, skip=set(devices), events=EVENT)
        if self.settings.kpi.alerts_open_incidents and (changes.opened or changes.cleared_faults):
            apply_fault_incidents(conn, changes.opened, changes.cleared_faults)
        if postgres:
            rows_postgres.update_devices_and_commit(conn, changes.dirty, changes.with_health)
        else:
            self._sqlite.update_devices(conn, changes.dirty, changes.with_health)
        return result

    @staticmethod
    def _write_history(conn: Connection, changes: BatchChanges) -> None:
        """The alerts opened and cleared, and the device events (both dialects)."""
        if changes.opened:
            conn.execute(sa.insert(ALERT), changes.opened)
        if changes.cleared:
            conn.execute(
                sa.update(ALERT)
                .where(ALERT.c.id == sa.bindparam("alert_id"))
                .values(open=False, cleared_at=sa.bindparam("at")),
                [{"alert_id": k, "at": v} for k, v in changes.cleared.items()],
            )
        if changes.events:
            conn.execute(sa.insert(EVENT), changes.events)
