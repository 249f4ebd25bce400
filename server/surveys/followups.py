"""Follow-ups: the call back a low survey answer is owed, due within business hours.

A follow-up is due ``followup_due_hours`` business hours (Monday to Friday, UTC)
after the answer; an open one past that is overdue (counted on ``/metrics``).
Closing one records what was done, by whom, audited as ``followup.close``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from server import audit
from server.models import FollowUp, FollowUpPublic, Survey
from server.notify.events import followup_event, write_events
from server.scope import Scope
from server.surveys.config import survey_settings_of
from shared.errors import Conflict, NotFound
from shared.ids import utcnow

logger = logging.getLogger(__name__)

#: How long a low score stays on the customer's pages and the call pop-up.
RECENT_LOW_DAYS = 90


def add_business_hours(start: datetime, hours: float) -> datetime:
    """``start`` plus ``hours`` counted on weekdays only (UTC): Friday 17:00 + 24 h is
    Monday 17:00; a start at the weekend counts from Monday 00:00."""
    moment = start
    remaining = timedelta(hours=hours)
    while remaining > timedelta(0):
        if moment.weekday() >= 5:
            days = 7 - moment.weekday()
            moment = (moment + timedelta(days=days)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            continue
        midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        step = min(remaining, midnight - moment)
        moment += step
        remaining -= step
    return moment


def open_followup(
    session: Session, *, survey: Survey, reasons: Sequence[str], settings: object, now: datetime
) -> FollowUp:
    """Add the follow-up of a low answer (flushed, not committed)."""
    hours = survey_settings_of(settings).followup_due_hours
    followup = FollowUp(
        survey_id=survey.id or 0,
        incident_id=survey.incident_id,
        customer_number=survey.customer_number,
        device_id=survey.device_id,
        reason="; ".join(reasons)[:256],
        opened_at=now,
        due_at=add_business_hours(now, hours),
    )
    session.add(followup)
    session.flush()
    return followup


def to_public(followup: FollowUp, survey: Survey | None, now: datetime) -> FollowUpPublic:
    """The API's view of a follow-up, with the answer that opened it."""
    return FollowUpPublic(
        id=followup.id or 0,
        incident_id=followup.incident_id,
        customer_number=followup.customer_number,
        device_id=followup.device_id,
        reason=followup.reason,
        opened_at=followup.opened_at,
        due_at=followup.due_at,
        closed_at=followup.closed_at,
        closed_by=followup.closed_by,
        note=followup.note,
        state="closed" if followup.closed_at is not None else "open",
        overdue=followup.closed_at is None and now > followup.due_at,
        recommend=survey.recommend if survey is not None else None,
        comment=survey.comment if survey is not None else None,
        contact_name=survey.contact_name if survey is not None else None,
    )


def _event(followup: FollowUp, at: datetime, *, overdue: bool) -> dict[str, object]:
    return followup_event(
        followup.device_id,
        followup_id=int(followup.id or 0),
        incident_id=followup.incident_id,
        reason=followup.reason,
        due_at=followup.due_at,
        at=at,
        overdue=overdue,
    )


