"""Sending surveys: an e-mail to the case's contact in their language, one reminder,
or a CSV of links for the customer's own mailer.

E-mail goes through ``[server.smtp]`` (:mod:`server.mail`, the one place that speaks
SMTP); with no relay configured, the links are exported as CSV.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server.incidents.csv_io import neutralize
from server.mail import MailError, SmtpSettings, send_mail_blocking
from server.models import Survey
from server.surveys import records
from server.surveys.config import survey_settings_of
from server.surveys.i18n import gettext
from shared.errors import ConfigError
from shared.ids import utcnow

if TYPE_CHECKING:
    from server.upkeep import Job, Upkeep

logger = logging.getLogger(__name__)

CSV_HEADER = (
    "incident_id",
    "contact_name",
    "contact_email",
    "language",
    "survey_url",
    "expires_at",
    "sent_at",
    "reminded_at",
)


def compose(survey: Survey, url: str, *, reminder: bool = False) -> tuple[str, str]:
    """The survey e-mail (or its reminder) in the survey's language: subject and body."""
    language = survey.language
    case = f"#{survey.incident_id}"
    subject = (
        gettext(language, "Reminder: how did we do? Your service case %(case)s", case=case)
        if reminder
        else gettext(language, "How did we do? Your service case %(case)s", case=case)
    )
    greeting = (
        gettext(language, "Hello %(name)s,", name=survey.contact_name)
        if survey.contact_name
        else gettext(language, "Hello,")
    )
    lines = [greeting, ""]
    if reminder:
        lines += [gettext(language, "A reminder: we would still like to hear from you."), ""]
    lines += [
        gettext(language, "Your service case %(case)s was closed.", case=case),
        gettext(language, "Would you tell us how we did? It takes a minute:"),
        "",
        url,
        "",
        gettext(
            language,
            "The link works until %(date)s and can be answered once.",
            date=survey.expires_at.strftime("%Y-%m-%d"),
        ),
        "",
        gettext(language, "Thank you,"),
        gettext(language, "Your service team"),
    ]
    return subject, "\n".join(lines)


def _smtp(settings: object) -> SmtpSettings | None:
    smtp = getattr(settings, "smtp", None)
    return smtp if isinstance(smtp, SmtpSettings) and smtp.host else None


def deliver(session: Session, settings: object, survey: Survey, *, reminder: bool) -> bool:
    """E-mail the survey (or its reminder) through ``[server.smtp]`` and record when
    (commits); False when it could not be sent (logged; the link stays in the CSV export)."""
    smtp = _smtp(settings)
    if smtp is None or not survey.contact_email:
        return False
    if not _lease(session, survey, reminder=reminder):
        return False  # another server process is sending it, or has sent it
    subject, body = compose(survey, records.survey_url(settings, survey), reminder=reminder)
    try:
        send_mail_blocking(smtp, [survey.contact_email], subject, body)
    except (MailError, ConfigError) as exc:
        logger.warning("survey %s could not be e-mailed: %s", survey.id, exc)
        survey.mail_lease_until = None
        session.add(survey)
        session.commit()
        return False
    if reminder:
        survey.reminded_at = utcnow()
    else:
        survey.sent_at = utcnow()
    survey.mail_lease_until = None
    session.add(survey)
    session.commit()
    return True


def _lease(session: Session, survey: Survey, *, reminder: bool) -> bool:
    """Take the survey for this process's send (a conditional update: of several server
    processes, one takes it); False when it was sent meanwhile or is leased elsewhere."""
    now = utcnow()
    not_yet = col(Survey.reminded_at).is_(None) if reminder else col(Survey.sent_at).is_(None)
    free = sa.or_(col(Survey.mail_lease_until).is_(None), col(Survey.mail_lease_until) < now)
    taken = session.execute(
        sa.update(Survey)
        .where(col(Survey.id) == survey.id, not_yet, free)
        .values(mail_lease_until=now + MAIL_LEASE)
    )
    session.commit()
    if not taken.rowcount:  # type: ignore[attr-defined]
        return False
    session.refresh(survey)
    return True


