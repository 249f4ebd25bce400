"""The migrations produce exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import server.models  # noqa: F401  (registers every table)
from server.db import create_schema, make_engine
from server.models.knowledge import SEARCH_OBJECTS


def _not_search(name: str | None, _type: str, _parents: object) -> bool:
    """The full-text search objects are dialect-specific: only the migrations know them."""
    return name not in SEARCH_OBJECTS


def _differences(engine: sa.Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "render_as_batch": True, "include_name": _not_search},
        )
        return list(compare_metadata(context, SQLModel.metadata))


def test_migrations_match_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_migrations_are_idempotent(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        create_schema(engine)
        tables = set(sa.inspect(engine).get_table_names())
        assert set(SQLModel.metadata.tables) <= tables
    finally:
        engine.dispose()


def test_empty_database_differs_from_models(database_url: str) -> None:
    """The comparison itself can fail: an unmigrated database shows every table missing."""
    engine = make_engine(database_url)
    try:
        diffs = _differences(engine)
        added = {
            diff[1].name for diff in diffs if isinstance(diff, tuple) and diff[0] == "add_table"
        }
        assert added == set(SQLModel.metadata.tables)
    finally:
        engine.dispose()


@pytest.mark.parametrize("table", ["telemetry_sample", "device_event", "alert"])
def test_ingest_tables_exist_after_migration(database_url: str, table: str) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        assert table in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
