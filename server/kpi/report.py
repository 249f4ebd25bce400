"""The KPI report as ``GET /api/v1/kpis`` answers it, and how its figures are formed.

Pure data (pydantic and the standard library): the operator's command line
reads the API's answer with these types where only ``fieldlink[client]`` is
installed, and an import-linter contract keeps the database out of this module.
:mod:`server.kpi.compute` fills them from SQL aggregates.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.translatable import N_

GroupBy = Literal["none", "month", "device_type", "region"]
GROUP_BYS: tuple[str, ...] = ("none", "month", "device_type", "region")

#: What each figure means, for the places that show them (marked for the console's catalog).
KPI_DEFINITIONS: dict[str, str] = {
    "incidents_closed": N_("incidents closed in the window (C)"),
    "remote_usage_rate": N_("share of C where a remote session was used"),
    "proactive_share": N_("share of C opened by a device fault (channel alert) before any call"),
    "self_resolution_rate": N_("share of F (C without no_fault) resolved remotely or by phone"),
    "remote_resolution_rate": N_("share of F resolved through a remote session"),
    "dispatches": N_("incidents of F resolved by sending an engineer"),
    "dispatches_avoided": N_("incidents of F resolved remotely"),
    "mttr_hours": N_("mean time to restore (restored_at - down_at) over F, hours"),
    "mttr_remote_hours": N_("mean time to restore of remote resolutions, hours"),
    "mttr_dispatch_hours": N_("mean time to restore of dispatches, hours"),
    "asa_seconds": N_("mean time from call to answer over answered incidents of C, seconds"),
    "downtime_saved_hours": N_("sum over remote resolutions of max(0, baseline ttr - ttr), hours"),
    "cost_saved": N_("sum over remote resolutions of the dispatch cost of the device type"),
}


class KpiFigures(BaseModel):
    """The figures of one group (or of the whole window); ``None`` where undefined."""

    incidents_closed: int
    remote_usage_rate: float | None
    proactive_share: float | None
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


class CallFigures(BaseModel):
    """The recorded calls (the calls table) that started in the window (docs/kpis.md)."""

    calls: int = 0
    answered: int = 0
    linked: int = 0
    asa_seconds: float | None = None


class KpiGroup(KpiFigures):
    """The figures of one month, device type or region (``key``)."""

    key: str | None
    #: The recorded calls of the group (docs/kpis.md "ASA from recorded calls").
    calls: CallFigures = Field(default_factory=CallFigures)


class KpiReport(BaseModel):
    """The answer of ``GET /api/v1/kpis`` (docs/kpis.md "The answer")."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from")
    to: datetime
    group_by: GroupBy
    baseline_ttr_hours: dict[str, float]
    baseline_source: dict[str, Literal["measured", "configured"]]
    total: KpiFigures
    groups: list[KpiGroup]
    #: ASA from the phone system's recorded calls, beside the incidents' ``asa_seconds``.
    calls: CallFigures = Field(default_factory=CallFigures)


@dataclass
class KpiSums:
    """The additive aggregates of one group, as the scan answers them."""

    closed: int = 0
    remote_used: int = 0
    alerted: int = 0
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

    def add(self, other: KpiSums) -> None:
        """Add another group's sums to these."""
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


def _ratio(numerator: float, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def figures(sums: KpiSums) -> dict[str, Any]:
    """The figures of :class:`KpiFigures` from a group's sums (``None`` where undefined)."""
    return {
        "incidents_closed": sums.closed,
        "remote_usage_rate": _ratio(sums.remote_used, sums.closed),
        "proactive_share": _ratio(sums.alerted, sums.closed),
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


def months_of(start: datetime, end: datetime) -> list[str]:
    """The ``YYYY-MM`` keys of the months ``[start, end)`` touches."""
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
