"""Recording incidents: create, update and close, list, link sessions, open from alerts.

Keyword-only functions on a database session, no HTTP in here. Every check
docs/kpis.md asks for answers an :class:`IncidentInvalid` that names the field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col, select

from server import audit
from server.config import ServerSettings
from server.crud import InvalidInput
from server.crud.conflicts import conflict_on_duplicate
from server.ingest.incidents import apply_fault_incidents
from server.kpi.config import KpiSettings, kpi_settings_of
from server.models import (
    Device,
    Incident,
    IncidentClose,
    IncidentCreate,
    IncidentEscalate,
    IncidentPublic,
    IncidentSession,
    IncidentUpdate,
    User,
)
from server.scope import EVERYTHING, Scope
from shared.errors import Conflict, NotFound
from shared.ids import utcnow

logger = logging.getLogger(__name__)

TimeField = Literal["opened_at", "closed_at"]


@dataclass(frozen=True)
class FieldProblem:
    """What is wrong with one field of an incident."""

    field: str
    message: str


class IncidentInvalid(InvalidInput):
    """An incident breaks a rule of docs/kpis.md; ``problems`` name each field."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = list(problems)


def check_incident(values: Mapping[str, Any]) -> list[FieldProblem]:
    """The rules between fields of a complete incident (``down_at`` already defaulted).

    Unknown resolution or channel values and missing or naive timestamps are
    the models' business; this checks what needs several fields at once.
    """
    problems: list[FieldProblem] = []
    opened_at = values.get("opened_at")
    down_at = values.get("down_at")
    restored_at = values.get("restored_at")
    closed_at = values.get("closed_at")
    answered_at = values.get("answered_at")
    if restored_at is not None and down_at is not None and restored_at < down_at:
        problems.append(FieldProblem("restored_at", "must not be before down_at"))
    if closed_at is not None:
        if opened_at is not None and closed_at < opened_at:
            problems.append(FieldProblem("closed_at", "must not be before opened_at"))
        if not values.get("resolution"):
            problems.append(FieldProblem("resolution", "is required to close an incident"))
        if restored_at is None:
            problems.append(FieldProblem("restored_at", "is required to close an incident"))
    if answered_at is not None and opened_at is not None and answered_at < opened_at:
        problems.append(FieldProblem("answered_at", "must not be before opened_at"))
    arrived_at = values.get("engineer_arrived_at")
    dispatched_at = values.get("dispatched_at")
    if arrived_at is not None and dispatched_at is not None and arrived_at < dispatched_at:
        problems.append(FieldProblem("engineer_arrived_at", "must not be before dispatched_at"))
    return problems


def _device_type(session: Session, device_id: str) -> str:
    device_type = session.exec(select(Device.type).where(Device.id == device_id)).first()
    if device_type is None:
        raise IncidentInvalid([FieldProblem("device_id", f"no device {device_id!r}")])
    return device_type


def _external_id_taken(session: Session, external_id: str, incident_id: int | None) -> bool:
    query = select(Incident.id).where(Incident.external_id == external_id)
    if incident_id is not None:
        query = query.where(Incident.id != incident_id)
    return session.exec(query).first() is not None


def _commit_or_conflict(session: Session, external_id: str | None) -> None:
    with conflict_on_duplicate(
        session, f"an incident with external_id {external_id!r} already exists"
    ):
        session.commit()


def create_incident(session: Session, *, data: IncidentCreate) -> Incident:
    """Record an incident; ``down_at`` defaults to ``opened_at``.

    Raises:
        IncidentInvalid: for an unknown device or fields that break docs/kpis.md's rules.
        Conflict: when ``external_id`` is taken.
    """
    values = data.model_dump()
    values["down_at"] = values["down_at"] or values["opened_at"]
    device_type = _device_type(session, data.device_id)
    if problems := check_incident(values):
        raise IncidentInvalid(problems)
    if data.external_id and _external_id_taken(session, data.external_id, None):
        msg = f"an incident with external_id {data.external_id!r} already exists"
        raise Conflict(msg)
    incident = Incident(**values, device_type=device_type)
    session.add(incident)
    _commit_or_conflict(session, data.external_id)
    session.refresh(incident)
    logger.info("incident %s recorded for device %s", incident.id, incident.device_id)
    return incident


def get_incident(session: Session, *, incident_id: int, scope: Scope = EVERYTHING) -> Incident:
    """The incident with that id.

    Raises:
        NotFound: when there is none, or its device lies outside ``scope``.
    """
    incident = session.get(Incident, incident_id)
    if incident is None or not (
        scope.unrestricted or scope.sees_device(session, incident.device_id)
    ):
        msg = f"no incident {incident_id}"
        raise NotFound(msg)
    return incident