def mark_overdue(engine: Engine, now: datetime | None = None) -> int:
    """Tell the notification rules, once each, of the open follow-ups past their due time.

    A conditional update claims each (``overdue_at``), so several server processes
    tell of it once; its closing later tells the rules it is done. Returns how many.
    """
    now = now or utcnow()
    told = 0
    with Session(engine) as session:
        late = session.exec(
            select(FollowUp).where(
                col(FollowUp.closed_at).is_(None),
                col(FollowUp.overdue_at).is_(None),
                col(FollowUp.due_at) < now,
            )
        ).all()
        for followup in late:
            claimed = session.execute(
                sa.update(FollowUp)
                .where(col(FollowUp.id) == followup.id, col(FollowUp.overdue_at).is_(None))
                .values(overdue_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(claimed, "rowcount", 0) == 1:
                write_events(session.connection(), [_event(followup, now, overdue=True)])
                told += 1
        session.commit()
    return told


def in_scope(scope: Scope) -> sa.ColumnElement[bool]:
    """The condition that a follow-up's device or customer is in ``scope``."""
    return sa.or_(
        scope.where_device(col(FollowUp.device_id)),
        scope.where_customer(col(FollowUp.customer_number)),
    )


def list_followups(
    session: Session,
    *,
    state: str | None = None,
    customer_number: str | None = None,
    device_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
    now: datetime | None = None,
    scope: Scope | None = None,
) -> tuple[list[FollowUpPublic], int]:
    """A page of follow-ups (of the customers and devices in ``scope``), the soonest due
    first, and how many match in all."""
    conditions: list[sa.ColumnElement[bool]] = []
    if scope is not None and not scope.unrestricted:
        conditions.append(in_scope(scope))
    if state == "open":
        conditions.append(col(FollowUp.closed_at).is_(None))
    elif state == "closed":
        conditions.append(col(FollowUp.closed_at).is_not(None))
    if customer_number:
        conditions.append(col(FollowUp.customer_number) == customer_number)
    if device_id:
        conditions.append(col(FollowUp.device_id) == device_id)
    where = sa.and_(sa.true(), *conditions)
    total = session.exec(select(sa.func.count()).select_from(FollowUp).where(where)).one()
    rows = session.exec(
        select(FollowUp, Survey)
        .join(Survey, col(Survey.id) == col(FollowUp.survey_id))
        .where(where)
        .order_by(col(FollowUp.due_at), col(FollowUp.id))
        .limit(limit)
        .offset(offset)
    ).all()
    now = now or utcnow()
    return [to_public(f, s, now) for f, s in rows], int(total)


def close_followup(
    session: Session,
    *,
    followup_id: int,
    note: str,
    actor: str,
    source_ip: str | None = None,
    now: datetime | None = None,
    scope: Scope | None = None,
) -> FollowUpPublic:
    """Close an open follow-up with what was done (commits; audited ``followup.close``).

    Raises:
        NotFound: for an unknown follow-up, or one outside ``scope``.
        Conflict: when it is closed already.
    """
    followup = session.get(FollowUp, followup_id)
    if followup is not None and scope is not None and not scope.unrestricted:
        visible = session.exec(
            select(sa.func.count())
            .select_from(FollowUp)
            .where(col(FollowUp.id) == followup_id, in_scope(scope))
        ).one()
        followup = followup if visible else None
    if followup is None:
        msg = f"no follow-up {followup_id}"
        raise NotFound(msg)
    if followup.closed_at is not None:
        msg = f"follow-up {followup_id} is closed already"
        raise Conflict(msg)
    now = now or utcnow()
    followup.closed_at = now
    followup.closed_by = actor
    followup.note = note
    session.add(followup)
    if followup.overdue_at is not None:  # the rules heard it was overdue: now it is done
        write_events(session.connection(), [_event(followup, now, overdue=False)])
    audit.record(
        session,
        actor=actor,
        action="followup.close",
        target=f"followup:{followup_id}",
        details={
            "incident_id": followup.incident_id,
            "on_time": now <= followup.due_at,
            "note": note,
        },
        source_ip=source_ip,
    )
    session.commit()
    session.refresh(followup)
    logger.info("follow-up %s closed by %s", followup_id, actor)
    return to_public(followup, session.get(Survey, followup.survey_id), now)


def overdue_count(session: Session, now: datetime | None = None) -> int:
    """How many open follow-ups are past their due time."""
    now = now or utcnow()
    count = session.exec(
        select(sa.func.count())
        .select_from(FollowUp)
        .where(col(FollowUp.closed_at).is_(None), col(FollowUp.due_at) < now)
    ).one()
    return int(count)


@dataclass
class CustomerVoice:
    """What the customer's pages and the call pop-up show: a recent low score, open
    follow-ups."""

    low: Survey | None = None
    open_followups: list[FollowUpPublic] = field(default_factory=list)

    @property
    def any(self) -> bool:
        """Whether there is anything to show."""
        return self.low is not None or bool(self.open_followups)


def voice_of(
    session: Session,
    *,
    customer_number: str | None = None,
    device_id: str | None = None,
    now: datetime | None = None,
) -> CustomerVoice:
    """The newest low answer (last :data:`RECENT_LOW_DAYS` days) and the open follow-ups of
    a customer (or, without one, of a device)."""
    from server.models.survey import DETRACTOR_MAX, LOW_SATISFACTION

    now = now or utcnow()
    if customer_number:
        mine: sa.ColumnElement[bool] = col(Survey.customer_number) == customer_number
    elif device_id:
        mine = col(Survey.device_id) == device_id
    else:
        return CustomerVoice()
    low = sa.or_(
        col(Survey.recommend) <= DETRACTOR_MAX,
        *(
            col(getattr(Survey, f"csat_{name}")) <= LOW_SATISFACTION
            for name in ("call_center", "remote_fix", "on_site")
        ),
    )
    recent = session.exec(
        select(Survey)
        .where(
            mine,
            low,
            col(Survey.answered_at) >= now - timedelta(days=RECENT_LOW_DAYS),
            col(Survey.demo).is_(False),
        )
        .order_by(col(Survey.answered_at).desc())
        .limit(1)
    ).first()
    followups, _ = list_followups(
        session,
        state="open",
        customer_number=customer_number,
        device_id=None if customer_number else device_id,
        limit=10,
        now=now,
    )
    return CustomerVoice(low=recent, open_followups=followups)
