"""What a user may see of the fleet: their scope, by customer and by region.

A user with no scope sees everything (as before scopes existed). A scoped operator or
manager (``User.customers``, ``User.regions``) sees only the devices of those customers
and in those regions (both limits apply when both are set), and only what hangs off
those devices: telemetry, alerts, sessions, recordings, incidents, calls, KPIs. A
``site`` user is always bound to customers. Whatever lies outside a user's scope does
not exist for them: 404, never 403 (no hint that it exists).

One :class:`Scope` is resolved per request (``server.api.deps.ScopeDep``) and every
query passes it to one of its filters: :meth:`Scope.devices` (a condition on
``Device``), :meth:`Scope.where_device` (a ``device_id`` column of any table) and
:meth:`Scope.where_customer` (a customer number column). A device's region is its own
``region``, else its customer's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from server.models import BOUND_ROLES, Customer, Device, User
from shared.errors import InvalidInput, NotFound

#: A region as an administrator names it (``EU``, ``APAC``, ``DE-South``); compared without case.
REGION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
#: A customer number (as :data:`server.models.customer.NUMBER_PATTERN`).
NUMBER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
_MAX_ITEMS = 64
#: Why an admin has no scope.
ADMIN_UNSCOPED = (
    "an admin sees the whole fleet (users, devices, the audit log): "
    "limit a manager or an operator instead"
)


@dataclass(frozen=True)
class Scope:
    """The customers and regions a user may see; both empty and not ``nothing``: all."""

    customers: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    #: A user who must be bound to customers but is bound to none sees nothing.
    nothing: bool = False

    @classmethod
    def of(cls, user: User) -> Scope:
        """The scope stored on ``user`` (an admin's is the whole fleet)."""
        if user.role == "admin":
            return cls()
        customers = frozenset(split(user.customers))
        regions = frozenset(r.upper() for r in split(user.regions))
        return cls(customers, regions, nothing=user.role in BOUND_ROLES and not customers)

    @property
    def unrestricted(self) -> bool:
        """Whether the user sees the whole fleet."""
        return not (self.customers or self.regions or self.nothing)

    def devices(self) -> sa.ColumnElement[bool]:
        """The condition on ``Device`` rows that keeps the ones in scope."""
        if self.nothing:
            return sa.false()
        conditions: list[sa.ColumnElement[bool]] = []
        if self.customers:
            conditions.append(col(Device.customer_number).in_(sorted(self.customers)))
        if self.regions:
            customer_region = (
                select(Customer.region)
                .where(col(Customer.number) == col(Device.customer_number))
                .correlate(Device)
                .scalar_subquery()
            )
            region = func.upper(func.coalesce(col(Device.region), customer_region))
            conditions.append(region.in_(sorted(self.regions)))
        return sa.and_(sa.true(), *conditions)

    def device_ids(self) -> Any:
        """A subquery of the ids of the devices in scope."""
        return select(col(Device.id)).where(self.devices())

    def where_device(self, column: Any) -> sa.ColumnElement[bool]:
        """The condition that a ``device_id`` column names a device in scope."""
        if self.unrestricted:
            return sa.true()
        return sa.and_(column.is_not(None), column.in_(self.device_ids()))

    def where_customer(self, column: Any) -> sa.ColumnElement[bool]:
        """The condition that a customer number column names a customer in scope.

        A customer is in scope when its number is allowed and it, or one of its
        devices, lies in an allowed region.
        """
        if self.unrestricted:
            return sa.true()
        if self.nothing:
            return sa.false()
        conditions: list[sa.ColumnElement[bool]] = [column.is_not(None)]
        if self.customers:
            conditions.append(column.in_(sorted(self.customers)))
        if self.regions:
            in_region = select(col(Customer.number)).where(
                func.upper(col(Customer.region)).in_(sorted(self.regions))
            )
            with_devices = select(col(Device.customer_number)).where(self.devices())
            conditions.append(sa.or_(column.in_(in_region), column.in_(with_devices)))
        return sa.and_(*conditions)

    def where_call(self, device_column: Any, customer_column: Any) -> sa.ColumnElement[bool]:
        """The condition that a call is in scope: its device is, or (no device) its customer."""
        if self.unrestricted:
            return sa.true()
        return sa.or_(
            self.where_device(device_column),
            sa.and_(device_column.is_(None), self.where_customer(customer_column)),
        )

    def sees_device(self, session: Session, device_id: str) -> bool:
        """Whether the device exists and is in scope."""
        found = session.exec(
            select(col(Device.id)).where(col(Device.id) == device_id, self.devices())
        ).first()
        return found is not None

    def device(self, session: Session, device_id: str) -> Device:
        """The device, when it is in scope.

        Raises:
            NotFound: when there is none, or it lies outside the scope (the same answer).
        """
        device = session.get(Device, device_id)
        if device is None or not (self.unrestricted or self.sees_device(session, device_id)):
            msg = f"no device {device_id!r}"
            raise NotFound(msg)
        return device

    def check_device(self, session: Session, device_id: str | None) -> None:
        """Raise :class:`NotFound` unless ``device_id`` is ``None`` or a device in scope."""
        if device_id is not None and not self.unrestricted:
            self.device(session, device_id)

    def sees_customer(self, session: Session, number: str) -> bool:
        """Whether the customer is in scope (it need not exist)."""
        if self.unrestricted:
            return True
        found = session.exec(
            select(col(Customer.number)).where(
                col(Customer.number) == number, self.where_customer(col(Customer.number))
            )
        ).first()
        return found is not None

    def public(self) -> dict[str, list[str]]:
        """The scope as the audit log and the API show it."""
        return {"customers": sorted(self.customers), "regions": sorted(self.regions)}


#: Everything: no limits (an administrator, a user without scope, a server job).
EVERYTHING = Scope()


def split(value: str | None) -> list[str]:
    """The items of a stored comma-separated list."""
    return [part for part in (value or "").split(",") if part]


def parse_list(values: Iterable[str] | str | None) -> list[str]:
    """``C-1001,C-1002`` (or a list of such) as its items, stripped, without duplicates."""
    if values is None:
        return []
    texts = [values] if isinstance(values, str) else list(values)
    items: list[str] = []
    for text in texts:
        for part in text.split(","):
            part = part.strip()
            if part and part not in items:
                items.append(part)
    return items


def check_scope(
    session: Session, *, role: str, customers: list[str], regions: list[str]
) -> tuple[str | None, str | None]:
    """Valid ``customers`` and ``regions`` for a user of ``role``, as stored.

    Raises:
        InvalidInput: an unknown customer, a malformed region, too many items, or a
            ``site`` user bound to no customer.
    """
    if len(customers) > _MAX_ITEMS or len(regions) > _MAX_ITEMS:
        msg = f"a scope names at most {_MAX_ITEMS} customers and {_MAX_ITEMS} regions"
        raise InvalidInput(msg)
    for number in customers:
        if not NUMBER_PATTERN.match(number) or session.get(Customer, number) is None:
            msg = f"customers: no customer {number!r} (fieldlink customer list)"
            raise InvalidInput(msg)
    for region in regions:
        if not REGION_PATTERN.match(region):
            msg = f"regions: {region!r} is not a region name (letters, digits, ' _.-')"
            raise InvalidInput(msg)
    if role in BOUND_ROLES and not customers:
        msg = f"a {role} user must be bound to at least one customer (--customers)"
        raise InvalidInput(msg)
    if role == "admin" and (customers or regions):
        raise InvalidInput(ADMIN_UNSCOPED)
    stored_customers = ",".join(sorted(set(customers))) or None
    stored_regions = ",".join(sorted({r.upper() for r in regions})) or None
    return stored_customers, stored_regions
