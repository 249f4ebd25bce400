"""The managers' dashboard: the KPIs of docs/kpis.md for a period, trends, breakdowns, CSV.

The figures come from :func:`server.kpi.compute.compute_kpis` (SQL aggregates),
the same as ``GET /api/v1/kpis``; next to each the page shows its formula.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from server.api.csv_upload import csv_file
from server.api.deps import SessionDep, SettingsDep
from server.crud import InvalidInput
from server.incidents.csv_io import neutralize
from server.kpi.compute import compute_kpis
from server.kpi.config import kpi_settings_of
from server.kpi.report import KPI_DEFINITIONS, CallFigures, KpiReport, default_window
from server.scope import Scope
from server.web.auth import ViewerDep, forbidden
from server.web.templating import gettext, render
from server.web.texts import N_
from server.web.voice import csv_cell, dashboard_context, voice_reports, write_voice_csv
from shared.ids import utcnow

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Figure:
    """One KPI as the dashboard shows it."""

    name: str
    label: str
    kind: str  # "count", "rate", "hours", "seconds", "money"
    formula: str

    @property
    def meaning(self) -> str:
        """The figure in words."""
        return KPI_DEFINITIONS[self.name]


#: The formulas of docs/kpis.md. C: incidents closed in the window; F: C without no_fault.
FIGURES: tuple[Figure, ...] = (
    Figure("incidents_closed", N_("Incidents closed"), "count", "|C|"),
    Figure(
        "self_resolution_rate",
        N_("Self-resolution"),
        "rate",
        "|{i ∈ F : resolution ∈ (remote, phone)}| / |F|",
    ),
    Figure(
        "remote_usage_rate",
        N_("Remote session used"),
        "rate",
        "|{i ∈ C : remote_session_used}| / |C|",
    ),
    Figure(
        "proactive_share",
        N_("Opened by device faults"),
        "rate",
        "|{i ∈ C : channel = alert}| / |C|",
    ),
    Figure(
        "remote_resolution_rate",
        N_("Resolved remotely"),
        "rate",
        "|{i ∈ F : resolution = remote}| / |F|",
    ),
    Figure("dispatches", N_("Dispatches"), "count", "|{i ∈ F : resolution = dispatch}|"),
    Figure(
        "dispatches_avoided", N_("Dispatches avoided"), "count", "|{i ∈ F : resolution = remote}|"
    ),
    Figure("mttr_hours", N_("Mean time to restore"), "hours", "mean of ttr(i) over F"),
    Figure(
        "mttr_remote_hours", N_("MTTR, remote"), "hours", "mean of ttr(i) over remote-resolved F"
    ),
    Figure(
        "mttr_dispatch_hours",
        N_("MTTR, dispatch"),
        "hours",
        "mean of ttr(i) over dispatch-resolved F",
    ),
    Figure(
        "asa_seconds",
        N_("Average speed of answer"),
        "seconds",
        "mean of answered_at - opened_at over C",
    ),
    Figure(
        "downtime_saved_hours",
        N_("Downtime saved"),
        "hours",
        "Σ over remote-resolved i ∈ F of max(0, baseline_ttr(type(i)) - ttr(i))",
    ),
    Figure(
        "cost_saved",
        N_("Cost saved"),
        "money",
        "Σ over remote-resolved i ∈ F of dispatch_cost(type(i))",
    ),
)
BY_NAME = {f.name: f for f in FIGURES}
#: The monthly trend charts.
TRENDS = (
    "self_resolution_rate",
    "remote_usage_rate",
    "downtime_saved_hours",
    "dispatches_avoided",
    "cost_saved",
)
#: The monthly chart of ASA from the recorded calls (``KpiGroup.calls``), after TRENDS.
CALLS_ASA = "calls_asa_seconds"
#: The CSV's columns of the recorded calls, after FIGURES'.
CALL_COLUMNS = ("calls", "calls_answered", "calls_asa_seconds")
#: The breakdown tables' columns.
BREAKDOWN = (
    "incidents_closed",
    "self_resolution_rate",
    "remote_usage_rate",
    "dispatches",
    "dispatches_avoided",
    "mttr_hours",
    "downtime_saved_hours",
    "cost_saved",
)
DEFINITIONS = (
    ("C", N_("the incidents whose closed_at falls in the period [from, to)")),
    ("F", N_("the incidents of C whose resolution is not no_fault")),
    ("ttr(i)", N_("restored_at - down_at, in hours")),
    (
        "baseline_ttr(t)",
        N_(
            "the median ttr of the period's dispatch-resolved incidents of device type t when "
            "there are at least baseline_min_samples of them, else the configured fallback"
        ),
    ),
    (
        "dispatch_cost(t)",
        N_("the configured cost of sending an engineer to a device of type t"),
    ),
)


@dataclass(frozen=True)
class Period:
    """The period the dashboard shows: ``[start, end)``, picked as two inclusive dates."""

    start: datetime
    end: datetime

    @property
    def first_day(self) -> date:
        """The period's first day (the form's "from")."""
        return self.start.date()

    @property
    def last_day(self) -> date:
        """The period's last day (the form's "through")."""
        return (self.end - timedelta(days=1)).date()


def _day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def period_of(start: str | None, through: str | None) -> tuple[Period, str | None]:
    """The period asked for (default: the last twelve months) and a problem, if any."""
    default_start, default_end = default_window(utcnow())
    first, last = _day(start), _day(through)
    problem = None
    if (start and first is None) or (through and last is None):
        problem = N_("Dates are YYYY-MM-DD; showing the last twelve months.")
        first = last = None
    begin = datetime(first.year, first.month, first.day, tzinfo=UTC) if first else default_start
    end = (
        datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        if last
        else default_end
    )
    if begin >= end:
        return Period(default_start, default_end), N_("The period must end after it starts.")
    return Period(begin, end), problem


def _reports(
    session: SessionDep, settings: SettingsDep, period: Period, scope: Scope
) -> dict[str, KpiReport]:
    kpi_settings = kpi_settings_of(settings)
    return {
        by: compute_kpis(
            session,
            start=period.start,
            end=period.end,
            group_by=by,
            settings=kpi_settings,
            scope=scope,
        )
        for by in ("month", "device_type", "region")
    }


def month_coverage(month: str, period: Period, now: datetime) -> float:
    """How much of a month (``YYYY-MM``) the figures cover: 1.0 for a whole month, less for
    the current one (up to ``now``) or one the period cuts; plotted apart as partial."""
    year, number = int(month[:4]), int(month[5:7])
    begin = datetime(year, number, 1, tzinfo=UTC)
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if number == 12
        else datetime(year, number + 1, 1, tzinfo=UTC)
    )
    covered = min(end, period.end, max(now, begin)) - max(begin, period.start)
    return max(0.0, min(1.0, covered / (end - begin)))


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    viewer: ViewerDep,
    start: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    through: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    """The KPIs of a period: figures with formulas, monthly trends, breakdowns."""
    if not viewer.can("manager"):
        return forbidden(request, viewer, "manager")
    period, problem = period_of(start, through)
    try:
        reports = _reports(session, settings, period, viewer.scope)
    except InvalidInput as exc:  # pragma: no cover  (the period is checked above)
        period, problem = period_of(None, None)
        reports = _reports(session, settings, period, viewer.scope)
        problem = str(exc)
    monthly = reports["month"]
    now = utcnow()
    months = [str(g.key) for g in monthly.groups]
    coverage = [round(month_coverage(m, period, now), 3) for m in months]
    trends: dict[str, Any] = {
        "months": months,
        "coverage": coverage,
        "series": {name: [getattr(g, name) for g in monthly.groups] for name in TRENDS},
        "labels": {name: BY_NAME[name].label for name in TRENDS},
        "kinds": {name: BY_NAME[name].kind for name in TRENDS},
    }
    # ASA from the recorded calls, per month (docs/kpis.md "ASA from recorded calls").
    trends["series"][CALLS_ASA] = [g.calls.asa_seconds for g in monthly.groups]
    trends["labels"][CALLS_ASA] = "ASA, recorded calls"
    trends["kinds"][CALLS_ASA] = "seconds"
    return render(
        request,
        "dashboard.html",
        {
            "viewer": viewer,
            "title": "Dashboard",
            "nav": "dashboard",
            "period": period,
            "problem": problem,
            "total": monthly.total,
            "report": monthly,
            "by_type": reports["device_type"].groups,
            "by_region": reports["region"].groups,
            "figures": FIGURES,
            "by_name": BY_NAME,
            "breakdown": BREAKDOWN,
            "trend_names": TRENDS,
            "calls_asa": CALLS_ASA,
            "partial_months": [(m, c) for m, c in zip(months, coverage, strict=True) if c < 1.0],
            "trends": trends,
            "definitions": DEFINITIONS,
            "tr": gettext,
            "export_query": f"from={period.first_day}&through={period.last_day}",
            # The voice figures are not computed per scope yet: a scoped viewer sees none.
            **(
                dashboard_context(session, period.start, period.end)
                if viewer.scope.unrestricted
                else {"voice": None}
            ),
        },
    )


@router.get("/dashboard/export.csv")
def dashboard_csv(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    viewer: ViewerDep,
    start: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    through: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """The dashboard's table as CSV: one row per month, type and region, and the total."""
    if not viewer.can("manager"):
        return forbidden(request, viewer, "manager")
    period, _ = period_of(start, through)
    reports = _reports(session, settings, period, viewer.scope)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = [f.name for f in FIGURES]
    writer.writerow(["group_by", "key", *names, *CALL_COLUMNS])
    for by, report in reports.items():
        for group in report.groups:
            # A region is whatever text a device was registered with: it must not become a
            # formula in the manager's spreadsheet (the incidents export's rule).
            key = neutralize(group.key or "")
            row = [by, key, *(csv_cell(getattr(group, n)) for n in names)]
            writer.writerow([*row, *_call_cells(group.calls)])
    total = reports["month"].total
    row = ["total", "", *(csv_cell(getattr(total, n)) for n in names)]
    writer.writerow([*row, *_call_cells(reports["month"].calls)])
    if viewer.scope.unrestricted:  # not computed per scope yet
        write_voice_csv(writer, voice_reports(session, period.start, period.end))
    filename = f"fieldlink-kpis-{period.first_day}-{period.last_day}.csv"
    return csv_file(out.getvalue(), filename)


def _call_cells(calls: CallFigures) -> list[str]:
    return [csv_cell(calls.calls), csv_cell(calls.answered), csv_cell(calls.asa_seconds)]
