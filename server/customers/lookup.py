"""Who is calling: match a caller's number (ANI) to devices and customers.

A number matches a device's own ``contact_phone_e164`` and the phones of its
customer's contacts. Both columns hold E.164, so a lookup is indexed equality
matches, whatever notation the phone system sends. On PostgreSQL the whole answer
(the matches, the customer with its contacts, sites and device count, the devices and
their open incidents) is one statement (CTEs and ``json_agg``); on SQLite a few. The
call records themselves are :mod:`server.customers.calls`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from server.crud.phones import require_e164, to_e164
from server.models import (
    ContactPublic,
    Customer,
    CustomerContact,
    CustomerPublic,
    CustomerSite,
    Device,
    DevicePublic,
    Incident,
    IncidentPublic,
    SitePublic,
)
from server.models.base import UTCDateTime
from server.scope import EVERYTHING, Scope

#: Most devices a lookup returns (a customer with a large fleet: the customer page lists them).
LOOKUP_DEVICES = 50
#: Most open incidents a lookup returns.
LOOKUP_INCIDENTS = 50


@dataclass
class Match:
    """What a caller's number matched, as the API shows it."""

    ani_e164: str | None
    customer: CustomerPublic | None = None
    devices: list[DevicePublic] = field(default_factory=list)
    open_incidents: list[IncidentPublic] = field(default_factory=list)
    #: Every customer the number matched (more than one: ``customer`` is ``None``).
    customer_numbers: list[str] = field(default_factory=list)


_DEVICE: sa.Table = Device.__table__  # type: ignore[attr-defined]
_INCIDENT: sa.Table = Incident.__table__  # type: ignore[attr-defined]
_CUSTOMER: sa.Table = Customer.__table__  # type: ignore[attr-defined]
_CONTACT: sa.Table = CustomerContact.__table__  # type: ignore[attr-defined]
_SITE: sa.Table = CustomerSite.__table__  # type: ignore[attr-defined]
#: The device columns the answer shows (not the ingest's counters).
_DEVICE_COLUMNS = [c for c in _DEVICE.c if c.key in DevicePublic.model_fields]
_INCIDENT_COLUMNS = [c for c in _INCIDENT.c if c.key in IncidentPublic.model_fields]


def lookup(
    session: Session,
    *,
    ani: str,
    customer_number: str | None = None,
    default_region: str | None = None,
    strict: bool = True,
    scope: Scope = EVERYTHING,
    one_statement: bool | None = None,
) -> Match:
    """The customer, devices and open incidents a caller's number (and keyed-in number) match.

    ``ani`` is read in the keyed-in customer's country, else ``default_region``.
    A keyed-in customer number narrows the match to that customer; when the
    number matches none of its phones, the customer alone is the match.
    Only what lies in ``scope`` matches (a keyed-in customer outside it is ignored).

    On PostgreSQL (``one_statement`` unset) the answer is one statement, one JSON
    value (:func:`_answer_in_one_statement`); elsewhere at most four statements,
    each an indexed read answered as plain rows (:func:`_answer_in_rows`): which
    devices and customers the number matches, the customer with its contacts, sites
    and device count, the devices, their open incidents. Both give the same answer
    (docs/benchmarks.md "CTI lookup"). A keyed-in number costs one more statement
    (two for a scoped user).

    Raises:
        InvalidInput: naming ``ani`` when it is no valid number and ``strict``.
    """
    connection = session.connection()
    keyed: tuple[str, str | None] | None = None
    if customer_number:
        row = connection.execute(
            sa.select(_CUSTOMER.c.number, _CUSTOMER.c.country).where(
                _CUSTOMER.c.number == customer_number
            )
        ).first()
        keyed = (row.number, row.country) if row is not None else None
    if keyed is not None and not scope.unrestricted and not scope.sees_customer(session, keyed[0]):
        keyed = None
    region = (keyed[1] if keyed else None) or default_region
    e164 = require_e164(ani, region, field="ani") if strict else to_e164(ani, region)
    keyed_number = keyed[0] if keyed else None
    if one_statement is None:
        one_statement = connection.dialect.name == "postgresql"
    if one_statement:
        return _answer_in_one_statement(connection, e164, keyed_number, scope)
    return _answer_in_rows(connection, e164, keyed_number, scope)


