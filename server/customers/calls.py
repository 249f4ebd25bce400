"""Incoming calls: record them, link them to incidents, list them.

Matching a caller's number to devices and customers is :mod:`server.customers.lookup`
(re-exported here for the routes and commands that use both).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from server import audit
from server.crud.customers import get_customer
from server.crud.devices import get_device
from server.crud.errors import InvalidInput
from server.crud.phones import to_e164
from server.customers.lookup import Match as Match
from server.customers.lookup import customer_details as customer_details
from server.customers.lookup import lookup as lookup
from server.customers.lookup import open_incidents_of as open_incidents_of
from server.incidents import records as incidents
from server.models import (
    Call,
    CallCreate,
    CallPublic,
    CallUpdate,
    Incident,
    IncidentCreate,
)
from server.scope import EVERYTHING, Scope
from shared.errors import Conflict, NotFound
from shared.ids import utcnow


def record_call(
    session: Session,
    *,
    ani: str,
    ani_e164: str | None,
    operator: str | None,
    customer_number: str | None = None,
    device_id: str | None = None,
    external_id: str | None = None,
    started_at: datetime | None = None,
    answered_at: datetime | None = None,
    ended_at: datetime | None = None,
) -> Call:
    """Record a call (committed, audited without the caller's number)."""
    call = Call(
        ani=ani.replace("\x00", "")[:64],
        ani_e164=ani_e164,
        operator=operator,
        customer_number=customer_number,
        device_id=device_id,
        external_id=external_id.replace("\x00", "") or None if external_id else None,
        started_at=started_at or utcnow(),
        answered_at=answered_at,
        ended_at=ended_at,
    )
    session.add(call)
    session.flush()
    audit.record(
        session,
        actor=operator or audit.SYSTEM_ACTOR,
        action="call.record",
        target=f"call:{call.id}",
        details={"customer": customer_number, "device": device_id, "external_id": external_id},
    )
    session.commit()
    session.refresh(call)
    return call


def create_call(
    session: Session,
    *,
    data: CallCreate,
    operator: str,
    default_region: str | None,
    scope: Scope = EVERYTHING,
) -> Call:
    """Record a call a phone system reports (``POST /api/v1/calls``).

    Raises:
        NotFound: an unknown customer or device, or one outside ``scope``.
    """
    region = default_region
    _check_in_scope(session, scope, data.customer_number, data.device_id)
    if data.customer_number is not None:
        region = get_customer(session, number=data.customer_number).country or region
    if data.device_id is not None:
        get_device(session, device_id=data.device_id)
    started = data.started_at or utcnow()
    for name in ("answered_at", "ended_at"):
        when = getattr(data, name)
        if when is not None and when < started:
            msg = f"{name}: before the call started"
            raise InvalidInput(msg)
    return record_call(
        session,
        ani=data.ani,
        ani_e164=to_e164(data.ani, region),
        operator=operator,
        customer_number=data.customer_number,
        device_id=data.device_id,
        external_id=data.external_id,
        started_at=started,
        answered_at=data.answered_at,
        ended_at=data.ended_at,
    )


def _check_in_scope(
    session: Session, scope: Scope, customer_number: str | None, device_id: str | None
) -> None:
    if customer_number is not None and not scope.sees_customer(session, customer_number):
        msg = f"no customer {customer_number!r}"
        raise NotFound(msg)
    scope.check_device(session, device_id)


def get_call(session: Session, *, call_id: int, scope: Scope = EVERYTHING) -> Call:
    """The call with that id.

    Raises:
        NotFound: when there is none, or it lies outside ``scope``.
    """
    call = session.get(Call, call_id)
    if call is not None and not scope.unrestricted:
        visible = select(col(Call.id)).where(
            col(Call.id) == call_id,
            scope.where_call(col(Call.device_id), col(Call.customer_number)),
        )
        if session.exec(visible).first() is None:
            call = None
    if call is None:
        msg = f"no call {call_id}"
        raise NotFound(msg)
    return call


def update_call(
    session: Session,
    *,
    call_id: int,
    data: CallUpdate,
    actor: str,
    scope: Scope = EVERYTHING,
) -> Call:
    """Set a call's customer, device, answer or end time, or incident (committed, audited).

    Raises:
        NotFound: an unknown call, customer, device or incident (or one outside ``scope``).
        InvalidInput: a time before the call started.
    """
    call = get_call(session, call_id=call_id, scope=scope)
    changes = data.model_dump(exclude_unset=True)
    _check_in_scope(session, scope, changes.get("customer_number"), changes.get("device_id"))
    if changes.get("incident_id") is not None:
        incidents.get_incident(session, incident_id=changes["incident_id"], scope=scope)
    if changes.get("customer_number") is not None:
        get_customer(session, number=changes["customer_number"])
    if changes.get("device_id") is not None:
        get_device(session, device_id=changes["device_id"])
    if changes.get("incident_id") is not None:
        incidents.get_incident(session, incident_id=changes["incident_id"])
    for name in ("answered_at", "ended_at"):
        when = changes.get(name)
        if when is not None and when < call.started_at:
            msg = f"{name}: before the call started"
            raise InvalidInput(msg)
    for name, value in changes.items():
        setattr(call, name, value)
    session.add(call)
    audit.record(
        session,
        actor=actor,
        action="call.update",
        target=f"call:{call.id}",
        details={k: str(v) for k, v in changes.items()},
    )
    session.commit()
    session.refresh(call)
    return call


def list_calls(
    session: Session,
    *,
    customer_number: str | None = None,
    device_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
    scope: Scope = EVERYTHING,
) -> tuple[Sequence[Call], int]:
    """A page of calls (those in ``scope``), newest first, and how many match."""
    from sqlmodel import func

    in_scope = scope.where_call(col(Call.device_id), col(Call.customer_number))
    query = select(Call).where(in_scope)
    counted = select(func.count()).select_from(Call).where(in_scope)
    if customer_number:
        query = query.where(Call.customer_number == customer_number)
        counted = counted.where(Call.customer_number == customer_number)
    if device_id:
        query = query.where(Call.device_id == device_id)
        counted = counted.where(Call.device_id == device_id)
    total = session.exec(counted).one()
    rows = session.exec(
        query.order_by(col(Call.started_at).desc(), col(Call.id).desc()).limit(limit).offset(offset)
    ).all()
    return rows, int(total)


def open_incident_from_call(
    session: Session,
    *,
    call_id: int,
    device_id: str | None,
    symptom: str | None,
    error_code: str | None,
    down_at: datetime | None,
    actor: str,
    scope: Scope = EVERYTHING,
) -> Incident:
    """Open an incident for a call: opened when the call came, answered when it was answered.

    A call not yet marked answered is answered now (the operator is on it).

    Raises:
        NotFound: an unknown call or device.
        Conflict: the call has an incident already.
        InvalidInput: no device given nor known from the call.
    """
    call = get_call(session, call_id=call_id, scope=scope)
    if call.incident_id is not None:
        msg = f"call {call_id} already has incident {call.incident_id}"
        raise Conflict(msg)
    device = device_id or call.device_id
    if not device:
        msg = "device_id: which device is the call about?"
        raise InvalidInput(msg)
    get_device(session, device_id=device)
    scope.check_device(session, device)
    answered = call.answered_at or utcnow()
    incident = incidents.create_incident(
        session,
        data=IncidentCreate(
            device_id=device,
            opened_at=call.started_at,
            answered_at=answered,
            down_at=down_at,
            channel="phone",
            symptom=symptom,
            error_code=error_code,
        ),
    )
    call.answered_at = answered
    call.device_id = device
    call.incident_id = incident.id
    session.add(call)
    audit.record(
        session,
        actor=actor,
        action="call.incident",
        target=f"call:{call.id}",
        details={"incident": incident.id, "device": device},
    )
    session.commit()
    return incident


def call_public(call: Call) -> CallPublic:
    """A call as the API shows it."""
    return CallPublic.model_validate(call, from_attributes=True)
