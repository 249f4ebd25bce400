"""The customer's voice (NPS, CSAT, response rate, follow-ups) for a window: docs/kpis.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import UNSCOPED, KpiWindowQuery, ManagerUser, SessionDep
from server.kpi.voice import VOICE_DEFINITIONS, VoiceGroupBy, VoiceReport, compute_voice

#: Not computed per scope yet: a user limited to some customers gets 403, never others' figures.
router = APIRouter(prefix="/kpis/voice", tags=["kpis"], dependencies=[UNSCOPED])


class VoiceQuery(KpiWindowQuery):
    """The query of ``GET /kpis/voice``: the window and how to group it."""

    group_by: VoiceGroupBy = "none"


@router.get("")
def get_voice(
    session: SessionDep,
    _user: ManagerUser,
    query: Annotated[VoiceQuery, Query()],
) -> VoiceReport:
    """NPS, CSAT per touchpoint, response rate and follow-ups of the incidents closed in
    ``[from, to)``, grouped by month, device type, region or resolution."""
    start, end = query.window()
    return compute_voice(session, start=start, end=end, group_by=query.group_by)


@router.get("/definitions")
def voice_definitions(_user: ManagerUser) -> dict[str, str]:
    """What each voice figure means."""
    return VOICE_DEFINITIONS
