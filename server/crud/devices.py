"""Devices in the registry: add, get, and the fleet list with its search and filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, or_, select

from server.crud.conflicts import conflict_on_duplicate
from server.crud.errors import InvalidInput
from server.models import Device, DeviceCreate
from server.scope import EVERYTHING, Scope
from shared.errors import Conflict, NotFound
from shared.ids import check_device_id, derive_device_id


def add_device(session: Session, *, data: DeviceCreate, actor: str = "system") -> Device:
    """Insert a device (flushed, not committed); its id is derived from type and serial if absent.

    It belongs to ``customer_number``'s customer, or the one named ``customer``
    (created when new: see :func:`server.crud.customers.customer_for_device`).

    Raises:
        Conflict: when the id is taken.
        InvalidInput: an unknown ``customer_number``, an invalid ``contact_phone``, or
            ``via`` naming no usable gateway.
    """
    from server.crud.customers import customer_for_device, device_phone

    device_id = check_device_id(data.id) if data.id else derive_device_id(data.type, data.serial)
    if session.get(Device, device_id) is not None:
        msg = f"device {device_id!r} already exists"
        raise Conflict(msg)
    if data.via is not None:
        check_gateway(session, device_id=device_id, via=data.via)
    customer = customer_for_device(session, data, actor=actor)
    phone = device_phone(session, customer, data)
    device = Device(
        **data.model_dump(exclude={"id", "customer", "customer_number"}),
        id=device_id,
        customer=customer.name,
        customer_number=customer.number,
        contact_phone_e164=phone,
    )
    session.add(device)
    with conflict_on_duplicate(session, f"device {device_id!r} already exists"):
        session.flush()
    return device


def check_gateway(session: Session, *, device_id: str, via: str) -> Device:
    """The gateway ``via`` that is to watch ``device_id``: registered, and watched by nobody.

    Raises:
        InvalidInput: when it is the device itself, unknown, or itself watched via a gateway.
    """
    if via == device_id:
        msg = f"via: a device cannot be watched through itself ({via!r})"
        raise InvalidInput(msg)
    gateway = session.get(Device, via)
    if gateway is None:
        msg = f"via: no registered gateway {via!r} (register the gateway's own device first)"
        raise InvalidInput(msg)
    if gateway.via is not None:
        msg = (
            f"via: {via!r} is itself watched through {gateway.via!r}; "
            "a gateway must run its own agent"
        )
        raise InvalidInput(msg)
    if gateway.revoked_at is not None:
        msg = f"via: gateway {via!r} is revoked"
        raise InvalidInput(msg)
    return gateway


def watched_by(session: Session, *, gateway_id: str) -> Sequence[Device]:
    """The devices a gateway watches, by id."""
    return session.exec(
        select(Device).where(Device.via == gateway_id).order_by(col(Device.id))
    ).all()


def create_device(session: Session, *, data: DeviceCreate) -> Device:
    """Register a device without an enrollment token (imports, tests).

    Raises:
        Conflict: when the id is taken.
    """
    device = add_device(session, data=data)
    session.commit()
    session.refresh(device)
    return device


def get_device(session: Session, *, device_id: str) -> Device:
    """The device with that id.

    Raises:
        NotFound: when there is none.
    """
    device = session.get(Device, device_id)
    if device is None:
        msg = f"no device {device_id!r}"
        raise NotFound(msg)
    return device


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def list_devices(
    session: Session,
    *,
    q: str | None = None,
    online: bool | None = None,
    device_type: str | None = None,
    customer: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
    scope: Scope = EVERYTHING,
) -> tuple[Sequence[Device], int]:
    """A page of devices matching the filters, and how many match in all.

    ``q`` matches id, serial, customer and site by substring (case-insensitive),
    and the contact phone by its digits, so "+49 30 1234" finds "0049-30-1234".
    """
    conditions: list[Any] = [scope.devices()]
    if q:
        # ``%`` and ``_`` in the search are literal characters, not wildcards.
        literal = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{literal}%"
        options = [
            func.lower(Device.id).like(pattern, escape="\\"),
            func.lower(Device.serial).like(pattern, escape="\\"),
            func.lower(Device.customer).like(pattern, escape="\\"),
            func.lower(func.coalesce(Device.site, "")).like(pattern, escape="\\"),
        ]
        digits = _digits(q)
        if len(digits) >= 3:
            phone: Any = func.coalesce(Device.contact_phone, "")
            for ch in " +-()/.":
                phone = func.replace(phone, ch, "")
            options.append(phone.like(f"%{digits.lstrip('0') or digits}%"))
        conditions.append(or_(*options))
    if online is not None:
        conditions.append(col(Device.online).is_(online))
    if device_type:
        conditions.append(Device.type == device_type)
    if customer:
        conditions.append(Device.customer == customer)
    if status:
        conditions.append(Device.status == status)
    where = sa.and_(sa.true(), *conditions)
    total = session.exec(select(func.count()).select_from(Device).where(where)).one()
    rows = session.exec(
        select(Device).where(where).order_by(col(Device.id)).limit(limit).offset(offset)
    ).all()
    return rows, int(total)
