"""The KPIs of KPIS.md, computed with SQL aggregates in the database.

Two statements answer a window ``[start, end)``:

1. the measured baseline: per device type, the median ttr of the dispatches
   closed in the window (``row_number`` and ``count`` windows pick the middle
   one or two), with how many there were;
2. one grouped scan of the incidents closed in the window, summing counts,
   ttr sums, downtime saved against that shared baseline and dispatch costs.

Means and rates are formed from those sums and counts, so the total is the
exact sum of the groups, and nothing but one row per group reaches Python.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection
from sqlmodel import Session

from server.crud import InvalidInput
from server.kpi.config import KpiSettings
from server.kpi.sql import hours_between, month_key, seconds_between
from server.models import DEVICE_TYPES, Device, Incident

logger = logging.getLogger(__name__)

GroupBy = Literal["none", "month", "device_type", "region"]
GROUP_BYS: tuple[str, ...] = ("none", "month", "device_type", "region")

#: What each figure means, for the places that show them.
KPI_DEFINITIONS: dict[str, str] = {
    "incidents_closed": "incidents closed in the window (C)",
    "remote_usage_rate": "share of C where a remote session was used",
    "self_resolution_rate": "share of F (C without no_fault) resolved remotely or by phone",
    "remote_resolution_rate": "share of F resolved through a remote session",
    "dispatches": "incidents of F resolved by sending an engineer",
    "dispatches_avoided": "incidents of F resolved remotely",
    "mttr_hours": "mean time to restore (restored_at - down_at) over F, hours",
    "mttr_remote_hours": "mean time to restore of remote resolutions, hours",
    "mttr_dispatch_hours": "mean time to restore of dispatches, hours",
    "asa_seconds": "mean time from call to answer over answered incidents of C, seconds",
    "downtime_saved_hours": "sum over remote resolutions of max(0, baseline ttr - ttr), hours",
    "cost_saved": "sum over remote resolutions of the dispatch cost of the device type",
}

INCIDENT_TABLE: sa.Table = Incident.__table__  # type: ignore[attr-defined]
DEVICE_TABLE: sa.Table = Device.__table__  # type: ignore[attr-defined]
_T = INCIDENT_TABLE.c


class KpiFigures(BaseModel):
    """The figures of one group (or of the whole window); ``None`` where undefined."""

    incidents_closed: int
    remote_usage_rate: float | None
    self_resolution_rate: float | None
    remote_resolution_rate: float | None
    dispatches: int
    dispatches_avoided: int
    mttr_hours: float | None
    mttr_remote_hours: float | None
    mttr_dispatch_hours: float | None
    asa_seconds: float | None
    downtime_saved_hours: float
    cost_saved: float


class KpiGroup(KpiFigures):
    """The figures of one month, device type or region (``key``)."""

    key: str | None


class KpiReport(BaseModel):
    """The answer of ``GET /api/v1/kpis`` (KPIS.md "The answer")."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from")
    to: datetime
    group_by: GroupBy
    baseline_ttr_hours: dict[str, float]
    baseline_source: dict[str, Literal["measured", "configured"]]
    total: KpiFigures
    groups: list[KpiGroup]


@dataclass
class _Sums:
    """The additive aggregates of one group, as the scan answers them."""

    closed: int = 0
    remote_used: int = 0
    fault: int = 0
    remote: int = 0
    phone: int = 0
    dispatch: int = 0
    ttr_sum: float = 0.0
    ttr_n: int = 0
    ttr_remote_sum: float = 0.0
    ttr_remote_n: int = 0
    ttr_dispatch_sum: float = 0.0
    ttr_dispatch_n: int = 0
    asa_sum: float = 0.0
    asa_n: int = 0
    downtime_saved: float = 0.0
    cost_saved: float = 0.0

    def add(self, other: _Sums) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


