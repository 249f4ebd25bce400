"""The survey's public page: ``/survey/{token}``, no login, in the customer's language.

The link's token is the only credential; the page makes no request to any other
site (inline styles, no script), works on a phone screen, and answers a plain form
post. Its JSON twin is ``POST /api/v1/surveys/{token}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlmodel import Session

from server.api.deps import SessionDep, SettingsDep
from server.crud import InvalidInput
from server.models import Survey
from server.models.survey import COMMENT_MAX, TOUCHPOINTS, SurveyAnswer
from server.surveys import records
from server.surveys.i18n import gettext, render, supported
from shared.errors import NotFound

router = APIRouter(include_in_schema=False)

#: The link is a secret: never sent on as a referrer, never cached, never framed.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
#: A form post larger than this is refused before it is read (a comment is 4,000 characters).
FORM_MAX_BYTES = 64 * 1024
_LANG = Annotated[str | None, Query(max_length=16)]


def _page(language: str, code: int, **context: Any) -> HTMLResponse:
    context.setdefault("values", {})
    context.setdefault("comment_max", COMMENT_MAX)
    return HTMLResponse(
        render("survey.html", language, **context), status_code=code, headers=PAGE_HEADERS
    )


def _lookup(session: Session, token: str) -> Survey | None:
    try:
        return records.find_survey(session, token)
    except NotFound:
        return None


def _state_page(survey: Survey | None, language: str) -> HTMLResponse | None:
    """The page for a survey that cannot be answered, or None when it can."""
    if survey is None:
        return _page(language, status.HTTP_404_NOT_FOUND, state="invalid")
    try:
        records.check_open(survey)
    except records.SurveyClosed as exc:
        code = status.HTTP_410_GONE if exc.reason == "expired" else status.HTTP_409_CONFLICT
        return _page(language, code, state=exc.reason)
    return None


def _form(survey: Survey, language: str, code: int = 200, **context: Any) -> HTMLResponse:
    return _page(
        language,
        code,
        state="form",
        case=f"#{survey.incident_id}",
        touchpoints=survey.touchpoints.split(","),
        **context,
    )


@router.get("/survey/{token}", response_class=HTMLResponse)
def survey_page(token: str, session: SessionDep, lang: _LANG = None) -> HTMLResponse:
    """The survey form (``?lang=en|ja|zh|de|fr``; default: the contact's language)."""
    survey = _lookup(session, token)
    language = supported(lang) or (survey.language if survey is not None else "en")
    return _state_page(survey, language) or _form(survey, language)  # type: ignore[arg-type]


@router.post("/survey/{token}", response_class=HTMLResponse)
async def answer_survey_form(
    token: str, request: Request, session: SessionDep, settings: SettingsDep, lang: _LANG = None
) -> HTMLResponse:
    """The form's answer: recorded once, then thanks (or the form again with the problem)."""
    survey = await run_in_threadpool(_lookup, session, token)
    language = supported(lang) or (survey.language if survey is not None else "en")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > FORM_MAX_BYTES:
        problem = gettext(
            language, "Your comment is too long (at most %(max)s characters).", max=COMMENT_MAX
        )
        if survey is None:
            return _page(language, status.HTTP_404_NOT_FOUND, state="invalid")
        return _form(survey, language, status.HTTP_413_CONTENT_TOO_LARGE, problem=problem)
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    language = supported(values.get("lang")) or language
    closed = _state_page(survey, language)
    if closed is not None or survey is None:
        return closed or _page(language, status.HTTP_404_NOT_FOUND, state="invalid")
    comment = values.get("comment") or None
    if comment is not None and len(comment) > COMMENT_MAX:
        problem = gettext(
            language, "Your comment is too long (at most %(max)s characters).", max=COMMENT_MAX
        )
        return _form(survey, language, 422, problem=problem, values=values)
    try:
        answer = SurveyAnswer.model_validate(
            {
                "recommend": values.get("recommend"),
                "satisfaction": {
                    t: values[f"sat_{t}"] for t in TOUCHPOINTS if values.get(f"sat_{t}")
                },
                "comment": comment,
            }
        )
    except ValidationError:
        problem = gettext(language, "Please choose a score from 0 to 10 and check your answer.")
        return _form(survey, language, 422, problem=problem, values=values)
    try:
        _, followup = await run_in_threadpool(
            records.record_answer, session, token=token, answer=answer, settings=settings
        )
    except records.SurveyClosed as exc:
        code = status.HTTP_410_GONE if exc.reason == "expired" else status.HTTP_409_CONFLICT
        return _page(language, code, state=exc.reason)
    except InvalidInput:
        problem = gettext(language, "Please choose a score from 0 to 10 and check your answer.")
        return _form(survey, language, 422, problem=problem, values=values)
    return _page(language, status.HTTP_200_OK, state="thanks", followup=followup)
