"""Customers, the CTI lookup of a caller's number, and the calls the desk took."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime
from sqlmodel import Field, SQLModel

from server.api.csv_upload import CSV_BODY, CSV_RESPONSES, csv_stream, import_csv
from server.api.deps import (
    UNSCOPED,
    AdminUser,
    ManagerUser,
    OperatorUser,
    ScopeDep,
    SessionDep,
    SettingsDep,
)
from server.api.responses import DB_INT_MAX
from server.crud import customers as crud
from server.customers import calls as service
from server.customers import csv_io
from server.incidents.records import to_public
from server.models import (
    CallCreate,
    CallPublic,
    CallsPublic,
    CallUpdate,
    CustomerCreate,
    CustomerPublic,
    CustomersPublic,
    DevicePublic,
    IncidentPublic,
)
from shared.errors import NotFound

router = APIRouter(tags=["customers"])

CustomerNumber = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")]
CallId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]


class CustomerDetail(CustomerPublic):
    """A customer with its devices."""

    devices: list[DevicePublic] = []


@router.post("/customers", status_code=status.HTTP_201_CREATED, dependencies=[UNSCOPED])
def create_customer(body: CustomerCreate, session: SessionDep, user: ManagerUser) -> CustomerPublic:
    """Create a customer with its contacts (phones read in its country, stored in E.164)."""
    customer = crud.create_customer(session, data=body, actor=user.username)
    return crud.customer_public(session, customer)


@router.get("/customers")
def list_customers(
    session: SessionDep,
    _user: OperatorUser,
    scope: ScopeDep,
    q: Annotated[str | None, Query(max_length=128, description="number or name")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> CustomersPublic:
    """List customers by number; ``q`` finds one by number or name."""
    rows, total = crud.list_customers(session, q=q, limit=limit, offset=offset, scope=scope)
    return CustomersPublic(items=[crud.customer_public(session, c) for c in rows], count=total)


@router.post(
    "/customers/import",
    responses=CSV_RESPONSES,
    openapi_extra=CSV_BODY,
    dependencies=[UNSCOPED],
)
async def import_customers(
    request: Request, session: SessionDep, user: ManagerUser
) -> csv_io.CustomerImportReport:
    """Import customers (contacts, sites) from CSV: all rows or none; known numbers skipped."""
    return await import_csv(
        request, lambda lines: csv_io.import_customers_csv(session, lines, actor=user.username)
    )


@router.get("/customers/export", response_class=StreamingResponse)
def export_customers(session: SessionDep, _user: ManagerUser, scope: ScopeDep) -> StreamingResponse:
    """Every customer (in scope) as CSV, one row per contact or site (formula starts marked
    as text)."""
    return csv_stream(csv_io.export_customers_csv(session, scope), "customers.csv")


@router.post(
    "/devices/import", responses=CSV_RESPONSES, openapi_extra=CSV_BODY, dependencies=[UNSCOPED]
)
async def import_devices(
    request: Request, session: SessionDep, user: AdminUser
) -> csv_io.DeviceImportReport:
    """Register devices of known customers from CSV: all rows or none (no enrollment tokens)."""
    return await import_csv(
        request, lambda lines: csv_io.import_devices_csv(session, lines, actor=user.username)
    )


@router.get("/customers/{number}")
def get_customer(
    number: CustomerNumber, session: SessionDep, _user: OperatorUser, scope: ScopeDep
) -> CustomerDetail:
    """One customer with its contacts, sites and devices (404 outside the user's scope)."""
    if not scope.sees_customer(session, number):
        msg = f"no customer {number!r}"
        raise NotFound(msg)
    customer = crud.get_customer(session, number=number)
    devices = crud.devices_of(session, number=number, scope=scope)
    return CustomerDetail(
        **crud.customer_public(session, customer).model_dump(),
        devices=[DevicePublic.model_validate(d) for d in devices],
    )


class LookupResult(SQLModel):
    """What a caller's number matched: one customer (or none), its devices, open incidents."""

    ani_e164: str | None
    customer: CustomerPublic | None
    devices: list[DevicePublic]
    open_incidents: list[IncidentPublic]
    #: Every customer the number matched; more than one leaves ``customer`` null.
    customer_numbers: list[str]


@router.get("/lookup")
def lookup(
    session: SessionDep,
    settings: SettingsDep,
    _user: OperatorUser,
    scope: ScopeDep,
    ani: Annotated[str, Query(min_length=1, max_length=64, description="the caller's number")],
    customer_no: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")] = None,
) -> LookupResult:
    """Who is calling: devices whose phone is ``ani`` and customers with a contact at it."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        # One read statement (server.customers.calls): in autocommit, psycopg sends no
        # BEGIN before it and the session's close no ROLLBACK after it (two round trips).
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    match = service.lookup(
        session,
        ani=ani,
        customer_number=customer_no,
        default_region=settings.phone_default_region,
        scope=scope,
    )
    return LookupResult(
        ani_e164=match.ani_e164,
        customer=match.customer,
        devices=match.devices,
        open_incidents=match.open_incidents,
        customer_numbers=match.customer_numbers,
    )


@router.post("/calls", status_code=status.HTTP_201_CREATED)
def create_call(
    body: CallCreate,
    session: SessionDep,
    settings: SettingsDep,
    user: OperatorUser,
    scope: ScopeDep,
) -> CallPublic:
    """Record a call (CTI middleware, or an operator taking one); the caller is the operator."""
    call = service.create_call(
        session,
        data=body,
        operator=user.username,
        default_region=settings.phone_default_region,
        scope=scope,
    )
    return service.call_public(call)


@router.get("/calls")
def list_calls(
    session: SessionDep,
    _user: OperatorUser,
    scope: ScopeDep,
    customer: Annotated[str | None, Query(max_length=32)] = None,
    device_id: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> CallsPublic:
    """Recorded calls, newest first."""
    rows, total = service.list_calls(
        session,
        customer_number=customer,
        device_id=device_id,
        limit=limit,
        offset=offset,
        scope=scope,
    )
    return CallsPublic(items=[service.call_public(c) for c in rows], count=total)


@router.get("/calls/{call_id}")
def get_call(
    call_id: CallId, session: SessionDep, _user: OperatorUser, scope: ScopeDep
) -> CallPublic:
    """One recorded call."""
    return service.call_public(service.get_call(session, call_id=call_id, scope=scope))


@router.patch("/calls/{call_id}")
def update_call(
    call_id: CallId, body: CallUpdate, session: SessionDep, user: OperatorUser, scope: ScopeDep
) -> CallPublic:
    """Set a call's customer, device, ``answered_at``, ``ended_at`` or incident."""
    call = service.update_call(
        session, call_id=call_id, data=body, actor=user.username, scope=scope
    )
    return service.call_public(call)


class CallIncident(SQLModel):
    """Body of ``POST /api/v1/calls/{id}/incident``; the device defaults to the call's."""

    device_id: str | None = Field(default=None, min_length=1, max_length=63)
    symptom: str | None = Field(default=None, max_length=4000)
    error_code: str | None = Field(default=None, max_length=128)
    down_at: AwareDatetime | None = None


@router.post("/calls/{call_id}/incident", status_code=status.HTTP_201_CREATED)
def open_incident(
    call_id: CallId, body: CallIncident, session: SessionDep, user: OperatorUser, scope: ScopeDep
) -> IncidentPublic:
    """Open an incident from a call: ``opened_at`` is when it came, ``answered_at`` when taken."""
    incident = service.open_incident_from_call(
        session,
        call_id=call_id,
        device_id=body.device_id,
        symptom=body.symptom,
        error_code=body.error_code,
        down_at=body.down_at,
        actor=user.username,
        scope=scope,
    )
    return to_public(incident)
