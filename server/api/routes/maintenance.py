"""Maintenance windows: ``/api/v1/maintenance-windows``.

Operators plan and remove windows; only an administrator may create (or remove) one
that pre-approves sessions, since that gives the site's consent in advance.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from server.api.deps import OperatorUser, SessionDep
from server.api.responses import DB_INT_MAX
from server.maintenance import records
from server.models import (
    MaintenanceWindowCreate,
    MaintenanceWindowPublic,
    MaintenanceWindowsPublic,
    User,
    role_at_least,
)
from shared.ids import utcnow

router = APIRouter(prefix="/maintenance-windows", tags=["maintenance"])
WindowId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]


def _may_preapprove(user: User) -> None:
    if not role_at_least(user.role, "admin"):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="only an administrator may pre-approve sessions for a window",
        )


@router.get("")
def list_windows(
    session: SessionDep,
    _user: OperatorUser,
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
        windows = records.windows_of_device(session, device_id)
    else:
        windows = records.list_windows(session, customer_number=customer, limit=limit)
    now = utcnow()
    items = [records.to_public(window, now) for window in windows]
    return MaintenanceWindowsPublic(items=items, count=len(items))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_window(
    body: MaintenanceWindowCreate, session: SessionDep, user: OperatorUser
) -> MaintenanceWindowPublic:
    """Plan a window (one-off, or recurring with an RRULE in ``timezone``); audited."""
    if body.preapprove_sessions:
        _may_preapprove(user)
    window = records.create(session, data=body, actor=user.username)
    return records.to_public(window)


@router.get("/{window_id}")
def get_window(
    window_id: WindowId, session: SessionDep, _user: OperatorUser
) -> MaintenanceWindowPublic:
    """One window."""
    return records.to_public(records.get(session, window_id))


@router.delete("/{window_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_window(window_id: WindowId, session: SessionDep, user: OperatorUser) -> Response:
    """Remove a window; audited."""
    if records.get(session, window_id).preapprove_sessions:
        _may_preapprove(user)
    records.delete(session, window_id=window_id, actor=user.username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
