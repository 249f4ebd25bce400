"""A year of demo survey answers on the demo incidents, labelled as such (``demo``).

Remote fixes score higher than dispatches (customers notice the minutes saved): a
remote case's recommendation centres near 9, a dispatch's near 7, a phone fix's
near 8.5; about 40 % answer. Low answers get their follow-up, most closed in time.
Demo surveys have no usable link (their seed is not a real token's) and never
count for the quiet period or the e-mails.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from server.models import FollowUp, Incident, Survey
from server.surveys.followups import add_business_hours
from server.surveys.records import touchpoints_of
from shared.ids import utcnow

logger = logging.getLogger(__name__)

#: Mean recommendation (0-10) and satisfaction (1-5) by resolution.
_RECOMMEND = {"remote": 9.0, "phone": 8.4, "dispatch": 6.9, "no_fault": 8.0}
_SATISFACTION = {"remote": 4.5, "phone": 4.2, "dispatch": 3.4, "no_fault": 4.0}
RESPONSE_RATE = 0.4


def _score(rng: random.Random, mean: float, low: int, high: int, spread: float) -> int:
    return max(low, min(high, round(rng.gauss(mean, spread))))


def seed_demo_surveys(session: Session, seed: int = 0, now: datetime | None = None) -> int:
    """Survey the closed demo incidents (``external_id`` ``demo-...``) that have none yet;
    commits. Returns how many surveys were recorded."""
    rng = random.Random(seed)  # noqa: S311  (demo data, reproducible by seed)
    now = now or utcnow()
    incident_table = Incident.__table__  # type: ignore[attr-defined]
    survey_table = Survey.__table__  # type: ignore[attr-defined]
    rows = session.exec(
        sa.select(Incident)  # type: ignore[call-overload]
        .where(
            incident_table.c.external_id.like("demo-%"),
            incident_table.c.closed_at.is_not(None),
            ~incident_table.c.id.in_(sa.select(survey_table.c.incident_id)),
        )
        .order_by(incident_table.c.id)
    ).all()
    surveys: list[dict[str, Any]] = []
    answered: list[tuple[dict[str, Any], Incident]] = []
    for (incident,) in rows:
        touchpoints = touchpoints_of(incident)
        if not touchpoints or incident.closed_at is None:
            continue
        created = incident.closed_at
        survey: dict[str, Any] = {
            "incident_id": incident.id,
            "seed": f"demo-{incident.id}",
            "token_hash": f"demo-{incident.id}",
            "created_at": created,
            "expires_at": created + timedelta(days=30),
            "device_id": incident.device_id,
            "language": "en",
            "touchpoints": ",".join(touchpoints),
            "sent_at": created,
            "demo": True,
            # Every row names every column: one executemany takes the first row's keys.
            "answered_at": None,
            "recommend": None,
            "csat_call_center": None,
            "csat_remote_fix": None,
            "csat_on_site": None,
            "comment": None,
        }
        resolution = incident.resolution or "phone"
        answered_at = created + timedelta(hours=rng.uniform(1, 96))
        if rng.random() < RESPONSE_RATE and answered_at < now:
            survey["answered_at"] = answered_at
            survey["recommend"] = _score(rng, _RECOMMEND[resolution], 0, 10, 1.6)
            for touchpoint in touchpoints:
                mean = _SATISFACTION[resolution] if touchpoint != "call_center" else 4.1
                survey[f"csat_{touchpoint}"] = _score(rng, mean, 1, 5, 0.8)
            survey["comment"] = "[demo] answer"
            answered.append((survey, incident))
        surveys.append(survey)
    if surveys:
        session.execute(sa.insert(survey_table), surveys)
        session.flush()
    ids = dict(
        session.execute(
            sa.select(survey_table.c.incident_id, survey_table.c.id).where(
                survey_table.c.demo.is_(True)
            )
        ).all()
    )
    followups: list[dict[str, Any]] = []
    for survey, incident in answered:
        scores = [survey.get(f"csat_{t}") for t in ("call_center", "remote_fix", "on_site")]
        low = survey["recommend"] <= 6 or any(s is not None and s <= 2 for s in scores)
        if not low:
            continue
        opened = survey["answered_at"]
        due = add_business_hours(opened, 24)
        closed = opened + timedelta(hours=rng.uniform(2, 40))
        followups.append(
            {
                "survey_id": ids[incident.id],
                "incident_id": incident.id,
                "customer_number": None,
                "device_id": incident.device_id,
                "reason": f"recommend {survey['recommend']}",
                "opened_at": opened,
                "due_at": due,
                "closed_at": closed if closed < now else None,
                "closed_by": "demo" if closed < now else None,
                "note": "[demo] called back" if closed < now else None,
            }
        )
    if followups:
        session.execute(sa.insert(FollowUp.__table__), followups)  # type: ignore[attr-defined]
    session.commit()
    logger.info("recorded %d demo surveys (%d answered)", len(surveys), len(answered))
    return len(surveys)
