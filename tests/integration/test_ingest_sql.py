"""The ingest's hand-written SQL against the migrated tables (SQLite and PostgreSQL).

The hot path's statements (:mod:`server.ingest.rows_sqlite`,
:mod:`server.ingest.rows_postgres`) name their columns in text, out of reach of
the models and of mypy: a migration that renames, drops or retypes one must fail
here, not on the first batch in production. Each statement is checked twice: its
column lists against the migrated schema, and a real run of it on that schema
with nothing to write.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from server.ingest import rows_postgres, rows_sqlite
from server.ingest.device_row import HEALTH_COLUMNS, ROW_COLUMNS, UPDATE_COLUMNS

pytestmark = pytest.mark.integration

#: PostgreSQL's name (``format_type``) of each type a ``jsonb_to_recordset`` record uses.
PG_TYPE_NAMES = {
    "text": {"text", "character varying"},
    "bigint": {"bigint"},
    "timestamptz": {"timestamp with time zone"},
    "boolean": {"boolean"},
    "float8": {"double precision"},
    "jsonb": {"jsonb"},
}


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    """The migrated, empty database of ``db_engine`` (SQLite, then PostgreSQL)."""
    return db_engine


def _columns(engine: Engine, table: str) -> dict[str, str]:
    """The migrated table's columns and their types (PostgreSQL's names on PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    "WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 "
                    "AND NOT a.attisdropped"
                ),
                {"t": table},
            ).all()
        return {name: re.sub(r"\(.*\)", "", kind) for name, kind in rows}
    return {c["name"]: str(c["type"]) for c in sa.inspect(engine).get_columns(table)}


def _insert_columns(sql: str) -> tuple[str, list[str]]:
    match = re.search(r"INSERT INTO (\w+) \(([^)]*)\)", sql)
    assert match is not None, sql
    return match[1], [name.strip() for name in match[2].split(",")]


def _select_columns(sql: str) -> tuple[str, list[str]]:
    match = re.search(r"SELECT (.+?) FROM (\w+)", sql)
    assert match is not None, sql
    return match[2], [name.strip() for name in match[1].split(",")]


def _set_columns(sql: str) -> list[str]:
    assignments = re.search(r"UPDATE device SET (.+?) (?:FROM|WHERE)", sql)
    assert assignments is not None, sql
    return re.findall(r"(?:^|, )(\w+) = ", assignments[1])


def _record(sql: str) -> dict[str, str]:
    """The ``AS v(name type, ...)`` record of a ``jsonb_to_recordset``."""
    match = re.search(r"AS v\((.+?)\)(?: JOIN| WHERE)", sql)
    assert match is not None, sql
    pairs = (part.strip().split(" ", 1) for part in match[1].split(","))
    return {pair[0]: pair[1] for pair in pairs}


def test_the_sample_insert_names_the_migrated_columns(engine: Engine) -> None:
    columns = _columns(engine, "telemetry_sample")
    sql = (
        rows_postgres.INSERT_SAMPLES_SQL
        if engine.dialect.name == "postgresql"
        else rows_sqlite.INSERT_SAMPLES_SQL
    )
    table, inserted = _insert_columns(sql)
    assert table == "telemetry_sample"
    assert set(inserted) <= set(columns), set(inserted) - set(columns)
    # Every column without a default is written (a new NOT NULL column must be added here).
    required = {
        c["name"]
        for c in sa.inspect(engine).get_columns("telemetry_sample")
        if not c["nullable"] and c.get("default") is None and not c.get("autoincrement")
    }
    assert required - {"id"} <= set(inserted), required - set(inserted)
    returning = re.search(r"RETURNING (.+)$", sql)
    assert returning is not None
    assert [n.strip() for n in returning[1].split(",")] == ["device_id", "boot_id", "seq"]


def test_the_device_and_alert_reads_name_the_migrated_columns(engine: Engine) -> None:
    postgres = engine.dialect.name == "postgresql"
    rows = rows_postgres if postgres else rows_sqlite
    table, read = _select_columns(rows.DEVICE_SELECT_SQL)
    assert (table, read) == ("device", ROW_COLUMNS)
    assert set(read) <= set(_columns(engine, "device")), set(read) - set(_columns(engine, "device"))
    table, read = _select_columns(rows.OPEN_ALERTS_SQL)
    assert table == "alert"
    assert set(read) <= set(_columns(engine, "alert"))


def test_the_device_updates_name_the_migrated_columns(engine: Engine) -> None:
    device = _columns(engine, "device")
    if engine.dialect.name == "postgresql":
        sql = rows_postgres.update_sql(rows_postgres.UPDATE_RECORD_COLUMNS)
        assert _set_columns(sql) == UPDATE_COLUMNS + HEALTH_COLUMNS
        record = _record(sql)
        del record["with_health"]
        assert list(record) == rows_postgres.UPDATE_RECORD_COLUMNS
        # The record's types are the columns' own (no silent cast on the way in).
        wrong = {
            name: (kind, device.get(name))
            for name, kind in record.items()
            if device.get(name) not in PG_TYPE_NAMES[kind]
        }
        assert wrong == {}
        # ``via`` is compared with ``device.via`` (the gateway a sample came through).
        samples = {**_columns(engine, "telemetry_sample"), "via": device["via"]}
        record = _record(rows_postgres.INSERT_SAMPLES_SQL)
        wrong = {
            name: (kind, samples.get(name))
            for name, kind in record.items()
            if samples.get(name) not in PG_TYPE_NAMES[kind]
        }
        assert wrong == {}
    else:
        assert _set_columns(rows_sqlite.UPDATE_SQL) == UPDATE_COLUMNS
        assert _set_columns(rows_sqlite.UPDATE_WITH_HEALTH_SQL) == UPDATE_COLUMNS + HEALTH_COLUMNS
    assert set(UPDATE_COLUMNS + HEALTH_COLUMNS) <= set(device)


def test_every_statement_runs_on_the_migrated_schema(engine: Engine) -> None:
    """Prepared and run with nothing to write: an unknown column or type is an error here."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            pg = conn.connection.driver_connection
            assert pg is not None
            nobody = ["nobody"]
            assert pg.execute(rows_postgres.DEVICE_SELECT_SQL, (nobody,)).fetchall() == []
            assert pg.execute(rows_postgres.OPEN_ALERTS_SQL, (nobody,)).fetchall() == []
            assert pg.execute(rows_postgres.INSERT_SAMPLES_SQL, ("[]",)).fetchall() == []
            sql = rows_postgres.update_sql(rows_postgres.UPDATE_RECORD_COLUMNS)
            assert pg.execute(sql, ("[]",)).rowcount == 0
            pg.rollback()
        else:
            sqlite = rows_sqlite.driver(conn)
            assert sqlite.execute(rows_sqlite.DEVICE_SELECT_SQL, ('["nobody"]',)).fetchall() == []
            assert sqlite.execute(rows_sqlite.OPEN_ALERTS_SQL, ('["nobody"]',)).fetchall() == []
            assert sqlite.execute(rows_sqlite.INSERT_SAMPLES_SQL, ("[]",)).fetchall() == []
            for sql, width in (
                (rows_sqlite.UPDATE_SQL, len(UPDATE_COLUMNS)),
                (rows_sqlite.UPDATE_WITH_HEALTH_SQL, len(UPDATE_COLUMNS + HEALTH_COLUMNS)),
            ):
                assert sqlite.execute(sql, [None] * width + ["nobody"]).rowcount == 0
            sqlite.rollback()
