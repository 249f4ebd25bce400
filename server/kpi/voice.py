"""The customer's voice beside the KPIs: NPS, CSAT per touchpoint, response rate, follow-ups.

Over the surveys of the incidents closed in the window (the KPIs' window), grouped
like them (month, device type, region) and by resolution (docs/kpis.md "The
customer's voice"). One SQL statement sums per group; the figures are formed from
the sums in Python, so the total is exactly the sum of the groups.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection
from sqlmodel import Session

from server.kpi.groups import checked_window, group_keys
from server.kpi.sql import month_key
from server.models import Device, FollowUp, Incident, Survey
from shared.translatable import N_

VoiceGroupBy = Literal["none", "month", "device_type", "region", "resolution"]
VOICE_GROUP_BYS: tuple[str, ...] = ("none", "month", "device_type", "region", "resolution")
_CSAT = ("call_center", "remote_fix", "on_site")

#: What each figure means (docs/kpis.md). S: the surveys of the incidents closed in the
#: window; A: those answered. Marked for the console's catalog (the formula is not a text).
VOICE_DEFINITIONS: dict[str, str] = {
    "surveys": N_("surveys made for the incidents closed in the window (S)"),
    "answers": N_("surveys of S answered (A)"),
    "response_rate": "|A| / |S|",  # a formula, the same in every language
    "nps": N_("100 * (promoters (9-10) - detractors (0-6)) / |A|, -100 to 100"),
    "csat_call_center": N_("mean satisfaction 1-5 with the call center, over A that rated it"),
    "csat_remote_fix": N_("mean satisfaction 1-5 with the remote fix, over A that rated it"),
    "csat_on_site": N_("mean satisfaction 1-5 with the on-site visit, over A that rated it"),
    "followups": N_("follow-ups opened by low answers of A"),
    "followups_on_time_rate": N_(
        "share of the follow-ups due by now (or closed) that were closed by their due time"
    ),
    "followups_overdue": N_("follow-ups still open past their due time"),
}


class VoiceFigures(BaseModel):
    """The voice figures of one group (or the window); ``None`` where undefined."""

    surveys: int
    answers: int
    response_rate: float | None
    nps: float | None
    promoters: int
    detractors: int
    csat_call_center: float | None
    csat_remote_fix: float | None
    csat_on_site: float | None
    followups: int
    followups_on_time_rate: float | None
    followups_overdue: int


class VoiceGroup(VoiceFigures):
    """The figures of one month, device type, region or resolution (``key``)."""

    key: str | None


class VoiceReport(BaseModel):
    """The answer of ``GET /api/v1/kpis/voice``."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(alias="from")
    to: datetime
    group_by: VoiceGroupBy
    total: VoiceFigures
    groups: list[VoiceGroup]
    #: Whether any of the answers are ``fieldlink demo``'s seeded ones.
    demo_data: bool = False


@dataclass
class VoiceSums:
    """The additive aggregates of one group."""

    surveys: int = 0
    answers: int = 0
    promoters: int = 0
    detractors: int = 0
    recommends: int = 0
    csat_call_center_sum: int = 0
    csat_call_center_n: int = 0
    csat_remote_fix_sum: int = 0
    csat_remote_fix_n: int = 0
    csat_on_site_sum: int = 0
    csat_on_site_n: int = 0
    followups: int = 0
    followups_decided: int = 0
    followups_on_time: int = 0
    followups_overdue: int = 0
    demo: int = 0

    def add(self, other: VoiceSums) -> None:
        """Add another group's sums to these."""
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


def nps(promoters: int, detractors: int, answers: int) -> float | None:
    """The Net Promoter Score: ``100 * (promoters - detractors) / answers`` (None over none)."""
    if answers <= 0:
        return None
    return 100.0 * (promoters - detractors) / answers


