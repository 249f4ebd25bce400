"""The KPIs of docs/kpis.md for a window, grouped by month, device type or region."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import ManagerUser, ScopeDep, SessionDep, SettingsDep
from server.kpi.compute import compute_kpis
from server.kpi.config import kpi_settings_of
from server.kpi.report import KPI_DEFINITIONS, GroupBy, KpiReport, default_window
from shared.ids import utcnow

router = APIRouter(prefix="/kpis", tags=["kpis"])


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@router.get("")
def get_kpis(
    session: SessionDep,
    settings: SettingsDep,
    _user: ManagerUser,
    scope: ScopeDep,
    start: Annotated[
        datetime | None,
        Query(alias="from", description="inclusive (closed_at); default: 12 months ago"),
    ] = None,
    end: Annotated[
        datetime | None,
        Query(alias="to", description="exclusive (closed_at); default: the next month's start"),
    ] = None,
    group_by: GroupBy = "none",
) -> KpiReport:
    """The KPIs of the incidents closed in ``[from, to)``, as defined in docs/kpis.md; a
    scoped manager's are computed over their scope's devices only."""
    default_start, default_end = default_window(utcnow())
    return compute_kpis(
        session,
        start=_aware(start) if start is not None else default_start,
        end=_aware(end) if end is not None else default_end,
        group_by=group_by,
        settings=kpi_settings_of(settings),
        scope=scope,
    )


@router.get("/definitions")
def kpi_definitions(_user: ManagerUser) -> dict[str, str]:
    """What each figure means (shown next to it in the console and the CLI)."""
    return KPI_DEFINITIONS
