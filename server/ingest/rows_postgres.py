"""PostgreSQL: the ingest's hand-written statements, pipelined on the psycopg connection.

A batch costs two round trips: one pipeline locks the batch's device rows
(``FOR UPDATE``, in id order), reads their open alerts and inserts the samples
of the registered, unrevoked ones; after the rules ran, one ``UPDATE ... FROM
jsonb_to_recordset`` and the ``COMMIT`` go in a second. Lists go as one JSON
document (serialized in C by pydantic-core, parsed in C by PostgreSQL) into
fixed statement texts, which psycopg prepares once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
import pydantic_core
from sqlalchemy.engine import Connection

from server.ingest.alerts import AlertKey
from server.ingest.device_row import (
    HEALTH_COLUMNS,
    ROW_COLUMNS,
    UPDATE_COLUMNS,
    DeviceRow,
    OpenAlerts,
    SampleKey,
)
from server.ingest.items import IngestItem, SampleItem

OPEN_ALERTS_SQL = (
    "SELECT id, device_id, source, code, metric FROM alert "
    "WHERE open AND device_id = ANY(%b::text[])"
)
#: Only for registered, unrevoked devices bound to the gateway a sample came through
#: (:mod:`server.ingest.via`; their rows are locked by this transaction already).
INSERT_SAMPLES_SQL = (
    "INSERT INTO telemetry_sample (device_id, boot_id, seq, ts, received_at, status, metrics, "
    "faults, ts_untrusted) SELECT v.device_id, v.boot_id, v.seq, v.ts, v.received_at, v.status, "
    "v.metrics, v.faults, v.ts_untrusted FROM jsonb_to_recordset(%s::jsonb) AS v(device_id text, "
    "boot_id text, seq bigint, ts timestamptz, received_at timestamptz, status text, "
    "metrics jsonb, faults jsonb, ts_untrusted boolean, via text) "
    "JOIN device ON device.id = v.device_id "
    "AND device.revoked_at IS NULL AND device.via IS NOT DISTINCT FROM v.via "
    "ON CONFLICT (device_id, boot_id, seq) DO NOTHING RETURNING device_id, boot_id, seq"
)
#: Only the known column names are joined in (as in every statement text here).
DEVICE_SELECT_SQL = (
    f"SELECT {', '.join(ROW_COLUMNS)} FROM device "  # noqa: S608
    "WHERE id = ANY(%b::text[]) ORDER BY id FOR UPDATE"
)
#: PostgreSQL type of each column the ingest writes back to ``device``.
DEVICE_TYPES = {
    "id": "text",
    "boot_id": "text",
    "last_seq": "bigint",
    "last_seen": "timestamptz",
    "online": "boolean",
    "online_reason": "text",
    "online_changed_at": "timestamptz",
    "agent_version": "text",
    "capabilities": "text",
    "clock_offset_s": "float8",
    "clock_skewed": "boolean",
    "telemetry_received": "bigint",
    "telemetry_missing": "bigint",
    "telemetry_rejected": "bigint",
    "status": "text",
    "health_ts": "timestamptz",
    "health": "jsonb",
}
#: Every column :func:`update_devices` writes, in its record's order.
UPDATE_RECORD_COLUMNS = ["id", *UPDATE_COLUMNS, *HEALTH_COLUMNS]

_UPDATE_SQL: dict[tuple[str, ...], str] = {}


def _pg(conn: Connection) -> psycopg.Connection[Any]:
    pg = conn.connection.driver_connection
    assert isinstance(pg, psycopg.Connection)  # noqa: S101  (the engine's driver)
    return pg


def samples_json(samples: Sequence[SampleItem]) -> str:
    """The samples as one JSON array of rows, for :data:`INSERT_SAMPLES_SQL`."""
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
            "via": item.via,
        }
        for item in samples
    ]
    return pydantic_core.to_json(rows).decode()


def update_sql(columns: Sequence[str]) -> str:
    """``UPDATE device ... FROM jsonb_to_recordset``: health columns only where ``with_health``."""
    key = tuple(columns)
    sql = _UPDATE_SQL.get(key)
    if sql is None:
        record = ", ".join(f"{name} {DEVICE_TYPES[name]}" for name in columns)
        assignments = ", ".join(
            f"{name} = CASE WHEN v.with_health THEN v.{name} ELSE device.{name} END"
            if name in HEALTH_COLUMNS
            else f"{name} = v.{name}"
            for name in columns
            if name != "id"
        )
        sql = (  # only column names and array types are joined in; values are bound
            f"UPDATE device SET {assignments} FROM jsonb_to_recordset(%s::jsonb) "  # noqa: S608
            f"AS v({record}, with_health boolean) WHERE device.id = v.id"
        )
        _UPDATE_SQL[key] = sql
    return sql


def read(
    conn: Connection, items: Sequence[IngestItem]
) -> tuple[dict[str, DeviceRow], OpenAlerts, set[SampleKey]]:
    """In one round trip (a pipeline): lock the batch's device rows, read their open
    alerts, and insert the samples of the registered, unrevoked ones.

    Returns the device rows, their open alerts, and the keys of the samples
    actually inserted (a duplicate is skipped by ``ON CONFLICT DO NOTHING``).
    """
    ids = sorted({item.device_id for item in items})
    samples = [item for item in items if isinstance(item, SampleItem)]
    pg = _pg(conn)
    with pg.pipeline():
        device_cursor = pg.execute(DEVICE_SELECT_SQL, (ids,))
        alert_cursor = pg.execute(OPEN_ALERTS_SQL, (ids,))
        insert_cursor = (
            pg.execute(INSERT_SAMPLES_SQL, (samples_json(samples),)) if samples else None
        )
    devices: dict[str, DeviceRow] = {}
    for raw in device_cursor.fetchall():
        row = DeviceRow.from_values(raw)
        devices[row.id] = row
    open_ids: OpenAlerts = {device_id: {} for device_id in ids}
    for alert_id, device_id, source, code, metric in alert_cursor.fetchall():
        open_ids[device_id][AlertKey(source, code, metric)] = alert_id
    inserted: set[SampleKey] = set()
    if insert_cursor is not None:
        inserted.update((row[0], row[1], row[2]) for row in insert_cursor.fetchall())
    return devices, open_ids, inserted


def update_devices_and_commit(
    conn: Connection, dirty: list[DeviceRow], with_health: set[str]
) -> None:
    """Write the changed device rows back in ONE ``UPDATE ... FROM jsonb_to_recordset``,
    and commit (nothing to do without changed rows)."""
    if not dirty:
        return
    columns = UPDATE_RECORD_COLUMNS
    rows: list[dict[str, Any]] = []
    for device in dirty:
        row = {name: getattr(device, name) for name in columns}
        row["with_health"] = health = device.id in with_health
        if not health:
            row["health"] = None
        rows.append(row)
    document = pydantic_core.to_json(rows).decode()
    pg = _pg(conn)
    # The update and the commit in one round trip; SQLAlchemy's commit that
    # follows finds no transaction open and sends nothing.
    with pg.pipeline():
        pg.execute(update_sql(columns), (document,))
        pg.commit()