def _ratio(numerator: float, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _figures(sums: _Sums) -> dict[str, Any]:
    return {
        "incidents_closed": sums.closed,
        "remote_usage_rate": _ratio(sums.remote_used, sums.closed),
        "self_resolution_rate": _ratio(sums.remote + sums.phone, sums.fault),
        "remote_resolution_rate": _ratio(sums.remote, sums.fault),
        "dispatches": sums.dispatch,
        "dispatches_avoided": sums.remote,
        "mttr_hours": _ratio(sums.ttr_sum, sums.ttr_n),
        "mttr_remote_hours": _ratio(sums.ttr_remote_sum, sums.ttr_remote_n),
        "mttr_dispatch_hours": _ratio(sums.ttr_dispatch_sum, sums.ttr_dispatch_n),
        "asa_seconds": _ratio(sums.asa_sum, sums.asa_n),
        "downtime_saved_hours": sums.downtime_saved,
        "cost_saved": sums.cost_saved,
    }


def _in_window(start: datetime, end: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(_T.closed_at >= start, _T.closed_at < end)


def _ttr() -> sa.ColumnElement[float]:
    return hours_between(_T.restored_at, _T.down_at)


def measured_baselines(
    connection: Connection, *, start: datetime, end: datetime
) -> dict[str, tuple[float, int]]:
    """Per device type: the median ttr (hours) of the dispatches closed in the window, and n."""
    ttr = _ttr()
    ranked = (
        sa.select(
            _T.device_type.label("device_type"),
            ttr.label("ttr"),
            sa.func.row_number().over(partition_by=_T.device_type, order_by=ttr).label("rn"),
            sa.func.count().over(partition_by=_T.device_type).label("n"),
        )
        .where(
            _in_window(start, end),
            _T.resolution == "dispatch",
            _T.restored_at.is_not(None),
        )
        .subquery("ranked")
    )
    middle = sa.or_(ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.rn == (ranked.c.n + 2) // 2)
    query = (
        sa.select(ranked.c.device_type, sa.func.avg(ranked.c.ttr), sa.func.max(ranked.c.n))
        .where(middle)
        .group_by(ranked.c.device_type)
    )
    return {
        str(device_type): (float(median), int(n))
        for device_type, median, n in connection.execute(query)
    }


def baselines(
    connection: Connection, *, start: datetime, end: datetime, settings: KpiSettings
) -> tuple[dict[str, float], dict[str, Literal["measured", "configured"]]]:
    """``baseline_ttr(t)`` of every device type and where it came from."""
    measured = measured_baselines(connection, start=start, end=end)
    hours: dict[str, float] = {}
    source: dict[str, Literal["measured", "configured"]] = {}
    for device_type in DEVICE_TYPES:
        median, n = measured.get(device_type, (0.0, 0))
        if n >= settings.baseline_min_samples:
            hours[device_type], source[device_type] = median, "measured"
        else:
            hours[device_type] = settings.fallback_hours(device_type)
            source[device_type] = "configured"
    return hours, source


def _per_type(values: dict[str, float], name: str) -> sa.ColumnElement[float]:
    whens = [
        (_T.device_type == device_type, sa.bindparam(f"{name}_{device_type}", value, sa.Float()))
        for device_type, value in values.items()
    ]
    return sa.case(*whens, else_=sa.literal(0.0, sa.Float()))


def _group_sums(
    connection: Connection,
    *,
    start: datetime,
    end: datetime,
    group_by: str,
    baseline: dict[str, float],
    cost: dict[str, float],
) -> dict[str | None, _Sums]:
    ttr = _ttr()
    resolution = _T.resolution
    is_fault = sa.and_(resolution.is_not(None), resolution != "no_fault")
    is_remote = resolution == "remote"
    is_dispatch = resolution == "dispatch"
    baseline_ttr = _per_type(baseline, "baseline")
    zero = sa.literal(0.0, sa.Float())

    def count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    def sum_if(
        condition: sa.ColumnElement[bool], value: sa.ColumnElement[float]
    ) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, value), else_=zero)), zero)

    def when(condition: sa.ColumnElement[bool], value: sa.ColumnElement[float]) -> Any:
        return sa.case((condition, value))

    answered = _T.answered_at.is_not(None)
    asa = seconds_between(_T.answered_at, _T.opened_at)
    columns: list[Any] = [
        sa.func.count().label("closed"),
        count_if(_T.remote_session_used.is_(True)).label("remote_used"),
        count_if(is_fault).label("fault"),
        count_if(is_remote).label("remote"),
        count_if(resolution == "phone").label("phone"),
        count_if(is_dispatch).label("dispatch"),
        sa.func.coalesce(sa.func.sum(when(is_fault, ttr)), zero).label("ttr_sum"),
        sa.func.count(when(is_fault, ttr)).label("ttr_n"),
        sa.func.coalesce(sa.func.sum(when(is_remote, ttr)), zero).label("ttr_remote_sum"),
        sa.func.count(when(is_remote, ttr)).label("ttr_remote_n"),
        sa.func.coalesce(sa.func.sum(when(is_dispatch, ttr)), zero).label("ttr_dispatch_sum"),
        sa.func.count(when(is_dispatch, ttr)).label("ttr_dispatch_n"),
        sa.func.coalesce(sa.func.sum(when(answered, asa)), zero).label("asa_sum"),
        sa.func.count(_T.answered_at).label("asa_n"),
        sum_if(sa.and_(is_remote, baseline_ttr > ttr), baseline_ttr - ttr).label("downtime_saved"),
        sum_if(is_remote, _per_type(cost, "cost")).label("cost_saved"),
    ]
    source: Any = INCIDENT_TABLE
    key: sa.ColumnElement[Any] | None
    if group_by == "month":
        key = month_key(_T.closed_at)
    elif group_by == "device_type":
        key = _T.device_type
    elif group_by == "region":
        device = DEVICE_TABLE.c
        source = source.join(DEVICE_TABLE, device.id == _T.device_id)
        key = device.region
    else:
        key = None
    query = sa.select(*columns).select_from(source).where(_in_window(start, end))
    if key is not None:
        query = query.add_columns(key.label("group_key")).group_by(key)
    result: dict[str | None, _Sums] = {}
    for row in connection.execute(query).mappings():
        values: dict[str, Any] = {
            item.name: (float if item.type in (float, "float") else int)(row[item.name])
            for item in fields(_Sums)
        }
        sums = _Sums(**values)
        result[row["group_key"] if key is not None else None] = sums
    return result


