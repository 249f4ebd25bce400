"""Surveys and follow-ups: the customer's answer (public, by its link's token), the desk's
call-back queue, the links for a mailer."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import Response

from server.api.csv_upload import csv_file
from server.api.deps import (
    UNSCOPED,
    ManagerUser,
    OperatorUser,
    ScopeDep,
    SessionDep,
    SettingsDep,
    client_address,
)
from server.api.responses import DB_INT_MAX, error_response
from server.models import (
    FollowUpClose,
    FollowUpPublic,
    FollowUpsPublic,
    SurveyAnswer,
    SurveyAnswered,
    SurveyPublic,
)
from server.surveys import followups, records
from server.surveys.mail import links_csv_rows

router = APIRouter(tags=["surveys"])

_TOKEN = Annotated[str, Path(max_length=64, description="the survey link's token")]
_CLOSED: dict[int | str, dict[str, Any]] = {
    404: error_response("No such survey"),
    409: error_response("Answered already"),
    410: error_response("Expired"),
}


def _closed(exc: records.SurveyClosed) -> HTTPException:
    code = status.HTTP_410_GONE if exc.reason == "expired" else status.HTTP_409_CONFLICT
    return HTTPException(status_code=code, detail=str(exc))


@router.get("/surveys/{token}", responses=_CLOSED)
def get_survey(token: _TOKEN, session: SessionDep) -> SurveyPublic:
    """What a survey asks (public: the token is the credential)."""
    survey = records.find_survey(session, token)
    try:
        records.check_open(survey)
    except records.SurveyClosed as exc:
        raise _closed(exc) from exc
    return SurveyPublic(
        language=survey.language,
        touchpoints=survey.touchpoints.split(","),
        expires_at=survey.expires_at,
        answered=False,
    )


@router.post("/surveys/{token}", responses=_CLOSED)
def answer_survey(
    token: _TOKEN, body: SurveyAnswer, session: SessionDep, settings: SettingsDep
) -> SurveyAnswered:
    """Answer a survey once (public: the token is the credential); a low answer opens a
    follow-up."""
    try:
        _, opened = records.record_answer(session, token=token, answer=body, settings=settings)
    except records.SurveyClosed as exc:
        raise _closed(exc) from exc
    return SurveyAnswered(followup=opened)


@router.get("/surveys", response_class=Response, dependencies=[UNSCOPED])
def export_survey_links(
    session: SessionDep,
    settings: SettingsDep,
    _user: ManagerUser,
    state: Annotated[str, Query(pattern="^(unsent|open|all)$")] = "open",
) -> Response:
    """The survey links as CSV for a mailer: ``unsent`` (not e-mailed), ``open`` (not
    answered nor expired, the default) or ``all``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in links_csv_rows(session, settings, state=state):
        writer.writerow(row)
    return csv_file(out.getvalue(), "survey-links.csv")


@router.get("/followups")
def list_followups(
    session: SessionDep,
    _user: OperatorUser,
    scope: ScopeDep,
    state: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
    customer: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> FollowUpsPublic:
    """Follow-ups of low survey answers, the soonest due first (the desk's call-back queue)."""
    items, total = followups.list_followups(
        session, state=state, customer_number=customer, limit=limit, offset=offset, scope=scope
    )
    return FollowUpsPublic(items=items, count=total)


@router.post(
    "/followups/{followup_id}/close",
    responses={
        404: error_response("No such follow-up"),
        409: error_response("Closed already"),
    },
)
def close_followup(
    followup_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)],
    body: FollowUpClose,
    request: Request,
    session: SessionDep,
    user: OperatorUser,
    scope: ScopeDep,
) -> FollowUpPublic:
    """Close a follow-up with what was done; audited as ``followup.close``."""
    return followups.close_followup(
        session,
        followup_id=followup_id,
        note=body.note,
        actor=user.username,
        source_ip=client_address(request),
        scope=scope,
    )
