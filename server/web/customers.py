"""The customers' pages and the CTI screen-pop (``/desk/call``).

A phone system (or a softphone's "open URL on incoming call") opens
``/desk/call?ani=NUMBER[&customer_no=...][&call_id=...]`` on the operator's
screen. The call is recorded (answered now, by this operator) and the browser
goes to what the number matched: one device's page, the customer's page when
several of one customer's devices match, or the desk with "no match, register?".
The target page shows a banner for the call (``?call=ID``, drawn by call.js).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import col, select

from server.api.deps import SessionDep
from server.crud import customers as records
from server.customers import calls
from server.models import Customer, Device, RemoteSession
from server.web.auth import ViewerDep, forbidden
from server.web.templating import render
from server.web.voice import customer_voice
from shared.errors import NotFound
from shared.ids import utcnow

router = APIRouter(include_in_schema=False)

CUSTOMERS_PAGE = 50
#: How many sessions and calls the customer page lists (its devices: records.CUSTOMER_DEVICES).
RECENT = 10
_NUMBER = r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$"


@router.get("/customers", response_class=HTMLResponse)
def customers_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    q: Annotated[str | None, Query(max_length=128)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Customers by number; find one by number or name."""
    if not viewer.can("operator"):
        return forbidden(request, viewer, "operator")
    rows, total = records.list_customers(
        session,
        q=(q or "").strip() or None,
        limit=CUSTOMERS_PAGE,
        offset=(page - 1) * CUSTOMERS_PAGE,
        scope=viewer.scope,
    )
    return render(
        request,
        "customers.html",
        {
            "viewer": viewer,
            "title": "Customers",
            "nav": "customers",
            "customers": [records.customer_public(session, c) for c in rows],
            "total": total,
            "q": q or "",
            "page": page,
            "pages": max(1, -(-total // CUSTOMERS_PAGE)),
        },
    )


@router.get("/customers/{number}", response_class=HTMLResponse)
def customer_page(
    number: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> HTMLResponse:
    """A customer: contacts, sites, devices, open incidents, recent sessions and calls."""
    from server.web.pages import not_found

    if not viewer.can("operator"):
        return forbidden(request, viewer, "operator")
    scope = viewer.scope
    try:
        if not scope.sees_customer(session, number):
            raise NotFound(number)
        customer = records.get_customer(session, number=number)
    except NotFound:
        return not_found(request, viewer, f"customer {number}")
    devices = records.devices_of(session, number=number, scope=scope)
    incidents = session.exec(
        calls.open_incidents_of(
            select(Device.id).where(Device.customer_number == number, scope.devices())
        )
    ).all()
    sessions = session.exec(
        select(RemoteSession)
        .join(Device, col(Device.id) == col(RemoteSession.device_id))
        .where(Device.customer_number == number, scope.devices())
        .order_by(col(RemoteSession.created_at).desc())
        .limit(RECENT)
    ).all()
    recent_calls, _ = calls.list_calls(session, customer_number=number, limit=RECENT, scope=scope)
    return render(
        request,
        "customer.html",
        {
            "viewer": viewer,
            "title": f"{customer.name} ({customer.number})",
            "nav": "customers",
            "customer": records.customer_public(session, customer),
            "devices": devices,
            "incidents": incidents,
            "sessions": sessions,
            "calls": recent_calls,
            "voice": customer_voice(session, customer_number=number),
        },
    )


@router.get("/desk/call")
def screen_pop(
    session: SessionDep,
    viewer: ViewerDep,
    request: Request,
    ani: Annotated[str, Query(min_length=1, max_length=64)],
    customer_no: Annotated[str | None, Query(max_length=32)] = None,
    call_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """An incoming call: record it, then open what the caller's number matched (within the
    viewer's scope: a number of another customer is "no match")."""
    import re

    if not viewer.can("operator"):
        return forbidden(request, viewer, "operator")
    keyed = customer_no if customer_no and re.fullmatch(_NUMBER, customer_no) else None
    if keyed is not None and session.get(Customer, keyed) is None:
        keyed = None  # a mistyped IVR entry: match the number alone
    match = calls.lookup(
        session,
        ani=ani,
        customer_number=keyed,
        default_region=request.app.state.settings.phone_default_region,
        strict=False,
        scope=viewer.scope,
    )
    now = utcnow()
    device = match.devices[0].id if len(match.devices) == 1 else None
    call = calls.record_call(
        session,
        ani=ani,
        ani_e164=match.ani_e164,
        operator=viewer.user.username,
        customer_number=match.customer.number if match.customer else None,
        device_id=device,
        external_id=call_id,
        started_at=now,
        answered_at=now,
    )
    if device is not None:
        target = f"/devices/{device}?call={call.id}"
    elif match.customer is not None:
        target = f"/customers/{match.customer.number}?call={call.id}"
    else:
        target = f"/desk?call={call.id}"
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