def update_incident(session: Session, *, incident_id: int, data: IncidentUpdate) -> Incident:
    """Change the fields given (``exclude_unset``): record progress, close or reopen.

    Giving ``down_at: null`` sets it back to ``opened_at``; ``closed_at: null`` reopens.

    Raises:
        NotFound: for an unknown incident.
        IncidentInvalid: when the incident as changed would break docs/kpis.md's rules.
        Conflict: when the new ``external_id`` is taken.
    """
    incident = get_incident(session, incident_id=incident_id)
    changes = data.model_dump(exclude_unset=True)
    problems: list[FieldProblem] = []
    if "opened_at" in changes and changes["opened_at"] is None:
        problems.append(FieldProblem("opened_at", "cannot be removed"))
    if "remote_session_used" in changes and changes["remote_session_used"] is None:
        problems.append(FieldProblem("remote_session_used", "must be true or false"))
    if problems:
        raise IncidentInvalid(problems)
    values = incident.model_dump()
    values.update(changes)
    if values.get("down_at") is None:
        values["down_at"] = values["opened_at"]
    if problems := check_incident(values):
        raise IncidentInvalid(problems)
    external_id = values.get("external_id")
    if external_id and _external_id_taken(session, external_id, incident_id):
        msg = f"an incident with external_id {external_id!r} already exists"
        raise Conflict(msg)
    for name in (*changes, "down_at"):
        setattr(incident, name, values[name])
    incident.updated_at = utcnow()
    session.add(incident)
    _commit_or_conflict(session, external_id)
    session.refresh(incident)
    return incident


def close_incident(session: Session, *, incident_id: int, data: IncidentClose) -> Incident:
    """Close an open incident: the desk's one click (remote, phone, no_fault...).

    ``restored_at`` is the one given, else the one recorded, else
    ``restored_at_proposed`` (an alert-opened incident whose fault cleared).

    Raises:
        NotFound: for an unknown incident.
        Conflict: when it is closed already.
        IncidentInvalid: when no restore time is known, or the times break the rules.
    """
    incident = get_incident(session, incident_id=incident_id)
    if incident.closed_at is not None:
        msg = f"incident {incident_id} is closed already"
        raise Conflict(msg)
    restored_at = data.restored_at or incident.restored_at or incident.restored_at_proposed
    changes: dict[str, Any] = {
        "closed_at": data.closed_at or utcnow(),
        "resolution": data.resolution,
        "restored_at": restored_at,
    }
    for name in ("resolution_note", "dispatched_at", "engineer_arrived_at"):
        if (value := getattr(data, name)) is not None:
            changes[name] = value
    update = IncidentUpdate.model_validate(changes)
    return update_incident(session, incident_id=incident_id, data=update)


def escalate_incident(
    session: Session,
    *,
    incident_id: int,
    data: IncidentEscalate,
    actor: str,
    source_ip: str | None = None,
) -> Incident:
    """Hand an open incident to another tier and/or user, with a handover note (commits).

    The change and the note are audited (``incident.escalate``) in the same
    transaction as the change itself.

    Raises:
        NotFound: for an unknown incident.
        Conflict: when the incident is closed.
        IncidentInvalid: when neither ``tier`` nor ``assignee`` is given, or the
            assignee is not an enabled user.
    """
    incident = get_incident(session, incident_id=incident_id)
    if data.tier is None and data.assignee is None:
        raise IncidentInvalid([FieldProblem("tier", "give a tier, an assignee or both")])
    if incident.closed_at is not None:
        msg = f"incident {incident_id} is closed: reopen it before escalating"
        raise Conflict(msg)
    if data.assignee is not None:
        user = session.exec(select(User).where(User.username == data.assignee)).first()
        if user is None:
            raise IncidentInvalid([FieldProblem("assignee", "no such user")])
        if user.disabled:
            raise IncidentInvalid([FieldProblem("assignee", "this user is disabled")])
    before = {"tier": incident.tier, "assignee": incident.assignee}
    if data.tier is not None:
        incident.tier = data.tier
    if data.assignee is not None:
        incident.assignee = data.assignee
    incident.handover_note = data.note
    incident.updated_at = utcnow()
    session.add(incident)
    audit.record(
        session,
        actor=actor,
        action="incident.escalate",
        target=f"incident:{incident_id}",
        details={
            "from_tier": before["tier"],
            "tier": incident.tier,
            "from_assignee": before["assignee"],
            "assignee": incident.assignee,
            "note": data.note,
        },
        source_ip=source_ip,
    )
    session.commit()
    session.refresh(incident)
    logger.info(
        "incident %s escalated to tier %s, assignee %s",
        incident_id,
        incident.tier,
        incident.assignee,
    )
    return incident


