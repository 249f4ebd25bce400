"""ASA from the recorded calls (docs/kpis.md "ASA from recorded calls"), per group.

The calls are the phone system's (``phone_call``: the screen-pop and ``POST
/api/v1/calls``), not incidents: a call counts in the window it *started* in.
One grouped statement answers the window; the total is the sum of its rows.

A call's group is the month it started in (UTC), its device's type, or its
device's region (else its customer's). A call with no device is in no device
type's group, only in the total; a call with neither region is in the region
group ``None``, like the incidents of devices without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.kpi.report import CallFigures
from server.kpi.sql import month_key, seconds_between
from server.models import Call, Customer, Device
from server.scope import EVERYTHING, Scope

CALL_TABLE: sa.Table = Call.__table__  # type: ignore[attr-defined]
_DEVICE: sa.Table = Device.__table__  # type: ignore[attr-defined]
_CUSTOMER: sa.Table = Customer.__table__  # type: ignore[attr-defined]


@dataclass
class _CallSums:
    calls: int = 0
    answered: int = 0
    linked: int = 0
    wait_sum: float = 0.0

    def add(self, other: _CallSums) -> None:
        self.calls += other.calls
        self.answered += other.answered
        self.linked += other.linked
        self.wait_sum += other.wait_sum

    def figures(self) -> CallFigures:
        return CallFigures(
            calls=self.calls,
            answered=self.answered,
            linked=self.linked,
            asa_seconds=self.wait_sum / self.answered if self.answered else None,
        )


def call_figures_by_group(
    connection: Connection,
    start: datetime,
    end: datetime,
    group_by: str,
    scope: Scope = EVERYTHING,
) -> tuple[CallFigures, dict[str | None, CallFigures]]:
    """The calls (in ``scope``) that started in ``[start, end)``: the total, and per group key.

    ASA is the mean of ``answered_at - started_at`` over the answered calls (not
    answered before they started: a bad clock).
    """
    calls = CALL_TABLE.c
    source: Any = CALL_TABLE
    if group_by == "month":
        key: sa.ColumnElement[Any] = month_key(calls.started_at)
    elif group_by == "device_type":
        source = source.outerjoin(_DEVICE, _DEVICE.c.id == calls.device_id)
        key = _DEVICE.c.type
    elif group_by == "region":
        source = source.outerjoin(_DEVICE, _DEVICE.c.id == calls.device_id).outerjoin(
            _CUSTOMER, _CUSTOMER.c.number == calls.customer_number
        )
        key = sa.func.coalesce(_DEVICE.c.region, _CUSTOMER.c.region)
    else:
        key = sa.null()
    answered = sa.and_(calls.answered_at.is_not(None), calls.answered_at >= calls.started_at)
    wait = seconds_between(calls.answered_at, calls.started_at)
    grouped = key.label("group_key")
    query = (
        sa.select(
            grouped,
            sa.func.count().label("calls"),
            sa.func.count(sa.case((answered, 1))).label("answered"),
            sa.func.count(calls.incident_id).label("linked"),
            sa.func.sum(sa.case((answered, wait))).label("wait_sum"),
        )
        .select_from(source)
        .where(
            calls.started_at >= start,
            calls.started_at < end,
            scope.where_call(calls.device_id, calls.customer_number),
        )
    )
    rows = connection.execute(query.group_by(grouped) if group_by != "none" else query)
    total = _CallSums()
    groups: dict[str | None, CallFigures] = {}
    for row in rows:
        sums = _CallSums(
            calls=int(row.calls or 0),
            answered=int(row.answered or 0),
            linked=int(row.linked or 0),
            wait_sum=float(row.wait_sum or 0.0),
        )
        total.add(sums)
        if group_by != "none" and not (group_by == "device_type" and row.group_key is None):
            groups[None if row.group_key is None else str(row.group_key)] = sums.figures()
    return total.figures(), groups
