"""Who is calling: match a caller's number (ANI) to devices and customers; record the call.

A number matches a device's own ``contact_phone_e164`` and the phones of its
customer's contacts. Both columns hold E.164, so a lookup is two indexed
equality queries, whatever notation the phone system sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from server import audit
from server.crud.customers import get_customer
from server.crud.devices import get_device
from server.crud.errors import InvalidInput
from server.crud.phones import require_e164, to_e164
from server.incidents import records as incidents
from server.models import (
    Call,
    CallCreate,
    CallPublic,
    CallUpdate,
    Customer,
    CustomerContact,
    Device,
    Incident,
    IncidentCreate,
)
from server.scope import EVERYTHING, Scope
from shared.errors import Conflict, NotFound
from shared.ids import utcnow

#: Most devices a lookup returns (a customer with a large fleet: the customer page lists them).
LOOKUP_DEVICES = 50
#: Most open incidents a lookup returns.
LOOKUP_INCIDENTS = 50


@dataclass
class Match:
    """What a caller's number matched."""

    ani_e164: str | None
    customer: Customer | None = None
    devices: list[Device] = field(default_factory=list)
    open_incidents: list[Incident] = field(default_factory=list)
    #: Every customer the number matched (more than one: ``customer`` is ``None``).
    customer_numbers: list[str] = field(default_factory=list)


def lookup(
    session: Session,
    *,
    ani: str,
    customer_number: str | None = None,
    default_region: str | None = None,
    strict: bool = True,
    scope: Scope = EVERYTHING,
) -> Match:
    """The customer, devices and open incidents a caller's number (and keyed-in number) match.

    ``ani`` is read in the keyed-in customer's country, else ``default_region``.
    A keyed-in customer number narrows the match to that customer; when the
    number matches none of its phones, the customer alone is the match.

    Raises:
        InvalidInput: naming ``ani`` when it is no valid number and ``strict``.

    Only what lies in ``scope`` matches (a keyed-in customer outside it is ignored).
    """
    keyed = session.get(Customer, customer_number) if customer_number else None
    if keyed is not None and not scope.sees_customer(session, keyed.number):
        keyed = None
    region = (keyed.country if keyed else None) or default_region
    e164 = require_e164(ani, region, field="ani") if strict else to_e164(ani, region)
    match = Match(ani_e164=e164)
    devices: list[Device] = []
    numbers: set[str] = set()
    if e164 is not None:
        query = select(Device).where(Device.contact_phone_e164 == e164, scope.devices())
        if keyed is not None:
            query = query.where(Device.customer_number == keyed.number)
        devices = list(session.exec(query.order_by(col(Device.id)).limit(LOOKUP_DEVICES)).all())
        numbers = {d.customer_number for d in devices if d.customer_number}
        contacts = select(CustomerContact.customer_number).where(
            CustomerContact.phone == e164,
            scope.where_customer(col(CustomerContact.customer_number)),
        )
        if keyed is not None:
            contacts = contacts.where(CustomerContact.customer_number == keyed.number)
        numbers |= set(session.exec(contacts.distinct().limit(LOOKUP_DEVICES)).all())
    if keyed is not None and not numbers:
        numbers = {keyed.number}
    match.customer_numbers = sorted(numbers)
    if len(numbers) == 1:
        match.customer = session.get(Customer, next(iter(numbers)))
        if not devices and match.customer is not None:
            devices = list(
                session.exec(
                    select(Device)
                    .where(Device.customer_number == match.customer.number, scope.devices())
                    .order_by(col(Device.id))
                    .limit(LOOKUP_DEVICES)
                ).all()
            )
    match.devices = devices
    if devices:
        match.open_incidents = list(session.exec(open_incidents_of([d.id for d in devices])).all())
    return match


def open_incidents_of(
    device_ids: Sequence[str] | SelectOfScalar[str],
) -> SelectOfScalar[Incident]:
    """The newest open incidents of these devices, found through ``device_id``'s index.

    "Open" is written so that no index can serve it: without statistics SQLite
    would rather walk every open incident (the ``closed_at`` index) and filter
    them by device, 10,000 rows at a million incidents, than the few of each device.
    """
    still_open = sa.case((col(Incident.closed_at).is_(None), 1), else_=0) == 1
    return (
        select(Incident)
        .where(col(Incident.device_id).in_(device_ids), still_open)
        .order_by(col(Incident.opened_at).desc())
        .limit(LOOKUP_INCIDENTS)
    )


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
