"""Maintenance windows: ``/api/v1/maintenance-windows``.

Operators plan and remove windows, a site user those of their own customers' devices.
A window that pre-approves sessions gives the site's consent in advance: only the site
(a ``site`` user, for their devices) or an administrator may create or remove one.
Every route answers within the user's scope (:mod:`server.scope`): a window of a device
or customer outside it is 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from sqlmodel import Session

from server.api.deps import ScopeDep, SessionDep, SiteUser
from server.api.responses import DB_INT_MAX
from server.maintenance import records
from server.models import (
    MaintenanceWindow,
    MaintenanceWindowCreate,
    MaintenanceWindowPublic,
    MaintenanceWindowsPublic,
    User,
    role_at_least,
)
from server.scope import Scope
from shared.errors import NotFound
from shared.ids import utcnow

router = APIRouter(prefix="/maintenance-windows", tags=["maintenance"])
WindowId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]


def _may_preapprove(user: User) -> None:
    if user.role != "site" and not role_at_least(user.role, "admin"):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="only the site or an administrator may pre-approve sessions for a window",
        )


def _seen(session: Session, scope: Scope, window: MaintenanceWindow) -> bool:
    try:
        _visible(session, scope, window)
    except NotFound:
        return False
    return True


def _visible(session: Session, scope: Scope, window: MaintenanceWindow) -> MaintenanceWindow:
    """``window`` when its device or customer is in ``scope``; 404 (as unknown) otherwise."""
    seen = (
        scope.sees_device(session, window.device_id)
        if window.device_id is not None
        else window.customer_number is not None
        and scope.sees_customer(session, window.customer_number)
    )
    if not seen:
        msg = f"maintenance window {window.id} not found"
        raise NotFound(msg)
    return window


@router.get("")
def list_windows(
    session: SessionDep,
    _user: SiteUser,
    scope: ScopeDep,
    device_id: Annotated[
        str | None,
        Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$", description="windows covering it"),
    ] = None,
    customer: Annotated[
        str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> MaintenanceWindowsPublic:
    """Windows, with the occurrence in progress and the next ones.

    ``device_id``: every window covering that device (its own, its customer's, its
    site's); ``customer``: the customer's windows and its devices'.
    """
    if device_id is not None:
        scope.check_device(session, device_id)
        windows = records.windows_of_device(session, device_id)
    else:
        windows = records.list_windows(session, customer_number=customer, limit=limit)
    now = utcnow()
    items = [
        records.to_public(window, now)
        for window in windows
        if scope.unrestricted or _seen(session, scope, window)
    ]
    return MaintenanceWindowsPublic(items=items, count=len(items))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_window(
    body: MaintenanceWindowCreate, session: SessionDep, user: SiteUser, scope: ScopeDep
) -> MaintenanceWindowPublic:
    """Plan a window (one-off, or recurring with an RRULE in ``timezone``); audited."""
    if body.preapprove_sessions:
        _may_preapprove(user)
    if body.device_id is not None:
        scope.check_device(session, body.device_id)
    elif body.customer_number is not None and not scope.sees_customer(
        session, body.customer_number
    ):
        msg = f"customer {body.customer_number} not found"
        raise NotFound(msg)
    window = records.create(session, data=body, actor=user.username)
    return records.to_public(window)


@router.get("/{window_id}")
def get_window(
    window_id: WindowId, session: SessionDep, _user: SiteUser, scope: ScopeDep
) -> MaintenanceWindowPublic:
    """One window."""
    return records.to_public(_visible(session, scope, records.get(session, window_id)))


@router.delete("/{window_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_window(
    window_id: WindowId, session: SessionDep, user: SiteUser, scope: ScopeDep
) -> Response:
    """Remove a window; audited."""
    if _visible(session, scope, records.get(session, window_id)).preapprove_sessions:
        _may_preapprove(user)
    records.delete(session, window_id=window_id, actor=user.username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
