"""Database engine, schema migrations and sessions (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Session

from shared.errors import ConfigError, UnavailableError

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while ingest writes; NORMAL is durable across
    # process crashes and fast enough for batched ingest.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # 64 MiB of page cache: index upkeep on million-row tables stays in memory.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create the engine for a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).

    Raises:
        ConfigError: when the URL is malformed or names an unsupported database.
    """
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        msg = f"database_url is not a SQLAlchemy URL: {exc}"
        raise ConfigError(msg) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 10})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    msg = f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://"
    raise ConfigError(msg)


def create_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration (Alembic ``upgrade head``).

    Raises:
        UnavailableError: when the database cannot be reached.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else "no answer"
        msg = f"cannot reach the database: {first_line}"
        raise UnavailableError(msg) from exc


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
