"""A device's health history: raw samples for short ranges, hourly rollups for long ones."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime, BaseModel
from sqlmodel import col, select

from server.api.deps import ScopeDep, SessionDep, SiteUser
from server.models import TelemetryRollup, TelemetrySample
from shared.ids import utcnow

router = APIRouter(prefix="/devices", tags=["telemetry"])

#: Ranges longer than this are answered from hourly rollups unless raw is asked for.
RAW_RANGE_LIMIT = timedelta(hours=48)
MAX_POINTS = 10_000


class TelemetryPoint(BaseModel):
    """One point of a metric: a raw value, or an hour's aggregate."""

    ts: datetime
    value: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    count: int | None = None


class TelemetrySeries(BaseModel):
    """A device's history of one metric, or of whole samples when no metric is named."""

    device_id: str
    metric: str | None
    resolution: Literal["raw", "hour"]
    since: datetime
    until: datetime
    points: list[TelemetryPoint] = []
    samples: list[dict[str, object]] = []


@router.get("/{device_id}/telemetry")
def get_telemetry(
    device_id: str,
    session: SessionDep,
    _user: SiteUser,
    scope: ScopeDep,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    metric: Annotated[str | None, Query(max_length=128)] = None,
    resolution: Literal["auto", "raw", "hour"] = "auto",
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 1000,
) -> TelemetrySeries:
    """Health history between ``since`` and ``until`` (default: the last 24 hours)."""
    scope.device(session, device_id)
    until = until or utcnow()
    since = since or until - timedelta(hours=24)
    if since >= until:
        raise HTTPException(status_code=422, detail="since must be before until")
    if resolution == "auto":
        resolution = "hour" if until - since > RAW_RANGE_LIMIT and metric else "raw"
    if resolution == "hour":
        if not metric:
            raise HTTPException(status_code=422, detail="hourly rollups need a metric")
        rollups = session.exec(
            select(TelemetryRollup)
            .where(
                TelemetryRollup.device_id == device_id,
                TelemetryRollup.metric == metric,
                col(TelemetryRollup.bucket) >= since,
                col(TelemetryRollup.bucket) < until,
            )
            .order_by(col(TelemetryRollup.bucket))
            .limit(limit)
        ).all()
        points = [
            TelemetryPoint(
                ts=r.bucket,
                min=r.min,
                max=r.max,
                avg=r.sum / r.count if r.count else None,
                count=r.count,
            )
            for r in rollups
        ]
        return TelemetrySeries(
            device_id=device_id,
            metric=metric,
            resolution="hour",
            since=since,
            until=until,
            points=points,
        )
    rows = session.exec(
        select(TelemetrySample)
        .where(
            TelemetrySample.device_id == device_id,
            col(TelemetrySample.ts) >= since,
            col(TelemetrySample.ts) < until,
        )
        .order_by(col(TelemetrySample.ts))
        .limit(limit)
    ).all()
    if metric:
        points = [
            TelemetryPoint(ts=row.ts, value=row.metrics[metric])
            for row in rows
            if metric in row.metrics
        ]
        return TelemetrySeries(
            device_id=device_id,
            metric=metric,
            resolution="raw",
            since=since,
            until=until,
            points=points,
        )
    samples: list[dict[str, object]] = [
        {
            "ts": row.ts,
            "ts_untrusted": row.ts_untrusted,
            "seq": row.seq,
            "boot_id": row.boot_id,
            "status": row.status,
            "metrics": row.metrics,
            "faults": row.faults,
        }
        for row in rows
    ]
    return TelemetrySeries(
        device_id=device_id,
        metric=None,
        resolution="raw",
        since=since,
        until=until,
        samples=samples,
    )
