"""Column types every table shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from typing_extensions import override


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone, PostgreSQL ``timestamptz`` does; both come back as
    aware UTC datetimes so that comparisons never mix naive and aware values.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    @override
    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            msg = "naive datetime given to a UTC column"
            raise ValueError(msg)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    @override
    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utc_column(*, nullable: bool = True, index: bool = False, **kwargs: Any) -> Any:
    """A :class:`UTCDateTime` column for a SQLModel field's ``sa_column``."""
    return sa.Column(UTCDateTime(), nullable=nullable, index=index, **kwargs)


# JSON on SQLite, JSONB on PostgreSQL.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
#: A 64-bit integer column (SQLite's INTEGER is 64-bit already; its name stays INTEGER).
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