def _answer_in_rows(
    connection: sa.Connection, e164: str | None, keyed: str | None, scope: Scope
) -> Match:
    """The answer in up to four statements, each read as plain rows (any database)."""
    match = Match(ani_e164=e164)
    device_ids: list[str] = []
    numbers: set[str] = set()
    if e164 is not None:
        matching = _matching(e164, keyed, scope)
        for number, device_id in connection.execute(matching):
            if number is not None:
                numbers.add(number)
            if device_id is not None:
                device_ids.append(device_id)
    if keyed is not None and not numbers:
        numbers = {keyed}
    match.customer_numbers = sorted(numbers)
    if len(numbers) == 1:
        match.customer = customer_details(connection, next(iter(numbers)))
    devices: sa.ColumnElement[bool] | None = None
    if device_ids:
        devices = _DEVICE.c.id.in_(device_ids)
    elif match.customer is not None:
        devices = _DEVICE.c.customer_number == match.customer.number
    if devices is not None:
        match.devices = [
            DevicePublic.model_validate(row)
            for row in connection.execute(
                sa.select(*_DEVICE_COLUMNS)
                .where(devices, scope.devices())
                .order_by(_DEVICE.c.id)
                .limit(LOOKUP_DEVICES)
            ).mappings()
        ]
    if match.devices:
        match.open_incidents = [
            IncidentPublic.model_validate({**row, "state": "open", "session_ids": []})
            for row in connection.execute(
                sa.select(*_INCIDENT_COLUMNS)
                .where(_INCIDENT.c.device_id.in_([d.id for d in match.devices]), _still_open())
                .order_by(*_NEWEST_FIRST)
                .limit(LOOKUP_INCIDENTS)
            ).mappings()
        ]
    return match


def _still_open() -> sa.ColumnElement[bool]:
    """ "Open", written so that no index serves it: see :func:`open_incidents_of`."""
    return sa.case((_INCIDENT.c.closed_at.is_(None), 1), else_=0) == 1


#: The order of a lookup's open incidents (the id breaks ties, so both paths agree).
_NEWEST_FIRST = (_INCIDENT.c.opened_at.desc(), _INCIDENT.c.id.desc())


def _json_object(columns: Sequence[sa.ColumnElement[Any]]) -> sa.ColumnElement[Any]:
    """``json_build_object('name', name, ...)`` of these columns (keys are column names)."""
    pairs: list[sa.ColumnElement[Any]] = []
    for column in columns:
        pairs += [sa.literal_column(f"'{column.key}'"), column]
    return sa.func.json_build_object(*pairs)


def _json_list(
    columns: Sequence[sa.ColumnElement[Any]], *order: sa.ColumnElement[Any]
) -> sa.ColumnElement[Any]:
    """The rows as a JSON array of objects in that order (``[]`` when there are none)."""
    return sa.func.coalesce(
        sa.func.json_agg(aggregate_order_by(_json_object(columns), *order)),
        sa.literal_column("'[]'::json"),
    )


