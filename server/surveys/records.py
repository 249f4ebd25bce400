"""Surveys: made when an incident closes, answered once through their link.

Keyword-only functions on a database session, no HTTP in here. Who is asked: the
customer's contact who called about the case (the call linked to the incident),
else the first contact with an e-mail address, else the first contact; in their
language (else the customer's country's, else English). What is asked: the
touchpoints the case had (:func:`touchpoints_of`). A case with none (a device
fault closed as ``no_fault`` without a call) asks nobody.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server.crud import InvalidInput
from server.models import Call, Customer, CustomerContact, Device, Incident, Survey
from server.models.survey import LANGUAGES, TOUCHPOINTS, SurveyAnswer
from server.surveys import tokens
from server.surveys.config import SurveySettings, survey_settings_of
from shared.errors import Conflict, NotFound
from shared.ids import utcnow

logger = logging.getLogger(__name__)

#: The language of a customer's country when the contact has none.
COUNTRY_LANGUAGES = {
    "JP": "ja",
    "CN": "zh",
    "TW": "zh",
    "SG": "zh",
    "DE": "de",
    "AT": "de",
    "CH": "de",
    "FR": "fr",
    "BE": "fr",
    "LU": "fr",
}


class SurveyClosed(Conflict):
    """The survey cannot be answered (any more): ``reason`` is ``expired`` or ``answered``."""

    def __init__(self, message: str, *, reason: Literal["expired", "answered"]) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Contact:
    """Whom a survey asks."""

    key: str | None
    name: str | None
    email: str | None
    language: str


def key_of(settings: object) -> bytes:
    """The survey key (made at first use): ``survey.key_file`` or ``state_dir/survey.key``."""
    survey = survey_settings_of(settings)
    if survey.key_file is not None:
        return tokens.load_key(survey.key_file)
    state_dir = getattr(settings, "state_dir", None)
    if not isinstance(state_dir, Path):
        msg = "survey links need state_dir or survey.key_file"
        raise tokens.SurveyKeyError(msg)
    return tokens.load_key(state_dir / "survey.key")


def base_url(settings: object) -> str:
    """Where customers reach the server: ``public_url``, else ``http://host:port``."""
    public = getattr(settings, "public_url", None)
    if public:
        return str(public).rstrip("/")
    host = getattr(settings, "http_host", "127.0.0.1")
    return f"http://{host}:{getattr(settings, 'http_port', 8080)}"


def survey_url(settings: object, survey: Survey, key: bytes | None = None) -> str:
    """The survey's public link (``/survey/<token>``)."""
    token = tokens.token_for(key if key is not None else key_of(settings), survey.seed)
    return f"{base_url(settings)}/survey/{token}"


def touchpoints_of(incident: Incident) -> list[str]:
    """The touchpoints a case had: the call center (a call, web or mail case, or a phone
    fix), a remote fix (resolved remotely or a remote session used), an on-site visit
    (dispatched)."""
    found: set[str] = set()
    if incident.channel in ("phone", "web", "email") or incident.answered_at is not None:
        found.add("call_center")
    if incident.resolution == "phone":
        found.add("call_center")
    if incident.resolution == "remote" or incident.remote_session_used:
        found.add("remote_fix")
    if incident.resolution == "dispatch" or incident.dispatched_at is not None:
        found.add("on_site")
    return [t for t in TOUCHPOINTS if t in found]


def language_of(language: str | None, country: str | None) -> str:
    """A survey language: the contact's (``ja-JP`` reads ``ja``), else the country's, else en."""
    if language:
        primary = language.split("-")[0].split("_")[0].lower()
        if primary in LANGUAGES:
            return primary
    return COUNTRY_LANGUAGES.get((country or "").upper(), "en")


def contact_of(session: Session, incident: Incident) -> tuple[str | None, Contact]:
    """The customer number of the incident's device and whom its survey asks."""
    device = session.get(Device, incident.device_id)
    number = device.customer_number if device is not None else None
    customer = session.get(Customer, number) if number else None
    country = customer.country if customer is not None else None
    contacts = (
        list(
            session.exec(
                select(CustomerContact)
                .where(CustomerContact.customer_number == number)
                .order_by(col(CustomerContact.id))
            ).all()
        )
        if number
        else []
    )
    callers = {
        ani
        for ani in session.exec(select(Call.ani_e164).where(Call.incident_id == incident.id)).all()
        if ani
    }
    chosen = next((c for c in contacts if c.phone and c.phone in callers), None)
    chosen = chosen or next((c for c in contacts if c.email), None)
    chosen = chosen or (contacts[0] if contacts else None)
    if chosen is None:
        key = f"customer:{number}" if number else f"device:{incident.device_id}"
        return number, Contact(key=key, name=None, email=None, language=language_of(None, country))
    if chosen.email:
        key = chosen.email.lower()
    elif chosen.phone:
        key = chosen.phone
    else:
        key = f"contact:{chosen.id}"
    return number, Contact(
        key=key[:254],
        name=chosen.name,
        email=chosen.email,
        language=language_of(chosen.language, country),
    )


def survey_of_incident(session: Session, incident_id: int) -> Survey | None:
    """The incident's survey, if one was made."""
    return session.exec(select(Survey).where(Survey.incident_id == incident_id)).first()


