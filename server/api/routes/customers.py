"""Customers, the CTI lookup of a caller's number, and the calls the desk took."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime
from sqlmodel import Field, SQLModel, col, select

from server.api.deps import AdminUser, ManagerUser, OperatorUser, SessionDep, SettingsDep
from server.api.responses import DB_INT_MAX, ErrorResponse
from server.api.routes.incidents import (
    _CSV_TYPES,
    _NO_FILE,
    _SPOOL_IN_MEMORY,
    _capped_receive,
    _too_large,
)
from server.crud import customers as crud
from server.customers import calls as service
from server.customers import csv_io
from server.incidents.csv_io import CsvImportInvalid, decode_lines
from server.incidents.records import to_public
from server.models import (
    CallCreate,
    CallPublic,
    CallsPublic,
    CallUpdate,
    CustomerCreate,
    CustomerPublic,
    CustomersPublic,
    Device,
    DevicePublic,
    IncidentPublic,
)

router = APIRouter(tags=["customers"])

CustomerNumber = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")]
CallId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]
#: Devices a customer's detail lists.
CUSTOMER_DEVICES = 200


class CustomerDetail(CustomerPublic):
    """A customer with its devices."""

    devices: list[DevicePublic] = []


@router.post("/customers", status_code=status.HTTP_201_CREATED)
def create_customer(body: CustomerCreate, session: SessionDep, user: ManagerUser) -> CustomerPublic:
    """Create a customer with its contacts (phones read in its country, stored in E.164)."""
    customer = crud.create_customer(session, data=body, actor=user.username)
    return crud.customer_public(session, customer)


@router.get("/customers")
def list_customers(
    session: SessionDep,
    _user: OperatorUser,
    q: Annotated[str | None, Query(max_length=128, description="number or name")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> CustomersPublic:
    """List customers by number; ``q`` finds one by number or name."""
    rows, total = crud.list_customers(session, q=q, limit=limit, offset=offset)
    return CustomersPublic(items=[crud.customer_public(session, c) for c in rows], count=total)


_CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}
_CSV_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "Larger than incident_import_max_bytes"},
    415: {"model": ErrorResponse, "description": "Not text/csv nor a multipart upload"},
}


async def _import_csv(request: Request, run: Callable[[Iterator[str]], Any]) -> Any:
    """Read an uploaded CSV (capped at ``incident_import_max_bytes``) and import it."""
    from starlette.datastructures import UploadFile

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit: int = request.app.state.settings.incident_import_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    capped = Request(request.scope, receive=_capped_receive(request, limit))

    async def imported(spool: IO[bytes]) -> Any:
        spool.seek(0)
        try:
            return await run_in_threadpool(run, decode_lines(spool))
        except CsvImportInvalid as exc:
            raise HTTPException(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[
                    {
                        "loc": ["body", f"line {p.line}", *([p.field] if p.field else [])],
                        "msg": p.message,
                        "type": "value_error",
                        "line": p.line,
                        "field": p.field,
                    }
                    for p in exc.problems
                ],
            ) from exc

    if content_type == "multipart/form-data":
        form = await capped.form()
        try:
            uploads = [v for v in form.values() if isinstance(v, UploadFile)]
            if not uploads:
                raise HTTPException(
                    status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[_NO_FILE]
                )
            return await imported(uploads[0].file)
        finally:
            await form.close()
    if content_type not in _CSV_TYPES:
        raise HTTPException(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail="send the CSV as text/csv or as the file of a multipart/form-data upload",
        )
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        async for chunk in capped.stream():
            spool.write(chunk)
        return await imported(spool)


@router.post("/customers/import", responses=_CSV_RESPONSES, openapi_extra=_CSV_BODY)
async def import_customers(
    request: Request, session: SessionDep, user: ManagerUser
) -> csv_io.CustomerImportReport:
    """Import customers (contacts, sites) from CSV: all rows or none; known numbers skipped."""
    report: csv_io.CustomerImportReport = await _import_csv(
        request, lambda lines: csv_io.import_customers_csv(session, lines, actor=user.username)
    )
    return report


@router.get("/customers/export", response_class=StreamingResponse)
def export_customers(session: SessionDep, _user: ManagerUser) -> StreamingResponse:
    """Every customer as CSV, one row per contact or site (formula starts marked as text)."""
    return StreamingResponse(
        csv_io.export_customers_csv(session),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="customers.csv"'},
    )


@router.post("/devices/import", responses=_CSV_RESPONSES, openapi_extra=_CSV_BODY)
async def import_devices(
    request: Request, session: SessionDep, user: AdminUser
) -> csv_io.DeviceImportReport:
    """Register devices of known customers from CSV: all rows or none (no enrollment tokens)."""
    report: csv_io.DeviceImportReport = await _import_csv(
        request, lambda lines: csv_io.import_devices_csv(session, lines, actor=user.username)
    )
    return report


@router.get("/customers/{number}")
def get_customer(
    number: CustomerNumber, session: SessionDep, _user: OperatorUser
) -> CustomerDetail:
    """One customer with its contacts, sites and devices."""
    customer = crud.get_customer(session, number=number)
    devices = session.exec(
        select(Device)
        .where(Device.customer_number == number)
        .order_by(col(Device.id))
        .limit(CUSTOMER_DEVICES)
    ).all()
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
    ani: Annotated[str, Query(min_length=1, max_length=64, description="the caller's number")],
    customer_no: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")] = None,
) -> LookupResult:
    """Who is calling: devices whose phone is ``ani`` and customers with a contact at it."""
    match = service.lookup(
        session,
        ani=ani,
        customer_number=customer_no,
        default_region=settings.phone_default_region,
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
    body: CallCreate, session: SessionDep, settings: SettingsDep, user: OperatorUser
) -> CallPublic:
    """Record a call (CTI middleware, or an operator taking one); the caller is the operator."""
    call = service.create_call(
        session, data=body, operator=user.username, default_region=settings.phone_default_region
    )
    return service.call_public(call)


@router.get("/calls")
def list_calls(
    session: SessionDep,
    _user: OperatorUser,
    customer: Annotated[str | None, Query(max_length=32)] = None,
    device_id: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> CallsPublic:
    """Recorded calls, newest first."""
    rows, total = service.list_calls(
        session, customer_number=customer, device_id=device_id, limit=limit, offset=offset
    )
    return CallsPublic(items=[service.call_public(c) for c in rows], count=total)


@router.get("/calls/{call_id}")
def get_call(call_id: CallId, session: SessionDep, _user: OperatorUser) -> CallPublic:
    """One recorded call."""
    return service.call_public(service.get_call(session, call_id=call_id))


@router.patch("/calls/{call_id}")
def update_call(
    call_id: CallId, body: CallUpdate, session: SessionDep, user: OperatorUser
) -> CallPublic:
    """Set a call's customer, device, ``answered_at``, ``ended_at`` or incident."""
    call = service.update_call(session, call_id=call_id, data=body, actor=user.username)
    return service.call_public(call)


class CallIncident(SQLModel):
    """Body of ``POST /api/v1/calls/{id}/incident``; the device defaults to the call's."""

    device_id: str | None = Field(default=None, min_length=1, max_length=63)
    symptom: str | None = Field(default=None, max_length=4000)
    error_code: str | None = Field(default=None, max_length=128)
    down_at: AwareDatetime | None = None


@router.post("/calls/{call_id}/incident", status_code=status.HTTP_201_CREATED)
def open_incident(
    call_id: CallId, body: CallIncident, session: SessionDep, user: OperatorUser
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
    )
    return to_public(incident)