def _rows_json(cte: sa.CTE, *order: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
    """A CTE's rows as a JSON array of objects keyed by its column names, in that order.

    ``json_agg`` of the whole row: no ``json_build_object`` and its limit of 100 arguments.
    """
    return (
        sa.select(
            sa.func.coalesce(
                sa.func.json_agg(aggregate_order_by(sa.literal_column(cte.name), *order)),
                sa.literal_column("'[]'::json"),
            )
        )
        .select_from(cte)
        .scalar_subquery()
    )


def _answer_in_one_statement(
    connection: sa.Connection, e164: str | None, keyed: str | None, scope: Scope
) -> Match:
    """The same answer as :func:`_answer_in_rows` in one PostgreSQL statement, one JSON value.

    CTEs take the steps of the rows path (the matches by device phone and by
    contact phone, the one customer, the devices, their open incidents) and
    ``json_agg``/``json_build_object`` put the answer together, so a lookup is one
    round trip. Python only sorts the customer numbers (as the rows path does, not
    in the database's collation) and reads the times back as UTC. For an
    unrestricted scope (CTI middleware, most operators) the statement is built and
    compiled once per shape; the same text each time also lets psycopg prepare it.
    """
    params = {
        name: value for name, value in (("e164", e164), ("keyed", keyed)) if value is not None
    }
    if scope.unrestricted:
        sql, constants = _compiled_statement(
            connection.dialect, e164 is not None, keyed is not None
        )
        found: dict[str, Any] = connection.exec_driver_sql(
            sql, {**constants, **params}
        ).scalar_one()
    else:
        statement = _one_statement(e164 is not None, keyed is not None, scope)
        found = connection.execute(statement, params).scalar_one()
    match = Match(ani_e164=e164, customer_numbers=sorted(found["numbers"] or []))
    if found["customer"] is not None:
        details = _utc(_CUSTOMER, found["customer"])
        match.customer = CustomerPublic.model_validate(details)
    match.devices = [DevicePublic.model_validate(_utc(_DEVICE, d)) for d in found["devices"]]
    match.open_incidents = [
        IncidentPublic.model_validate({**_utc(_INCIDENT, i), "state": "open", "session_ids": []})
        for i in found["open_incidents"]
    ]
    return match


@functools.lru_cache(maxsize=32)
def _compiled_statement(
    dialect: sa.Dialect, has_e164: bool, has_keyed: bool
) -> tuple[str, dict[str, Any]]:
    """:func:`_one_statement` for an unrestricted scope as the driver's SQL text and its
    constant parameters (the limits)."""
    compiled = _one_statement(has_e164, has_keyed, EVERYTHING).compile(dialect=dialect)
    constants = {k: v for k, v in compiled.params.items() if k not in ("e164", "keyed")}
    return compiled.string, constants


def _one_statement(has_e164: bool, has_keyed: bool, scope: Scope) -> sa.Select[Any]:
    """The whole lookup as one statement; the number and the keyed-in customer number
    are the parameters ``e164`` and ``keyed``."""
    e164 = sa.bindparam("e164", type_=sa.String())
    keyed = sa.bindparam("keyed", type_=sa.String(32))
    device, contact, customer, site, incident = (
        _DEVICE.c,
        _CONTACT.c,
        _CUSTOMER.c,
        _SITE.c,
        _INCIDENT.c,
    )
    phone_matches = device.contact_phone_e164 == e164 if has_e164 else sa.false()
    contact_matches = contact.phone == e164 if has_e164 else sa.false()
    by_phone = sa.select(device.customer_number.label("number"), device.id.label("device_id"))
    by_phone = by_phone.where(phone_matches, scope.devices())
    by_contact = sa.select(contact.customer_number.label("number")).where(
        contact_matches, scope.where_customer(contact.customer_number)
    )
    if has_keyed:
        by_phone = by_phone.where(device.customer_number == keyed)
        by_contact = by_contact.where(contact.customer_number == keyed)
    phones = by_phone.order_by(device.id).limit(LOOKUP_DEVICES).cte("phones")
    contacts = by_contact.distinct().limit(LOOKUP_DEVICES).cte("contacts")
    if has_keyed:
        # Every match is the keyed-in customer's, and it is the match when there is none.
        numbers = sa.select(sa.cast(keyed, sa.String(32)).label("number")).cte("numbers")
    else:
        numbers = sa.union(
            sa.select(phones.c.number).where(phones.c.number.is_not(None)),
            sa.select(contacts.c.number).where(contacts.c.number.is_not(None)),
        ).cte("numbers")
    the_customer = (
        sa.select(numbers.c.number)
        .where(sa.select(sa.func.count()).select_from(numbers).scalar_subquery() == 1)
        .scalar_subquery()
    )
    # The devices the phone matched, else (none) the one customer's devices.
    by_id = sa.select(*_DEVICE_COLUMNS).where(
        device.id.in_(sa.select(phones.c.device_id)), scope.devices()
    )
    by_customer = sa.select(*_DEVICE_COLUMNS).where(
        ~sa.exists(sa.select(phones.c.device_id)),
        device.customer_number == the_customer,
        scope.devices(),
    )
    by_customer = by_customer.order_by(device.id).limit(LOOKUP_DEVICES)
    both = sa.union_all(by_id, by_customer).subquery("found")
    devices = sa.select(both).order_by(both.c.id).limit(LOOKUP_DEVICES).cte("devices")
    open_incidents = (
        sa.select(*_INCIDENT_COLUMNS)
        .where(incident.device_id.in_(sa.select(devices.c.id)), _still_open())
        .order_by(*_NEWEST_FIRST)
        .limit(LOOKUP_INCIDENTS)
        .cte("open_incidents")
    )
    customer_json = (
        sa.select(
            sa.func.json_build_object(
                *_pairs(
                    number=customer.number,
                    name=customer.name,
                    country=customer.country,
                    region=customer.region,
                    created_at=customer.created_at,
                    device_count=sa.select(sa.func.count())
                    .select_from(_DEVICE)
                    .where(_DEVICE.c.customer_number == customer.number)
                    .scalar_subquery(),
                    contacts=sa.select(
                        _json_list(
                            [contact.name, contact.phone, contact.email, contact.language],
                            contact.id,
                        )
                    )
                    .where(contact.customer_number == customer.number)
                    .scalar_subquery(),
                    sites=sa.select(
                        _json_list([site.name, site.country, site.region], site.name, site.id)
                    )
                    .where(site.customer_number == customer.number)
                    .scalar_subquery(),
                )
            )
        )
        .where(customer.number == the_customer)
        .scalar_subquery()
    )
    return sa.select(
        sa.func.json_build_object(
            *_pairs(
                numbers=sa.select(sa.func.json_agg(numbers.c.number)).scalar_subquery(),
                customer=customer_json,
                devices=_rows_json(devices, devices.c.id),
                open_incidents=_rows_json(
                    open_incidents, open_incidents.c.opened_at.desc(), open_incidents.c.id.desc()
                ),
            ),
            type_=postgresql.JSON,
        )
    )


def _pairs(**values: sa.ColumnElement[Any]) -> list[sa.ColumnElement[Any]]:
    """``'key', value, ...`` for ``json_build_object``."""
    pairs: list[sa.ColumnElement[Any]] = []
    for key, value in values.items():
        pairs += [sa.literal_column(f"'{key}'"), value]
    return pairs


def _utc(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """A row read from JSON with its times as the rows path reads them (aware, in UTC)."""
    read = dict(values)
    for column in table.c:
        value = read.get(column.key)
        if isinstance(column.type, UTCDateTime) and isinstance(value, str):
            read[column.key] = datetime.fromisoformat(value).astimezone(UTC)
    return read


def _matching(
    e164: str, keyed: str | None, scope: Scope = EVERYTHING
) -> sa.CompoundSelect[str | None, str | None]:
    """One statement: (customer number, device id) of the devices with that phone,
    then (customer number, ``NULL``) of the customers with a contact at it (in ``scope``)."""
    device, contact = _DEVICE.c, _CONTACT.c
    by_phone = sa.select(device.customer_number.label("number"), device.id.label("device_id"))
    by_phone = by_phone.where(device.contact_phone_e164 == e164, scope.devices())
    by_contact = sa.select(
        contact.customer_number.label("number"), sa.null().label("device_id")
    ).where(contact.phone == e164, scope.where_customer(contact.customer_number))
    if keyed is not None:
        by_phone = by_phone.where(device.customer_number == keyed)
        by_contact = by_contact.where(contact.customer_number == keyed)
    phones = by_phone.order_by(device.id).limit(LOOKUP_DEVICES).subquery("phones")
    contacts = by_contact.distinct().limit(LOOKUP_DEVICES).subquery("contacts")
    return sa.union_all(
        sa.select(phones.c.number, phones.c.device_id),
        sa.select(contacts.c.number, contacts.c.device_id),
    )


def customer_details(connection: sa.Connection, number: str) -> CustomerPublic | None:
    """The customer with its contacts, sites and device count, in one statement.

    The same answer as :func:`server.crud.customers.customer_public`; its
    contacts and sites come as rows of one ``UNION ALL`` joined to the customer.
    """
    contact, site, customer = _CONTACT.c, _SITE.c, _CUSTOMER.c
    details = sa.union_all(
        sa.select(
            sa.literal("contact").label("kind"),
            contact.id.label("id"),
            contact.name.label("name"),
            contact.phone.label("a"),
            contact.email.label("b"),
            contact.language.label("c"),
        ).where(contact.customer_number == number),
        sa.select(
            sa.literal("site"), site.id, site.name, site.country, site.region, sa.null()
        ).where(site.customer_number == number),
    ).subquery("details")
    count = (
        sa.select(sa.func.count())
        .select_from(_DEVICE)
        .where(_DEVICE.c.customer_number == number)
        .scalar_subquery()
    )
    rows = connection.execute(
        sa.select(
            customer.number,
            customer.name,
            customer.country,
            customer.region,
            customer.created_at,
            count.label("device_count"),
            details.c.kind,
            details.c.name.label("detail_name"),
            details.c.a,
            details.c.b,
            details.c.c,
        )
        .select_from(_CUSTOMER.outerjoin(details, sa.true()))
        .where(customer.number == number)
        .order_by(
            details.c.kind,
            sa.case((details.c.kind == "site", details.c.name)),
            details.c.id,
        )
    ).all()
    if not rows:
        return None
    first = rows[0]
    return CustomerPublic(
        number=first.number,
        name=first.name,
        country=first.country,
        region=first.region,
        created_at=first.created_at,
        device_count=int(first.device_count),
        contacts=[
            ContactPublic(name=r.detail_name, phone=r.a, email=r.b, language=r.c)
            for r in rows
            if r.kind == "contact"
        ],
        sites=[
            SitePublic(name=r.detail_name, country=r.a, region=r.b)
            for r in rows
            if r.kind == "site"
        ],
    )


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
