"""Customers: create, find, list; which customer a newly registered device belongs to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, or_, select

from server import audit
from server.crud.phones import require_e164, to_e164
from server.models import (
    ContactPublic,
    Customer,
    CustomerContact,
    CustomerCreate,
    CustomerPublic,
    CustomerSite,
    Device,
    DeviceCreate,
    SitePublic,
)
from server.scope import EVERYTHING, Scope
from shared.errors import Conflict, NotFound

#: The first number given to a customer created without one (a device's free-text customer).
FIRST_AUTO_NUMBER = 100001
#: Devices a customer's detail (API and console) lists at the most.
CUSTOMER_DEVICES = 200


def get_customer(session: Session, *, number: str) -> Customer:
    """The customer with that number.

    Raises:
        NotFound: when there is none.
    """
    customer = session.get(Customer, number)
    if customer is None:
        msg = f"no customer {number!r}"
        raise NotFound(msg)
    return customer


def add_customer(
    session: Session, *, data: CustomerCreate, actor: str = audit.SYSTEM_ACTOR
) -> Customer:
    """Insert a customer with its contacts and sites (flushed and audited, not committed).

    Contact phones are read in the customer's country and stored in E.164.

    Raises:
        InvalidInput: a contact's phone is not a valid number (naming ``contacts[i].phone``).
        Conflict: the number is taken.
    """
    phones = [
        require_e164(c.phone, data.country, field=f"contacts[{i}].phone") if c.phone else None
        for i, c in enumerate(data.contacts)
    ]
    if session.get(Customer, data.number) is not None:
        msg = f"customer {data.number!r} already exists"
        raise Conflict(msg)
    names = [s.name for s in data.sites]
    if len(set(names)) != len(names):
        msg = "sites: a site name appears twice"
        raise Conflict(msg)
    customer = Customer(
        number=data.number, name=data.name.strip(), country=data.country, region=data.region
    )
    session.add(customer)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        msg = f"customer {data.number!r} already exists"
        raise Conflict(msg) from exc
    for contact, phone in zip(data.contacts, phones, strict=True):
        session.add(
            CustomerContact(
                customer_number=customer.number,
                name=contact.name,
                phone=phone,
                email=contact.email,
                language=contact.language,
            )
        )
    for site in data.sites:
        session.add(
            CustomerSite(
                customer_number=customer.number,
                name=site.name,
                country=site.country,
                region=site.region,
            )
        )
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="customer.create",
        target=f"customer:{customer.number}",
        details={"name": customer.name, "contacts": len(data.contacts), "sites": len(names)},
    )
    return customer


def create_customer(
    session: Session, *, data: CustomerCreate, actor: str = audit.SYSTEM_ACTOR
) -> Customer:
    """Create a customer (committed); see :func:`add_customer`."""
    customer = add_customer(session, data=data, actor=actor)
    session.commit()
    session.refresh(customer)
    return customer


def devices_of(session: Session, *, number: str, scope: Scope) -> Sequence[Device]:
    """The customer's devices in ``scope``, in the order they were registered (at most
    :data:`CUSTOMER_DEVICES`)."""
    return session.exec(
        select(Device)
        .where(Device.customer_number == number, scope.devices())
        .order_by(col(Device.id))
        .limit(CUSTOMER_DEVICES)
    ).all()


def customer_public(session: Session, customer: Customer) -> CustomerPublic:
    """The customer with its contacts, sites and device count."""
    contacts = session.exec(
        select(CustomerContact)
        .where(CustomerContact.customer_number == customer.number)
        .order_by(col(CustomerContact.id))
    ).all()
    sites = session.exec(
        select(CustomerSite)
        .where(CustomerSite.customer_number == customer.number)
        .order_by(col(CustomerSite.name))
    ).all()
    devices = session.exec(
        select(func.count()).select_from(Device).where(Device.customer_number == customer.number)
    ).one()
    return CustomerPublic(
        number=customer.number,
        name=customer.name,
        country=customer.country,
        region=customer.region,
        created_at=customer.created_at,
        contacts=[ContactPublic.model_validate(c, from_attributes=True) for c in contacts],
        sites=[SitePublic.model_validate(s, from_attributes=True) for s in sites],
        device_count=int(devices),
    )


def list_customers(
    session: Session,
    *,
    q: str | None = None,
    limit: int = 100,
    offset: int = 0,
    scope: Scope = EVERYTHING,
) -> tuple[Sequence[Customer], int]:
    """A page of customers by number (those in ``scope``); ``q`` matches number or name
    (substring, any case)."""
    conditions: list[Any] = [scope.where_customer(col(Customer.number))]
    if q:
        literal = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{literal}%"
        conditions.append(
            or_(
                func.lower(Customer.number).like(pattern, escape="\\"),
                func.lower(Customer.name).like(pattern, escape="\\"),
            )
        )
    where = sa.and_(sa.true(), *conditions)
    total = session.exec(select(func.count()).select_from(Customer).where(where)).one()
    rows = session.exec(
        select(Customer).where(where).order_by(col(Customer.number)).limit(limit).offset(offset)
    ).all()
    return rows, int(total)


def next_customer_number(session: Session) -> str:
    """A free all-digit customer number (from :data:`FIRST_AUTO_NUMBER` on)."""
    candidate = FIRST_AUTO_NUMBER + int(
        session.exec(select(func.count()).select_from(Customer)).one()
    )
    while session.get(Customer, str(candidate)) is not None:
        candidate += 1
    return str(candidate)


def phone_region(session: Session, *, customer_number: str | None, site: str | None) -> str | None:
    """The country a device's local phone numbers are read in: its site's, else its customer's."""
    if customer_number is None:
        return None
    if site:
        country = session.exec(
            select(CustomerSite.country).where(
                CustomerSite.customer_number == customer_number, CustomerSite.name == site
            )
        ).first()
        if country:
            return country
    customer = session.get(Customer, customer_number)
    return customer.country if customer else None


def customer_for_device(
    session: Session, data: DeviceCreate, *, actor: str = audit.SYSTEM_ACTOR
) -> Customer:
    """The customer a new device belongs to: ``customer_number``'s, else the one of that name.

    An unknown name becomes a new customer (with the next free number, audited),
    as registrations made before customers had records did.

    Raises:
        InvalidInput: ``customer_number`` names no customer.
    """
    from server.crud.errors import InvalidInput

    if data.customer_number:
        customer = session.get(Customer, data.customer_number)
        if customer is None:
            msg = f"customer_number: no customer {data.customer_number!r}"
            raise InvalidInput(msg)
        return customer
    name = data.customer.strip()
    found = session.exec(
        select(Customer).where(Customer.name == name).order_by(col(Customer.number)).limit(1)
    ).first()
    if found is not None:
        return found
    return add_customer(
        session,
        data=CustomerCreate(number=next_customer_number(session), name=name, region=data.region),
        actor=actor,
    )


def device_phone(session: Session, customer: Customer, data: DeviceCreate) -> str | None:
    """The device's contact phone in E.164.

    Read in its site's (or customer's) country; strict when that country is
    known, else kept unmatched when the number is not international.

    Raises:
        InvalidInput: naming ``contact_phone``, when it is no valid number in that country.
    """
    if not data.contact_phone:
        return None
    region = phone_region(session, customer_number=customer.number, site=data.site)
    if region is None:
        return to_e164(data.contact_phone, None)
    return require_e164(data.contact_phone, region, field="contact_phone")
