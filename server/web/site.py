"""A site user's console: their own devices and the sessions on them.

A ``site`` user (a customer's own IT, :mod:`server.scope`) has no desk, incidents,
customers, dashboard or admin pages; ``/site`` lists the devices of the customers they
are bound to and every session on them (live state, reason, operator, incident), those
awaiting consent first. Device and session pages are the console's own, in scope.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlmodel import col, select

from server import crud
from server.api.deps import SessionDep
from server.models import RemoteSession
from server.web.auth import ViewerDep
from server.web.templating import render

router = APIRouter()

#: How many devices and recent sessions the page lists.
SITE_DEVICES = 500
SITE_SESSIONS = 50


@router.get("/site", response_class=HTMLResponse)
def site_page(request: Request, session: SessionDep, viewer: ViewerDep) -> HTMLResponse:
    """The viewer's devices and the sessions on them (any user: in their scope)."""
    scope = viewer.scope
    devices, total = crud.list_devices(session, limit=SITE_DEVICES, scope=scope)
    in_scope = scope.where_device(col(RemoteSession.device_id))
    waiting = session.exec(
        select(RemoteSession)
        .where(in_scope, col(RemoteSession.state) == "awaiting_consent")
        .order_by(col(RemoteSession.created_at).desc())
    ).all()
    recent = session.exec(
        select(RemoteSession)
        .where(in_scope, col(RemoteSession.state) != "awaiting_consent")
        .order_by(col(RemoteSession.created_at).desc())
        .limit(SITE_SESSIONS)
    ).all()
    return render(
        request,
        "site.html",
        {
            "viewer": viewer,
            "title": "Your devices",
            "nav": "site",
            "devices": devices,
            "total": total,
            "waiting": waiting,
            "sessions": recent,
            "customers": sorted(scope.customers),
        },
    )
