"""The customer's voice in the console: the dashboard's NPS and CSAT, the desk's call-back
queue, and the low score and open follow-ups on a customer's pages (and so the call pop-up).

Kept apart from :mod:`server.web.dashboard` and :mod:`server.web.pages`, which only
add what this answers to their pages' context.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from server.kpi.voice import VOICE_DEFINITIONS, VoiceReport, compute_voice
from server.models import FollowUpPublic
from server.scope import Scope
from server.surveys.followups import CustomerVoice, list_followups, voice_of
from shared.translatable import N_

#: Open follow-ups the desk's call-back queue shows.
CALLBACKS = 20


@dataclass(frozen=True)
class VoiceFigure:
    """One voice figure as the dashboard shows it."""

    name: str
    label: str
    kind: str  # "score" (NPS), "csat", "rate", "count"
    formula: str

    @property
    def meaning(self) -> str:
        """The figure in words."""
        return VOICE_DEFINITIONS[self.name]


#: The formulas of docs/kpis.md "The customer's voice". S: surveys of C; A: those answered.
VOICE_FIGURES: tuple[VoiceFigure, ...] = (
    VoiceFigure(
        "nps",
        N_("NPS"),
        "score",
        "100 · (|{a ∈ A : recommend ≥ 9}| - |{a ∈ A : recommend ≤ 6}|) / |A|",
    ),
    VoiceFigure("csat_call_center", N_("CSAT call center"), "csat", "mean of a.call_center over A"),
    VoiceFigure("csat_remote_fix", N_("CSAT remote fix"), "csat", "mean of a.remote_fix over A"),
    VoiceFigure("csat_on_site", N_("CSAT on-site visit"), "csat", "mean of a.on_site over A"),
    VoiceFigure("response_rate", N_("Survey response rate"), "rate", "|A| / |S|"),
    VoiceFigure(
        "followups_on_time_rate",
        N_("Follow-ups closed in time"),
        "rate",
        "|{f : closed_at ≤ due_at}| / |{f : closed or due_at < now}|",
    ),
)
VOICE_BREAKDOWN = (
    "surveys",
    "answers",
    "nps",
    "csat_call_center",
    "csat_remote_fix",
    "csat_on_site",
)


def voice_reports(session: Session, start: datetime, end: datetime) -> dict[str, VoiceReport]:
    """The voice figures of the period by month, device type, region and resolution."""
    return {
        by: compute_voice(session, start=start, end=end, group_by=by)
        for by in ("month", "device_type", "region", "resolution")
    }


def dashboard_context(session: Session, start: datetime, end: datetime) -> dict[str, Any]:
    """What the dashboard's voice section needs."""
    reports = voice_reports(session, start, end)
    return {
        "voice": reports,
        "voice_total": reports["month"].total,
        "voice_figures": VOICE_FIGURES,
        "voice_breakdown": VOICE_BREAKDOWN,
        "voice_nps_series": {
            "months": [str(g.key) for g in reports["month"].groups],
            "nps": [g.nps for g in reports["month"].groups],
        },
    }


def callbacks(session: Session, scope: Scope) -> list[FollowUpPublic]:
    """The desk's call-back queue: the open follow-ups (in ``scope``), the soonest due first."""
    items, _ = list_followups(session, state="open", limit=CALLBACKS, scope=scope)
    return items


def customer_voice(
    session: Session, *, customer_number: str | None, device_id: str | None = None
) -> CustomerVoice:
    """A recent low score and the open follow-ups of a customer (or a device)."""
    return voice_of(session, customer_number=customer_number, device_id=device_id)


def survey_links(session: Session, settings: object, incident_ids: list[int]) -> dict[int, str]:
    """The survey links of those incidents that have one (the incidents page shows them)."""
    from sqlmodel import col, select

    from server.models import Survey
    from server.surveys.records import key_of, survey_url

    if not incident_ids:
        return {}
    rows = session.exec(
        select(Survey).where(col(Survey.incident_id).in_(incident_ids), col(Survey.demo).is_(False))
    ).all()
    if not rows:
        return {}
    key = key_of(settings)
    return {row.incident_id: survey_url(settings, row, key) for row in rows}


def write_voice_csv(writer: Any, reports: dict[str, VoiceReport]) -> None:
    """The voice figures after the dashboard CSV's KPI rows: a header, then one row per
    month, type, region and resolution (``voice_<group_by>``) and the total."""
    from server.incidents.csv_io import neutralize

    names = [name for name in VOICE_DEFINITIONS if name != "followups_overdue"]
    writer.writerow([])
    writer.writerow(["group_by", "key", *names])
    for by, report in reports.items():
        for group in report.groups:
            key = neutralize(group.key or "")
            writer.writerow([f"voice_{by}", key, *(csv_cell(getattr(group, n)) for n in names)])
    total = reports["month"].total
    writer.writerow(["voice_total", "", *(csv_cell(getattr(total, n)) for n in names)])


def csv_cell(value: Any) -> str:
    """A figure as a CSV cell: empty for none, 6 significant digits for a float."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