def _ratio(numerator: float, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def voice_figures(sums: VoiceSums) -> dict[str, Any]:
    """The figures of :class:`VoiceFigures` from a group's sums."""
    return {
        "surveys": sums.surveys,
        "answers": sums.answers,
        "response_rate": _ratio(sums.answers, sums.surveys),
        "nps": nps(sums.promoters, sums.detractors, sums.recommends),
        "promoters": sums.promoters,
        "detractors": sums.detractors,
        **{
            f"csat_{t}": _ratio(getattr(sums, f"csat_{t}_sum"), getattr(sums, f"csat_{t}_n"))
            for t in _CSAT
        },
        "followups": sums.followups,
        "followups_on_time_rate": _ratio(sums.followups_on_time, sums.followups_decided),
        "followups_overdue": sums.followups_overdue,
    }


def _query(start: datetime, end: datetime, group_by: str, now: datetime) -> Any:
    incident = Incident.__table__.c  # type: ignore[attr-defined]
    survey_table = Survey.__table__  # type: ignore[attr-defined]
    followup_table = FollowUp.__table__  # type: ignore[attr-defined]
    device_table = Device.__table__  # type: ignore[attr-defined]
    survey, followup = survey_table.c, followup_table.c
    source = survey_table.join(Incident.__table__, incident.id == survey.incident_id).outerjoin(  # type: ignore[attr-defined]
        followup_table, followup.survey_id == survey.id
    )
    key: Any
    if group_by == "month":
        key = month_key(incident.closed_at)
    elif group_by == "device_type":
        key = incident.device_type
    elif group_by == "resolution":
        key = incident.resolution
    elif group_by == "region":
        source = source.join(device_table, device_table.c.id == incident.device_id)
        key = device_table.c.region
    else:
        key = sa.null()

    def count(condition: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    on_time = sa.and_(followup.closed_at.is_not(None), followup.closed_at <= followup.due_at)
    overdue = sa.and_(followup.closed_at.is_(None), followup.due_at < now)
    decided = sa.or_(followup.closed_at.is_not(None), followup.due_at < now)
    columns = [
        key.label("group_key"),
        sa.func.count().label("surveys"),
        sa.func.count(survey.answered_at).label("answers"),
        count(survey.recommend >= 9).label("promoters"),
        count(survey.recommend <= 6).label("detractors"),
        sa.func.count(survey.recommend).label("recommends"),
        *(
            column
            for t in _CSAT
            for column in (
                sa.func.coalesce(sa.func.sum(survey[f"csat_{t}"]), 0).label(f"csat_{t}_sum"),
                sa.func.count(survey[f"csat_{t}"]).label(f"csat_{t}_n"),
            )
        ),
        sa.func.count(followup.id).label("followups"),
        count(sa.and_(followup.id.is_not(None), decided)).label("followups_decided"),
        count(on_time).label("followups_on_time"),
        count(overdue).label("followups_overdue"),
        count(survey.demo.is_(True)).label("demo"),
    ]
    query = (
        sa.select(*columns)
        .select_from(source)
        .where(incident.closed_at >= start, incident.closed_at < end)
    )
    if group_by != "none":
        query = query.group_by(key)
    return query


def compute_voice(
    connection: Connection | Session,
    *,
    start: datetime,
    end: datetime,
    group_by: str = "none",
    now: datetime | None = None,
) -> VoiceReport:
    """The voice figures of the incidents closed in ``[start, end)``, grouped as asked.

    ``month`` lists every month of the window, ``device_type`` and ``resolution`` every
    type and resolution (zero where nothing was asked); ``region`` the regions found.
    """
    connection, start, end = checked_window(
        connection, start=start, end=end, group_by=group_by, group_bys=VOICE_GROUP_BYS
    )
    from shared.ids import utcnow

    now = now or utcnow()
    sums: dict[str | None, VoiceSums] = {}
    for row in connection.execute(_query(start, end, group_by, now)).mappings():
        values = {item.name: int(row[item.name] or 0) for item in fields(VoiceSums)}
        key = row["group_key"]
        sums[None if key is None else str(key)] = VoiceSums(**values)
    total = VoiceSums()
    for group in sums.values():
        total.add(group)
    keys = group_keys(group_by, sums, start, end)
    return VoiceReport(
        from_=start,
        to=end,
        group_by=group_by,
        total=VoiceFigures(**voice_figures(total)),
        groups=[VoiceGroup(key=k, **voice_figures(sums.get(k, VoiceSums()))) for k in keys],
        demo_data=total.demo > 0,
    )