def create_for_incident(
    session: Session, *, incident: Incident, settings: object, now: datetime | None = None
) -> Survey | None:
    """Make the closed incident's survey (commits), or ``None`` when none is due.

    None is made when surveys are off, the incident has one already, the case had no
    touchpoint, or its contact was asked within the quiet period.
    """
    config: SurveySettings = survey_settings_of(settings)
    if not config.enabled or incident.id is None or incident.closed_at is None:
        return None
    existing = survey_of_incident(session, incident.id)
    if existing is not None:
        return existing
    touchpoints = touchpoints_of(incident)
    if not touchpoints:
        logger.info("incident %s had no touchpoint: no survey", incident.id)
        return None
    now = now or utcnow()
    number, contact = contact_of(session, incident)
    quiet_since = now - timedelta(days=config.quiet_period_days)
    recent = session.exec(
        select(Survey.id).where(
            Survey.contact_key == contact.key,
            col(Survey.created_at) > quiet_since,
            col(Survey.demo).is_(False),
        )
    ).first()
    if recent is not None:
        logger.info("incident %s: its contact was asked within the quiet period", incident.id)
        return None
    key = key_of(settings)
    seed = tokens.new_seed()
    survey = Survey(
        incident_id=incident.id,
        seed=seed,
        token_hash=tokens.token_hash(tokens.token_for(key, seed)),
        created_at=now,
        expires_at=now + timedelta(days=config.expiry_days),
        customer_number=number,
        device_id=incident.device_id,
        contact_key=contact.key,
        contact_name=contact.name,
        contact_email=contact.email,
        language=contact.language,
        touchpoints=",".join(touchpoints),
    )
    session.add(survey)
    session.commit()
    session.refresh(survey)
    logger.info("survey %s made for incident %s", survey.id, incident.id)
    return survey


def find_survey(session: Session, token: str) -> Survey:
    """The survey of a link's token.

    Raises:
        NotFound: for a malformed or unknown token (the same answer for both).
    """
    if tokens.well_formed(token):
        survey = session.exec(
            select(Survey).where(Survey.token_hash == tokens.token_hash(token))
        ).first()
        if survey is not None and tokens.matches(token, survey.token_hash):
            return survey
    msg = "no such survey: check the link"
    raise NotFound(msg)


def check_open(survey: Survey, now: datetime | None = None) -> None:
    """Raise :class:`SurveyClosed` when the survey was answered or has expired."""
    if survey.answered_at is not None:
        msg = "this survey was answered already: thank you"
        raise SurveyClosed(msg, reason="answered")
    if (now or utcnow()) >= survey.expires_at:
        msg = "this survey has expired"
        raise SurveyClosed(msg, reason="expired")


def low_reasons(answer: SurveyAnswer) -> list[str]:
    """Why an answer needs a call back: a recommendation of 6 or less, a satisfaction of
    1-2 (empty: it does not)."""
    from server.models.survey import DETRACTOR_MAX, LOW_SATISFACTION

    reasons = []
    if answer.recommend <= DETRACTOR_MAX:
        reasons.append(f"recommend {answer.recommend}")
    for name in TOUCHPOINTS:
        score = answer.satisfaction.get(name)  # type: ignore[call-overload]
        if score is not None and score <= LOW_SATISFACTION:
            reasons.append(f"{name} {score}")
    return reasons


def record_answer(
    session: Session,
    *,
    token: str,
    answer: SurveyAnswer,
    settings: object,
    now: datetime | None = None,
) -> tuple[Survey, bool]:
    """Record the answer of a survey (commits); a low one opens a follow-up.

    Returns the survey and whether a follow-up was opened. The answer is written
    with ``... WHERE answered_at IS NULL``: of two answers at once, one wins.

    Raises:
        NotFound: for an unknown token.
        SurveyClosed: when it was answered already or has expired.
        InvalidInput: for a satisfaction about a touchpoint the case did not have.
    """
    from server.surveys.followups import open_followup

    now = now or utcnow()
    survey = find_survey(session, token)
    check_open(survey, now)
    asked = set(survey.touchpoints.split(","))
    extra = sorted(set(answer.satisfaction) - asked)
    if extra:
        msg = f"satisfaction: this case had no {', '.join(extra)}"
        raise InvalidInput(msg)
    comment = (answer.comment or "").strip() or None
    table = Survey.__table__  # type: ignore[attr-defined]
    values = {
        "answered_at": now,
        "recommend": answer.recommend,
        "comment": comment,
        **{f"csat_{name}": score for name, score in answer.satisfaction.items()},
    }
    written = session.execute(
        sa.update(table)
        .where(table.c.id == survey.id, table.c.answered_at.is_(None))
        .values(**values)
    )
    if written.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        msg = "this survey was answered already: thank you"
        raise SurveyClosed(msg, reason="answered")
    reasons = low_reasons(answer)
    if reasons:
        open_followup(session, survey=survey, reasons=reasons, settings=settings, now=now)
    session.commit()
    session.refresh(survey)
    logger.info("survey %s answered (follow-up: %s)", survey.id, bool(reasons))
    return survey, bool(reasons)


def after_close(session: Session, settings: object, incident: Incident) -> str | None:
    """An incident just closed: make its survey and answer its link (``None`` when no
    survey is due). Never fails the close, and never waits on SMTP: the survey row is
    the queue, e-mailed by the ``survey-mail`` upkeep job (woken here; it retries what
    it could not send) when a relay is configured."""
    try:
        survey = create_for_incident(session, incident=incident, settings=settings)
        if survey is None:
            return None
        if survey.sent_at is None:
            from server.surveys.mail import wake_mail_job

            wake_mail_job(session.get_bind())
        return survey_url(settings, survey)
    except (tokens.SurveyKeyError, sa.exc.SQLAlchemyError):
        session.rollback()
        logger.exception("no survey could be made for incident %s", incident.id)
        return None


def url_of_incident(session: Session, settings: object, incident_id: int) -> str | None:
    """The link of the incident's survey, if one was made."""
    survey = survey_of_incident(session, incident_id)
    if survey is None:
        return None
    try:
        return survey_url(settings, survey)
    except tokens.SurveyKeyError:
        logger.exception("the survey key is unusable")
        return None