def _months(start: datetime, end: datetime) -> list[str]:
    keys: list[str] = []
    year, month = start.year, start.month
    while datetime(year, month, 1, tzinfo=UTC) < end:
        keys.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return keys


def default_window(now: datetime) -> tuple[datetime, datetime]:
    """The last twelve months up to the end of the current one (UTC)."""
    now = now.astimezone(UTC)
    end_year, end_month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    start_index = end_year * 12 + end_month - 1 - 12
    start = datetime(start_index // 12, start_index % 12 + 1, 1, tzinfo=UTC)
    return start, datetime(end_year, end_month, 1, tzinfo=UTC)


def month_window(now: datetime) -> tuple[datetime, datetime]:
    """The current month (UTC) as ``[start, end)``."""
    now = now.astimezone(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end_year, end_month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return start, datetime(end_year, end_month, 1, tzinfo=UTC)


def compute_kpis(
    connection: Connection | Session,
    *,
    start: datetime,
    end: datetime,
    group_by: str = "none",
    settings: KpiSettings | None = None,
) -> KpiReport:
    """The KPIs of the incidents closed in ``[start, end)``, grouped as asked.

    ``month`` lists every month the window touches and ``device_type`` every
    device type, with zero counts where nothing was closed; ``region`` lists
    the regions that have incidents (``None`` for devices without one).
    """
    if group_by not in GROUP_BYS:
        msg = f"group_by must be one of {', '.join(GROUP_BYS)}"
        raise InvalidInput(msg)
    if start >= end:
        msg = "from must be before to"
        raise InvalidInput(msg)
    if isinstance(connection, Session):
        connection = connection.connection()
    settings = settings or KpiSettings()
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    hours, source = baselines(connection, start=start, end=end, settings=settings)
    cost = {t: settings.cost_of_dispatch(t) for t in DEVICE_TYPES}
    sums = _group_sums(
        connection, start=start, end=end, group_by=group_by, baseline=hours, cost=cost
    )
    total = _Sums()
    for group in sums.values():
        total.add(group)
    keys: list[str | None]
    if group_by == "none":
        keys = []
    elif group_by == "month":
        keys = [*_months(start, end)]
        keys += sorted(k for k in sums if k is not None and k not in keys)
    elif group_by == "device_type":
        keys = [*DEVICE_TYPES, *sorted(k for k in sums if k is not None and k not in DEVICE_TYPES)]
    else:
        keys = sorted(sums, key=lambda k: (k is None, k or ""))
    groups = [KpiGroup(key=k, **_figures(sums.get(k, _Sums()))) for k in keys]
    return KpiReport(
        from_=start,
        to=end,
        group_by=group_by,
        baseline_ttr_hours=hours,
        baseline_source=source,
        total=KpiFigures(**_figures(total)),
        groups=groups,
    )
