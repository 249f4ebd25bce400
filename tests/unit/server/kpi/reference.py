"""A plain-Python reading of docs/kpis.md, to check the SQL against, and test data helpers."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server import crud
from server.kpi.compute import INCIDENT_TABLE
from server.kpi.config import KpiSettings
from server.models import DeviceCreate

TYPES = ("mfp", "imaging", "server")


@dataclass
class Case:
    """One incident as the reference sees it."""

    device_id: str
    device_type: str
    region: str | None
    opened_at: datetime
    down_at: datetime
    restored_at: datetime | None
    closed_at: datetime | None
    resolution: str | None
    remote_session_used: bool = False
    answered_at: datetime | None = None
    channel: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ttr(self) -> float:
        assert self.restored_at is not None
        return (self.restored_at - self.down_at).total_seconds() / 3600


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def reference_baseline(
    cases: list[Case], start: datetime, end: datetime, settings: KpiSettings
) -> tuple[dict[str, float], dict[str, str]]:
    closed = [c for c in cases if c.closed_at is not None and start <= c.closed_at < end]
    hours: dict[str, float] = {}
    source: dict[str, str] = {}
    for t in TYPES:
        ttrs = [c.ttr() for c in closed if c.device_type == t and c.resolution == "dispatch"]
        if len(ttrs) >= settings.baseline_min_samples:
            hours[t], source[t] = statistics.median(ttrs), "measured"
        else:
            hours[t], source[t] = settings.fallback_hours(t), "configured"
    return hours, source


def reference_figures(
    cases: list[Case], baseline: dict[str, float], settings: KpiSettings
) -> dict[str, Any]:
    """The figures of docs/kpis.md over ``cases`` (already the C of the group)."""
    faulty = [c for c in cases if c.resolution != "no_fault"]
    remote = [c for c in faulty if c.resolution == "remote"]
    phone = [c for c in faulty if c.resolution == "phone"]
    dispatch = [c for c in faulty if c.resolution == "dispatch"]
    answered = [c for c in cases if c.answered_at is not None]
    return {
        "incidents_closed": len(cases),
        "remote_usage_rate": _rate(sum(c.remote_session_used for c in cases), len(cases)),
        "proactive_share": _rate(sum(c.channel == "alert" for c in cases), len(cases)),
        "self_resolution_rate": _rate(len(remote) + len(phone), len(faulty)),
        "remote_resolution_rate": _rate(len(remote), len(faulty)),
        "dispatches": len(dispatch),
        "dispatches_avoided": len(remote),
        "mttr_hours": _mean([c.ttr() for c in faulty]),
        "mttr_remote_hours": _mean([c.ttr() for c in remote]),
        "mttr_dispatch_hours": _mean([c.ttr() for c in dispatch]),
        "asa_seconds": _mean(
            [
                (c.answered_at - c.opened_at).total_seconds()
                for c in answered
                if c.answered_at is not None
            ]
        ),
        "downtime_saved_hours": sum(max(0.0, baseline[c.device_type] - c.ttr()) for c in remote),
        "cost_saved": sum(settings.cost_of_dispatch(c.device_type) for c in remote),
    }


def _months(start: datetime, end: datetime) -> list[str]:
    keys = []
    y, m = start.year, start.month
    while datetime(y, m, 1, tzinfo=UTC) < end:
        keys.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return keys


def reference_kpis(
    cases: list[Case],
    start: datetime,
    end: datetime,
    group_by: str,
    settings: KpiSettings,
) -> dict[str, Any]:
    """The whole answer of ``GET /api/v1/kpis`` by docs/kpis.md, computed in Python."""
    closed = [c for c in cases if c.closed_at is not None and start <= c.closed_at < end]
    hours, source = reference_baseline(cases, start, end, settings)

    def key(c: Case) -> str | None:
        assert c.closed_at is not None
        if group_by == "month":
            return c.closed_at.astimezone(UTC).strftime("%Y-%m")
        if group_by == "device_type":
            return c.device_type
        return c.region

    if group_by == "none":
        keys: list[str | None] = []
    elif group_by == "month":
        keys = list(_months(start, end))
    elif group_by == "device_type":
        keys = list(TYPES)
    else:
        keys = sorted({key(c) for c in closed}, key=lambda k: (k is None, k or ""))
    groups = [
        {"key": k, **reference_figures([c for c in closed if key(c) == k], hours, settings)}
        for k in keys
    ]
    return {
        "group_by": group_by,
        "baseline_ttr_hours": hours,
        "baseline_source": source,
        "total": reference_figures(closed, hours, settings),
        "groups": groups,
    }


def assert_figures_equal(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Counts exactly, numbers to 1e-9 (relative) or 1e-9 (absolute), nulls as nulls."""
    assert actual.keys() == expected.keys(), where
    for name, value in expected.items():
        got = actual[name]
        if value is None or got is None or isinstance(value, str):
            assert got == value, f"{where}.{name}: {got!r} != {value!r}"
        else:
            assert abs(got - value) <= 1e-9 * max(1.0, abs(value)), (
                f"{where}.{name}: {got!r} != {value!r}"
            )


def assert_report_equal(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """An answer (``model_dump()``) equals the reference's."""
    assert actual["group_by"] == expected["group_by"]
    assert actual["baseline_source"] == expected["baseline_source"]
    assert_figures_equal(actual["baseline_ttr_hours"], expected["baseline_ttr_hours"], "baseline")
    assert_figures_equal(actual["total"], expected["total"], "total")
    assert [g["key"] for g in actual["groups"]] == [g["key"] for g in expected["groups"]]
    for got, want in zip(actual["groups"], expected["groups"], strict=True):
        assert_figures_equal(got, want, f"group {want['key']}")


DEVICES = (
    ("mfp-a", "mfp", "north"),
    ("mfp-b", "mfp", "south"),
    ("imaging-a", "imaging", "north"),
    ("server-a", "server", None),
)


def add_devices(engine: Engine, devices: tuple[tuple[str, str, str | None], ...] = DEVICES) -> None:
    """Register the test fleet."""
    with Session(engine) as session:
        for device_id, device_type, region in devices:
            crud.create_device(
                session,
                data=DeviceCreate(
                    id=device_id,
                    serial=device_id,
                    model="test",
                    type=device_type,
                    customer="Acme" if device_id.endswith("a") else "Globex",
                    region=region,
                ),
            )


def store(engine: Engine, cases: list[Case]) -> None:
    """Replace every incident by ``cases`` (one bulk insert)."""
    now = datetime.now(UTC)
    rows = [
        {
            "device_id": c.device_id,
            "device_type": c.device_type,
            "opened_at": c.opened_at,
            "answered_at": c.answered_at,
            "down_at": c.down_at,
            "restored_at": c.restored_at,
            "closed_at": c.closed_at,
            "resolution": c.resolution,
            "remote_session_used": c.remote_session_used,
            "channel": c.channel,
            "created_at": now,
            "updated_at": now,
        }
        for c in cases
    ]
    with engine.begin() as connection:
        connection.execute(sa.delete(INCIDENT_TABLE))
        if rows:
            connection.execute(sa.insert(INCIDENT_TABLE), rows)
