"""The KPIs of docs/kpis.md, computed with SQL aggregates in the database.

One statement answers a window ``[start, end)``:

1. the shared baseline: per device type, the median ttr of the dispatches
   closed in the window, or the configured fallback below
   ``baseline_min_samples``;
2. sums per group, device type and resolution (a few hundred rows): counts,
   ttr and answer-time sums, downtime saved against the baseline;
3. per group: those sums added up, and the dispatch costs.

SQLite materializes C (the incidents closed in the window, one narrow row
each) and picks the median's middle rows with ``row_number``/``count``
windows; PostgreSQL takes ``percentile_cont(0.5)`` per device type from an
indexed read of the dispatches, then sums the window in one parallel hashed
scan (see ``_partial_postgresql``).

Means and rates are formed from those sums and counts in Python
(:mod:`server.kpi.report`), so the total is the exact sum of the groups; only
one row per group leaves the database.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlmodel import Session

from server.kpi.calls import CALL_TABLE as CALL_TABLE
from server.kpi.calls import call_figures_by_group
from server.kpi.config import KpiSettings
from server.kpi.groups import checked_window, group_keys
from server.kpi.report import (
    GROUP_BYS,
    CallFigures,
    KpiFigures,
    KpiGroup,
    KpiReport,
    KpiSums,
    figures,
    months_of,
)
from server.kpi.sql import hours_between, month_key, seconds_between
from server.models import DEVICE_TYPES, Device, Incident
from server.scope import EVERYTHING, Scope

logger = logging.getLogger(__name__)

INCIDENT_TABLE: sa.Table = Incident.__table__  # type: ignore[attr-defined]
DEVICE_TABLE: sa.Table = Device.__table__  # type: ignore[attr-defined]
_T = INCIDENT_TABLE.c


def _in_window(start: datetime, end: datetime, scope: Scope) -> sa.ColumnElement[bool]:
    return sa.and_(_T.closed_at >= start, _T.closed_at < end, scope.where_device(_T.device_id))


def _closed_in_window(start: datetime, end: datetime, group_by: str, scope: Scope) -> sa.CTE:
    """SQLite: C, one narrow row per incident, materialized and read twice.

    Once for the dispatch median, once for the sums; SQLite is faster reading
    it materialized than scanning the table twice.
    """
    source: Any = INCIDENT_TABLE
    if group_by == "month":
        key: sa.ColumnElement[Any] = month_key(_T.closed_at)
    elif group_by == "device_type":
        key = _T.device_type
    elif group_by == "region":
        device = DEVICE_TABLE.c
        source = source.join(DEVICE_TABLE, device.id == _T.device_id)
        key = device.region
    else:
        key = sa.null()
    answered = sa.case((_T.answered_at.is_not(None), seconds_between(_T.answered_at, _T.opened_at)))
    return (
        sa.select(
            key.label("group_key"),
            _T.device_type.label("device_type"),
            _T.resolution.label("resolution"),
            sa.case((_T.remote_session_used.is_(True), 1), else_=0).label("used"),
            sa.case((_T.channel == "alert", 1), else_=0).label("alerted"),
            hours_between(_T.restored_at, _T.down_at).label("ttr"),
            answered.label("asa"),
        )
        .select_from(source)
        .where(_in_window(start, end, scope))
        .cte("closed")
        .prefix_with("MATERIALIZED")
    )


def _measured(closed: sa.CTE) -> sa.Subquery:
    """SQLite: per device type, the median ttr of the dispatches in C, and how many there are.

    The median is the middle value (odd count) or the mean of the middle two
    (even count): ``row_number`` and ``count`` windows pick the middle rows.
    """
    dispatches = sa.and_(closed.c.resolution == "dispatch", closed.c.ttr.is_not(None))
    ranked = (
        sa.select(
            closed.c.device_type,
            closed.c.ttr,
            sa.func.row_number()
            .over(partition_by=closed.c.device_type, order_by=closed.c.ttr)
            .label("rn"),
            sa.func.count().over(partition_by=closed.c.device_type).label("n"),
        )
        .where(dispatches)
        .subquery("ranked")
    )
    middle = sa.or_(ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.rn == (ranked.c.n + 2) // 2)
    return (
        sa.select(
            ranked.c.device_type,
            sa.func.avg(ranked.c.ttr).label("median"),
            sa.func.max(ranked.c.n).label("n"),
        )
        .where(middle)
        .group_by(ranked.c.device_type)
        .subquery("measured")
    )


def _baseline(closed: sa.CTE, settings: KpiSettings) -> sa.CTE:
    """SQLite: per device type: the baseline ttr used (measured or configured) and n."""
    measured = _measured(closed)
    configured = sa.union_all(
        *(
            sa.select(
                sa.literal(device_type, sa.String()).label("device_type"),
                sa.cast(
                    sa.bindparam(f"fallback_{device_type}", settings.fallback_hours(device_type)),
                    sa.Float(),
                ).label("fallback"),
            )
            for device_type in DEVICE_TYPES
        )
    ).subquery("configured")
    enough = measured.c.n >= sa.bindparam("min_samples", settings.baseline_min_samples)
    return (
        sa.select(
            configured.c.device_type,
            sa.case((enough, measured.c.median), else_=configured.c.fallback).label("hours"),
            sa.func.coalesce(measured.c.n, 0).label("n"),
        )
        .select_from(
            configured.outerjoin(measured, measured.c.device_type == configured.c.device_type)
        )
        .cte("baseline")
    )


def _partial_sqlite(
    start: datetime, end: datetime, group_by: str, settings: KpiSettings, scope: Scope
) -> tuple[sa.Subquery, dict[str, Any], dict[str, Any]]:
    """SQLite: C materialized once, its dispatch median, then sums per key, type, resolution."""
    closed = _closed_in_window(start, end, group_by, scope)
    baseline = _baseline(closed, settings)
    zero = sa.literal(0.0, sa.Float())

    def of_type(name: str) -> dict[str, Any]:
        return {
            device_type: sa.select(baseline.c[name])
            .where(baseline.c.device_type == device_type)
            .scalar_subquery()
            for device_type in DEVICE_TYPES
        }

    hours, samples = of_type("hours"), of_type("n")
    baseline_hours = sa.case(
        *((closed.c.device_type == t, hours[t]) for t in DEVICE_TYPES), else_=zero
    )
    ttr = closed.c.ttr
    saved = sa.case(
        (sa.and_(closed.c.resolution == "remote", baseline_hours > ttr), baseline_hours - ttr),
        else_=zero,
    )
    keys = [closed.c.device_type, closed.c.resolution]
    if group_by != "none":
        keys.insert(0, closed.c.group_key)
    partial = (
        sa.select(
            *keys,
            sa.func.count().label("n"),
            sa.func.sum(closed.c.used).label("used"),
            sa.func.sum(closed.c.alerted).label("alerted"),
            sa.func.sum(ttr).label("ttr_sum"),
            sa.func.count(ttr).label("ttr_n"),
            sa.func.sum(closed.c.asa).label("asa_sum"),
            sa.func.count(closed.c.asa).label("asa_n"),
            sa.func.sum(saved).label("saved"),
        )
        .group_by(*keys)
        .subquery("partial")
    )
    return partial, hours, samples


def _epoch(interval: Any) -> sa.ColumnElement[float]:
    """PostgreSQL: the seconds of an interval, as a double."""
    return sa.func.date_part("epoch", interval, type_=sa.Float())


def _partial_postgresql(
    start: datetime, end: datetime, group_by: str, settings: KpiSettings, scope: Scope
) -> tuple[sa.Subquery, dict[str, Any], dict[str, Any]]:
    """PostgreSQL: the dispatch medians, then one parallel hashed scan of the window.

    - The medians: one row, ``percentile_cont(0.5)`` per device type (a
      ``FILTER`` each, so no sort by type first), evaluated once before the
      scan (an init plan).
    - The scan sums per key, device type and resolution. Its planner cannot
      estimate how many months an expression on ``closed_at`` yields (it
      guesses one per row, and then sorts the window in workers, spilling to
      disk); joining the month index to ``generate_series`` over the window's
      months gives it a column with a known row count, so it hashes a few
      hundred groups in parallel workers.
    - Time to restore and answer times are summed as intervals (exact to the
      microsecond) and turned into seconds once per group; only the downtime
      saved needs each remote incident's ttr in hours, against its baseline.
    """
    in_window = _in_window(start, end, scope)
    dispatches = sa.and_(in_window, _T.resolution == "dispatch", _T.restored_at.is_not(None))
    ttr = hours_between(_T.restored_at, _T.down_at)
    of_type = _T.device_type
    measured = (
        sa.select(
            *(
                column
                for t in DEVICE_TYPES
                for column in (
                    sa.func.percentile_cont(0.5)
                    .within_group(ttr)
                    .filter(of_type == t)
                    .label(f"median_{t}"),
                    sa.func.count().filter(of_type == t).label(f"n_{t}"),
                )
            )
        )
        .where(dispatches)
        .cte("measured")
    )
    min_samples = sa.bindparam("min_samples", settings.baseline_min_samples, sa.Integer())
    hours = {
        t: sa.select(
            sa.case(
                (measured.c[f"n_{t}"] >= min_samples, measured.c[f"median_{t}"]),
                else_=sa.bindparam(f"fallback_{t}", settings.fallback_hours(t), sa.Float()),
            )
        ).scalar_subquery()
        for t in DEVICE_TYPES
    }
    samples = {t: sa.select(measured.c[f"n_{t}"]).scalar_subquery() for t in DEVICE_TYPES}
    zero = sa.literal(0.0, sa.Float())
    baseline_hours = sa.case(*((of_type == t, hours[t]) for t in DEVICE_TYPES), else_=zero)

    source: Any = INCIDENT_TABLE
    key: sa.ColumnElement[Any] | None
    if group_by == "month":
        starts = [_month_start(k) for k in months_of(start, end)[1:]]
        if starts:
            # The index of the month in the window: a binary search over the
            # month starts, far cheaper than formatting or truncating each time.
            index = sa.func.width_bucket(
                _T.closed_at,
                sa.literal(starts, postgresql.ARRAY(sa.DateTime(timezone=True))),
            )
            month = (
                sa.func.generate_series(0, len(starts)).table_valued("k").render_derived(name="m")
            )
            source = source.join(month, month.c.k == index)
            key = month.c.k
        else:
            key = sa.literal(0)
    elif group_by == "device_type":
        key = _T.device_type
    elif group_by == "region":
        device = DEVICE_TABLE.c
        source = source.join(DEVICE_TABLE, device.id == _T.device_id)
        key = device.region
    else:
        key = None
    keys: list[Any] = [_T.device_type, _T.resolution]
    if key is not None:
        keys.insert(0, key.label("group_key"))
    partial = (
        sa.select(
            *keys,
            sa.func.count().label("n"),
            sa.func.count().filter(_T.remote_session_used.is_(True)).label("used"),
            sa.func.count().filter(_T.channel == "alert").label("alerted"),
            (_epoch(sa.func.sum(_T.restored_at - _T.down_at)) / 3600.0).label("ttr_sum"),
            sa.func.count(_T.restored_at).label("ttr_n"),
            _epoch(sa.func.sum(_T.answered_at - _T.opened_at)).label("asa_sum"),
            sa.func.count(_T.answered_at).label("asa_n"),
            sa.func.sum(sa.func.greatest(baseline_hours - ttr, zero))
            .filter(_T.resolution == "remote")
            .label("saved"),
        )
        .select_from(source)
        .where(in_window)
        .group_by(*(k.element if isinstance(k, sa.Label) else k for k in keys))
        .subquery("partial")
    )
    return partial, hours, samples


def _report_query(
    start: datetime,
    end: datetime,
    group_by: str,
    settings: KpiSettings,
    dialect: str,
    scope: Scope = EVERYTHING,
) -> Any:
    """One statement: the shared baseline, then the sums per group.

    The incidents are first summed per group, device type and resolution
    (a few hundred rows at most), so that each incident costs a few
    additions; the figures of docs/kpis.md are then sums over those partial sums.
    """
    if dialect == "postgresql":
        partial, hours, samples = _partial_postgresql(start, end, group_by, settings, scope)
    else:
        partial, hours, samples = _partial_sqlite(start, end, group_by, settings, scope)
    zero = sa.literal(0.0, sa.Float())
    resolution = partial.c.resolution
    is_fault = sa.and_(resolution.is_not(None), resolution != "no_fault")
    cost = sa.case(
        *(
            (
                partial.c.device_type == t,
                sa.bindparam(f"cost_{t}", settings.cost_of_dispatch(t), sa.Float()),
            )
            for t in DEVICE_TYPES
        ),
        else_=zero,
    )

    def total(value: Any, condition: Any = None) -> Any:
        if condition is not None:
            value = sa.case((condition, value))
        return sa.func.coalesce(sa.func.sum(value), 0)

    group_key = partial.c.group_key if group_by != "none" else sa.null()
    query = sa.select(
        group_key.label("group_key"),
        total(partial.c.n).label("closed"),
        total(partial.c.used).label("remote_used"),
        total(partial.c.alerted).label("alerted"),
        total(partial.c.n, is_fault).label("fault"),
        total(partial.c.n, resolution == "remote").label("remote"),
        total(partial.c.n, resolution == "phone").label("phone"),
        total(partial.c.n, resolution == "dispatch").label("dispatch"),
        total(partial.c.ttr_sum, is_fault).label("ttr_sum"),
        total(partial.c.ttr_n, is_fault).label("ttr_n"),
        total(partial.c.ttr_sum, resolution == "remote").label("ttr_remote_sum"),
        total(partial.c.ttr_n, resolution == "remote").label("ttr_remote_n"),
        total(partial.c.ttr_sum, resolution == "dispatch").label("ttr_dispatch_sum"),
        total(partial.c.ttr_n, resolution == "dispatch").label("ttr_dispatch_n"),
        total(partial.c.asa_sum).label("asa_sum"),
        total(partial.c.asa_n).label("asa_n"),
        total(partial.c.saved).label("downtime_saved"),
        total(partial.c.n * cost, resolution == "remote").label("cost_saved"),
        # The baseline rides along on every row (three types, computed once).
        *(hours[t].label(f"hours_{t}") for t in DEVICE_TYPES),
        *(samples[t].label(f"n_{t}") for t in DEVICE_TYPES),
    )
    if group_by != "none":
        query = query.group_by(partial.c.group_key)
    return query


def _month_start(key: str) -> datetime:
    return datetime(int(key[:4]), int(key[5:7]), 1, tzinfo=UTC)


def _key_text(value: Any, months: list[str]) -> str | None:
    if isinstance(value, int) and months:
        return months[value]  # PostgreSQL's month index
    return None if value is None else str(value)


def compute_kpis(
    connection: Connection | Session,
    *,
    start: datetime,
    end: datetime,
    group_by: str = "none",
    settings: KpiSettings | None = None,
    scope: Scope = EVERYTHING,
) -> KpiReport:
    """The KPIs of the incidents closed in ``[start, end)``, grouped as asked.

    ``month`` lists every month the window touches and ``device_type`` every
    device type, with zero counts where nothing was closed; ``region`` lists
    the regions that have incidents (``None`` for devices without one).
    """
    connection, start, end = checked_window(
        connection, start=start, end=end, group_by=group_by, group_bys=GROUP_BYS
    )
    settings = settings or KpiSettings()
    sums: dict[str | None, KpiSums] = {}
    months = months_of(start, end) if group_by == "month" else []
    hours = {t: settings.fallback_hours(t) for t in DEVICE_TYPES}
    source: dict[str, Literal["measured", "configured"]] = dict.fromkeys(DEVICE_TYPES, "configured")
    for row in connection.execute(
        _report_query(start, end, group_by, settings, connection.dialect.name, scope)
    ).mappings():
        values: dict[str, Any] = {
            item.name: (float if item.type in (float, "float") else int)(row[item.name])
            for item in fields(KpiSums)
        }
        key = _key_text(row["group_key"], months) if group_by != "none" else None
        sums[key] = KpiSums(**values)
        for device_type in DEVICE_TYPES:
            if int(row[f"n_{device_type}"]) >= settings.baseline_min_samples:
                hours[device_type] = float(row[f"hours_{device_type}"])
                source[device_type] = "measured"
    total = KpiSums()
    for group in sums.values():
        total.add(group)
    calls, calls_of = call_figures_by_group(connection, start, end, group_by, scope)
    keys = group_keys(group_by, {*sums, *calls_of}, start, end)
    groups = [
        KpiGroup(key=k, calls=calls_of.get(k, CallFigures()), **figures(sums.get(k, KpiSums())))
        for k in keys
    ]
    return KpiReport(
        calls=calls,
        from_=start,
        to=end,
        group_by=group_by,
        baseline_ttr_hours=hours,
        baseline_source=source,
        total=KpiFigures(**figures(total)),
        groups=groups,
    )