def list_incidents(
    session: Session,
    *,
    device_id: str | None = None,
    customer: str | None = None,
    state: str | None = None,
    resolution: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    time_field: TimeField = "opened_at",
    limit: int = 100,
    offset: int = 0,
    assignee: str | None = None,
    scope: Scope = EVERYTHING,
) -> tuple[Sequence[Incident], int]:
    """A page of incidents (newest ``opened_at`` first) and how many match in all.

    ``start``/``end`` bound ``time_field`` to ``[start, end)``.
    """
    where = incident_filters(
        device_id=device_id,
        customer=customer,
        state=state,
        resolution=resolution,
        start=start,
        end=end,
        time_field=time_field,
        assignee=assignee,
        scope=scope,
    )
    total = session.exec(select(sa.func.count()).select_from(Incident).where(where)).one()
    rows = session.exec(
        select(Incident)
        .where(where)
        .order_by(col(Incident.opened_at).desc(), col(Incident.id).desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, int(total)


def incident_filters(
    *,
    device_id: str | None = None,
    customer: str | None = None,
    state: str | None = None,
    resolution: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    time_field: TimeField = "opened_at",
    assignee: str | None = None,
    scope: Scope = EVERYTHING,
) -> sa.ColumnElement[bool]:
    """The SQL condition the list and the CSV export share (within ``scope``'s devices)."""
    conditions: list[Any] = [scope.where_device(col(Incident.device_id))]
    if assignee:
        conditions.append(col(Incident.assignee) == assignee)
    if device_id:
        conditions.append(col(Incident.device_id) == device_id)
    if customer:
        conditions.append(
            col(Incident.device_id).in_(select(Device.id).where(Device.customer == customer))
        )
    if state == "open":
        conditions.append(col(Incident.closed_at).is_(None))
    elif state == "closed":
        conditions.append(col(Incident.closed_at).is_not(None))
    if resolution:
        conditions.append(col(Incident.resolution) == resolution)
    column = col(Incident.closed_at) if time_field == "closed_at" else col(Incident.opened_at)
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        conditions.append(column < end)
    return sa.and_(sa.true(), *conditions)


def session_ids_of(session: Session, incident_ids: Iterable[int]) -> dict[int, list[str]]:
    """The remote sessions linked to each of the incidents, oldest link first."""
    ids = list(incident_ids)
    linked: dict[int, list[str]] = {i: [] for i in ids}
    if not ids:
        return linked
    rows = session.exec(
        select(IncidentSession.incident_id, IncidentSession.session_id)
        .where(col(IncidentSession.incident_id).in_(ids))
        .order_by(col(IncidentSession.linked_at), col(IncidentSession.session_id))
    ).all()
    for incident_id, session_id in rows:
        linked[incident_id].append(session_id)
    return linked


def to_public(
    incident: Incident, session_ids: Sequence[str] = (), survey_url: str | None = None
) -> IncidentPublic:
    """The API's view of an incident (with its customer survey's link, when given)."""
    return IncidentPublic.model_validate(
        {
            **incident.model_dump(),
            "state": "closed" if incident.closed_at is not None else "open",
            "session_ids": list(session_ids),
            "survey_url": survey_url,
        }
    )


def link_session(session: Session, incident_id: int, session_id: str) -> Incident:
    """Record that remote session ``session_id`` served the incident (commits).

    Sets ``remote_session_used``; linking the same session twice changes nothing.

    Raises:
        NotFound: for an unknown incident.
    """
    incident = get_incident(session, incident_id=incident_id)
    exists = session.get(IncidentSession, (incident_id, session_id))
    if exists is None:
        session.add(IncidentSession(incident_id=incident_id, session_id=session_id))
    if not incident.remote_session_used:
        incident.remote_session_used = True
        incident.updated_at = utcnow()
        session.add(incident)
    session.commit()
    session.refresh(incident)
    return incident


def _open_alert_incident(session: Session, device_id: str, code: str) -> Incident | None:
    return session.exec(
        select(Incident).where(
            Incident.device_id == device_id,
            Incident.error_code == code,
            Incident.channel == "alert",
            col(Incident.closed_at).is_(None),
        )
    ).first()


def open_incident_for_alert(
    session: Session,
    device_id: str,
    code: str,
    message: str,
    raised_at: datetime,
    settings: ServerSettings | KpiSettings,
) -> Incident | None:
    """Open an incident (channel ``alert``) for a device fault, when so configured.

    The fault's time is ``down_at`` and ``opened_at``. While an incident opened
    by the same device and fault code is still open, that one is returned and
    no second one is opened: the insert is the ingest's idempotent one
    (:func:`server.ingest.incidents.apply_fault_incidents`, on a unique index),
    so this holds across processes too. Commits.

    Args:
        settings: the server's settings (``settings.kpi``) or a :class:`KpiSettings`.

    Returns:
        The new or still open incident, or ``None`` when alerts do not open incidents.
    """
    if not kpi_settings_of(settings).alerts_open_incidents:
        return None
    if raised_at.tzinfo is None:
        raised_at = raised_at.replace(tzinfo=UTC)
    _device_type(session, device_id)
    fault = {
        "device_id": device_id,
        "source": "device",
        "code": code,
        "severity": "error",
        "message": message,
        "raised_at": raised_at,
        "cleared_at": None,
        "open": True,
    }
    # The ingest's own statement: one INSERT ... ON CONFLICT on the unique index.
    apply_fault_incidents(session.connection(), [fault], [])
    session.commit()
    incident = _open_alert_incident(session, device_id, code[:128])
    if incident is not None:
        logger.info("incident %s open for fault %s of device %s", incident.id, code, device_id)
    return incident
