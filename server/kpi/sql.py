"""Time arithmetic the KPI queries need, compiled for SQLite and PostgreSQL.

SQLite keeps timestamps as ISO text (``julianday`` turns them into days, to
the millisecond);
PostgreSQL subtracts ``timestamptz`` values into an interval whose epoch is
seconds. Both answer double precision numbers.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement, FunctionElement


class _SecondsBetween(FunctionElement[float]):
    """``end - start`` in seconds (a double), ``NULL`` when either is ``NULL``."""

    type = sa.Float()
    name = "seconds_between"
    inherit_cache = True


class _MonthKey(FunctionElement[str]):
    """The UTC month of a timestamp as ``YYYY-MM``."""

    type = sa.String()
    name = "month_key"
    inherit_cache = True


@compiles(_SecondsBetween, "sqlite")
def _seconds_between_sqlite(element: _SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = list(element.clauses)
    # SQLite's date functions keep milliseconds; rounding there drops the
    # float noise of subtracting two Julian day numbers near 2.46 million.
    return (
        f"round((julianday({compiler.process(end, **kw)}) - "
        f"julianday({compiler.process(start, **kw)})) * 86400.0, 3)"
    )


@compiles(_SecondsBetween, "postgresql")
def _seconds_between_postgresql(element: _SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = list(element.clauses)
    # date_part answers a double; EXTRACT answers numeric (slow) since PostgreSQL 14.
    return f"date_part('epoch', {compiler.process(end, **kw)} - {compiler.process(start, **kw)})"


@compiles(_MonthKey, "sqlite")
def _month_key_sqlite(element: _MonthKey, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"strftime('%Y-%m', {compiler.process(value, **kw)})"


@compiles(_MonthKey, "postgresql")
def _month_key_postgresql(element: _MonthKey, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"to_char({compiler.process(value, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM')"


def seconds_between(end: ColumnElement[Any], start: ColumnElement[Any]) -> ColumnElement[float]:
    """SQL for ``end - start`` in seconds."""
    return _SecondsBetween(end, start)


def hours_between(end: ColumnElement[Any], start: ColumnElement[Any]) -> ColumnElement[float]:
    """SQL for ``end - start`` in hours."""
    return _SecondsBetween(end, start) / sa.literal(3600.0, sa.Float())


def month_key(value: ColumnElement[Any]) -> ColumnElement[str]:
    """SQL for the UTC month (``YYYY-MM``) of a timestamp."""
    return _MonthKey(value)