def send_due(session: Session, settings: object, now: datetime | None = None) -> tuple[int, int]:
    """Send the surveys not sent yet and the one reminder of those unanswered for
    ``reminder_after_days``; returns ``(sent, reminded)``."""
    config = survey_settings_of(settings)
    if _smtp(settings) is None:
        return 0, 0
    now = now or utcnow()
    open_ = (
        col(Survey.answered_at).is_(None),
        col(Survey.expires_at) > now,
        col(Survey.contact_email).is_not(None),
        col(Survey.demo).is_(False),
    )
    unsent = session.exec(select(Survey).where(*open_, col(Survey.sent_at).is_(None))).all()
    sent = sum(deliver(session, settings, s, reminder=False) for s in unsent)
    due = now - timedelta(days=config.reminder_after_days)
    to_remind = session.exec(
        select(Survey).where(*open_, col(Survey.sent_at) <= due, col(Survey.reminded_at).is_(None))
    ).all()
    reminded = sum(deliver(session, settings, s, reminder=True) for s in to_remind)
    return sent, reminded


def links_csv_rows(session: Session, settings: object, *, state: str) -> Iterator[list[str]]:
    """The survey links for a mailer, with :data:`CSV_HEADER` first."""
    yield list(CSV_HEADER)
    now = utcnow()
    query = select(Survey).where(col(Survey.demo).is_(False)).order_by(col(Survey.id))
    if state in ("open", "unsent"):
        query = query.where(col(Survey.answered_at).is_(None), col(Survey.expires_at) > now)
    if state == "unsent":
        query = query.where(col(Survey.sent_at).is_(None))
    key = records.key_of(settings)
    for survey in session.exec(query).all():
        yield [
            str(survey.incident_id),
            neutralize(survey.contact_name or ""),
            neutralize(survey.contact_email or ""),
            survey.language,
            records.survey_url(settings, survey, key),
            survey.expires_at.isoformat(),
            survey.sent_at.isoformat() if survey.sent_at else "",
            survey.reminded_at.isoformat() if survey.reminded_at else "",
        ]


#: The upkeep job that e-mails new surveys and the one reminder (when a relay is set).
MAIL_JOB = "survey-mail"
#: How long a process holds a survey it is e-mailing (a relay answers well within it).
MAIL_LEASE = timedelta(minutes=5)
#: How to wake each database's mail job (set by :func:`add_mail_job`), for closing requests.
_WAKERS: weakref.WeakKeyDictionary[object, Callable[[], None]] = weakref.WeakKeyDictionary()


def add_mail_job(upkeep: Upkeep, engine: Engine, settings: object) -> None:
    """Register :func:`mail_job` with the upkeep; :func:`wake_mail_job` runs it at once."""
    upkeep.add(mail_job(engine, settings))
    _WAKERS[engine] = functools.partial(upkeep.wake, MAIL_JOB)


def wake_mail_job(engine: object) -> None:
    """Have the mail job send new surveys now (from any thread; nothing without a job).

    A survey just made waits as a row (``sent_at`` unset); the job e-mails it in its
    own thread, so the request that closed the incident never waits on SMTP.
    """
    wake = _WAKERS.get(engine)
    if wake is not None:
        wake()


def mail_job(engine: Engine, settings: object, interval_s: float = 600.0) -> Job:
    """The periodic job sending what :func:`send_due` finds, in a thread (smtplib blocks):
    new surveys (woken by :func:`wake_mail_job`) and, every ``interval_s``, reminders and
    the ones that could not be sent before."""
    import asyncio

    from server.upkeep import Job

    def run_once() -> tuple[int, int]:
        with Session(engine, expire_on_commit=False) as session:
            return send_due(session, settings)

    async def run() -> tuple[int, int]:
        return await asyncio.to_thread(run_once)

    return Job(MAIL_JOB, interval_s, run, at_start=False)
