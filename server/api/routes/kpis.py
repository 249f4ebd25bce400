"""The KPIs of docs/kpis.md for a window, grouped by month, device type or region."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import KpiWindowQuery, ManagerUser, ScopeDep, SessionDep, SettingsDep
from server.kpi.compute import compute_kpis
from server.kpi.config import kpi_settings_of
from server.kpi.report import KPI_DEFINITIONS, GroupBy, KpiReport

router = APIRouter(prefix="/kpis", tags=["kpis"])


class KpiQuery(KpiWindowQuery):
    """The query of ``GET /kpis``: the window and how to group it."""

    group_by: GroupBy = "none"


@router.get("")
def get_kpis(
    session: SessionDep,
    settings: SettingsDep,
    _user: ManagerUser,
    scope: ScopeDep,
    query: Annotated[KpiQuery, Query()],
) -> KpiReport:
    """The KPIs of the incidents closed in ``[from, to)``, as defined in docs/kpis.md; a
    scoped manager's are computed over their scope's devices only."""
    start, end = query.window()
    return compute_kpis(
        session,
        start=start,
        end=end,
        group_by=query.group_by,
        settings=kpi_settings_of(settings),
        scope=scope,
    )


@router.get("/definitions")
def kpi_definitions(_user: ManagerUser) -> dict[str, str]:
    """What each figure means (shown next to it in the console and the CLI)."""
    return KPI_DEFINITIONS
