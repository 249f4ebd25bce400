"""The customer's voice (NPS, CSAT, response rate, follow-ups) for a window: docs/kpis.md."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import UNSCOPED, ManagerUser, SessionDep
from server.kpi.report import default_window
from server.kpi.voice import VOICE_DEFINITIONS, VoiceGroupBy, VoiceReport, compute_voice
from shared.ids import utcnow

#: Not computed per scope yet: a user limited to some customers gets 403, never others' figures.
router = APIRouter(prefix="/kpis/voice", tags=["kpis"], dependencies=[UNSCOPED])


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@router.get("")
def get_voice(
    session: SessionDep,
    _user: ManagerUser,
    start: Annotated[
        datetime | None,
        Query(alias="from", description="inclusive (closed_at); default: 12 months ago"),
    ] = None,
    end: Annotated[
        datetime | None,
        Query(alias="to", description="exclusive (closed_at); default: the next month's start"),
    ] = None,
    group_by: VoiceGroupBy = "none",
) -> VoiceReport:
    """NPS, CSAT per touchpoint, response rate and follow-ups of the incidents closed in
    ``[from, to)``, grouped by month, device type, region or resolution."""
    default_start, default_end = default_window(utcnow())
    return compute_voice(
        session,
        start=_aware(start) if start is not None else default_start,
        end=_aware(end) if end is not None else default_end,
        group_by=group_by,
    )


@router.get("/definitions")
def voice_definitions(_user: ManagerUser) -> dict[str, str]:
    """What each voice figure means."""
    return VOICE_DEFINITIONS
