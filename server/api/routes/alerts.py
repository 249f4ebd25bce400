"""Open alerts across the fleet, for triage: ``GET /api/v1/alerts``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlmodel import col, select

from server.api.deps import OperatorUser, ScopeDep, SessionDep
from server.api.responses import DB_INT_MAX, PLAIN_TEXT
from server.models import Alert, Device, Incident
from shared.wire import SEVERITIES

router = APIRouter(prefix="/alerts", tags=["alerts"])

#: Rank of each severity (``info`` 0 ... ``critical`` 3).
_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}
_SEVERITY_PATTERN = f"^({'|'.join(SEVERITIES)})$"


class FleetAlert(BaseModel):
    """An open alert with its device, and the incident it opened (if any)."""

    id: int
    device_id: str
    device_type: str
    model: str
    customer: str
    source: str
    code: str
    metric: str | None
    severity: str
    message: str
    raised_at: datetime
    #: The open incident this fault opened (``[server.kpi] alerts_open_incidents``).
    incident_id: int | None


class FleetAlerts(BaseModel):
    """A page of open alerts, most severe first, then newest."""

    items: list[FleetAlert]
    count: int


@router.get("")
def list_alerts(
    session: SessionDep,
    _user: OperatorUser,
    scope: ScopeDep,
    type: Annotated[
        str | None, Query(max_length=16, pattern=PLAIN_TEXT, description="device type")
    ] = None,
    customer: Annotated[str | None, Query(max_length=256, pattern=PLAIN_TEXT)] = None,
    severity: Annotated[
        str | None, Query(pattern=_SEVERITY_PATTERN, description="this severity or above")
    ] = None,
    code: Annotated[str | None, Query(max_length=128, pattern=PLAIN_TEXT)] = None,
    source: Annotated[str | None, Query(pattern="^(device|rule)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> FleetAlerts:
    """The fleet's open alerts; ``severity`` keeps that severity and the ones above it."""
    conditions: list[sa.ColumnElement[bool]] = [col(Alert.open).is_(True), scope.devices()]
    if type:
        conditions.append(col(Device.type) == type)
    if customer:
        conditions.append(col(Device.customer) == customer)
    if severity:
        wanted = [name for name in SEVERITIES if _RANK[name] >= _RANK[severity]]
        conditions.append(col(Alert.severity).in_(wanted))
    if code:
        conditions.append(col(Alert.code) == code)
    if source:
        conditions.append(col(Alert.source) == source)
    where = sa.and_(*conditions)
    joined = sa.join(Alert, Device, col(Alert.device_id) == col(Device.id))
    total = session.exec(select(sa.func.count()).select_from(joined).where(where)).one()
    rank = sa.case(_RANK, value=col(Alert.severity), else_=-1)
    incident = (
        select(sa.func.min(Incident.id))
        .where(
            col(Incident.device_id) == col(Alert.device_id),
            col(Incident.error_code) == col(Alert.code),
            col(Incident.channel) == "alert",
            col(Incident.closed_at).is_(None),
            col(Alert.source) == "device",
        )
        .correlate(Alert)
        .scalar_subquery()
    )
    rows = session.execute(
        sa.select(Alert, col(Device.type), col(Device.model), col(Device.customer), incident)
        .select_from(joined)
        .where(where)
        .order_by(rank.desc(), col(Alert.raised_at).desc(), col(Alert.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    items = [
        FleetAlert(
            id=alert.id or 0,
            device_id=alert.device_id,
            device_type=device_type,
            model=model,
            customer=owner,
            source=alert.source,
            code=alert.code,
            metric=alert.metric,
            severity=alert.severity,
            message=alert.message,
            raised_at=alert.raised_at,
            incident_id=incident_id,
        )
        for alert, device_type, model, owner, incident_id in rows
    ]
    return FleetAlerts(items=items, count=int(total))
