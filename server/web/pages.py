"""The operators' pages: the desk, a device, a session, incidents.

Every page reads the database directly (one request, a handful of indexed
queries) and renders HTML; what it changes goes through ``/api/v1`` from the
page's script. The managers' dashboard and the admin pages live in
:mod:`server.web.dashboard` and :mod:`server.web.admin`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, func, select

from server import crud, i18n
from server.api.deps import SessionDep
from server.incidents.records import list_incidents, session_ids_of
from server.maintenance import records as maintenance
from server.models import (
    BOUND_ROLES,
    DEVICE_TYPES,
    Alert,
    Device,
    Incident,
    RemoteSession,
    RemoteSessionPublic,
)
from server.scope import Scope
from server.sessions.approval import can_approve
from server.sessions.repository import may_observe, observable_sessions
from server.web import (
    account,
    admin,
    approval_link,
    dashboard,
    finder,
    notify_admin,
    preferences,
    texts,
    tokens,
)
from server.web import customers as customer_pages
from server.web import site as site_pages
from server.web.auth import Viewer, ViewerDep, forbidden
from server.web.auth import router as auth_router
from server.web.diagnostics import diagnostics_for
from server.web.readings import DeviceReadings
from server.web.templating import gettext, page_language, render
from server.web.voice import callbacks, customer_voice, survey_links
from shared.errors import NotFound
from shared.wire import HEALTH_STATUSES

router = APIRouter(include_in_schema=False)
router.include_router(auth_router)
router.include_router(account.router)
router.include_router(dashboard.router)
router.include_router(admin.router)
router.include_router(notify_admin.router)
router.include_router(finder.router)
router.include_router(customer_pages.router)
router.include_router(approval_link.router)
router.include_router(preferences.router)
router.include_router(tokens.router)
router.include_router(site_pages.router)

#: Devices per page of the desk's fleet list.
FLEET_PAGE = 50
#: Open incidents the desk shows.
DESK_INCIDENTS = 12
INCIDENTS_PAGE = 50
STATUSES = HEALTH_STATUSES
RESOLUTIONS = ("remote", "phone", "dispatch", "no_fault")
CHANNELS = ("phone", "web", "email", "alert")
_TEXT = Annotated[str | None, Query(max_length=128)]


def _page(request: Request, name: str, viewer: Viewer | None, **context: Any) -> HTMLResponse:
    return render(request, name, {"viewer": viewer, **context})


def not_found(request: Request, viewer: Viewer, what: str) -> HTMLResponse:
    """The 404 page."""
    return render(
        request,
        "not_found.html",
        {"viewer": viewer, "what": what, "title": "Not found"},
        status_code=status.HTTP_404_NOT_FOUND,
    )


@router.get("/")
def home(viewer: ViewerDep) -> Response:
    """The desk for everyone (managers and admins are operators too)."""
    del viewer
    return RedirectResponse("/desk", status_code=status.HTTP_303_SEE_OTHER)


# The desk.


@dataclass(frozen=True)
class FleetFilters:
    """The desk's search and filters, as they travel in the query string."""

    q: str = ""
    online: str = ""  # "", "yes", "no"
    type: str = ""
    status: str = ""
    customer: str = ""
    page: int = 1

    @classmethod
    def parse(
        cls,
        q: str | None,
        online: str | None,
        device_type: str | None,
        health: str | None,
        customer: str | None,
        page: int,
    ) -> FleetFilters:
        """Filters from the query string; unknown values are ignored, not refused."""
        return cls(
            q=(q or "").strip(),
            online=online if online in ("yes", "no") else "",
            type=device_type if device_type in DEVICE_TYPES else "",
            status=health if health in STATUSES else "",
            customer=(customer or "").strip(),
            page=max(1, page),
        )

    def query(self, **changes: Any) -> str:
        """The query string of these filters with ``changes``, empty values left out."""
        values = asdict(replace(self, **changes))
        if values["page"] == 1:
            del values["page"]
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})

    @property
    def active(self) -> bool:
        """Whether anything narrows the list."""
        return any((self.q, self.online, self.type, self.status, self.customer))


@dataclass
class Fleet:
    """One page of the fleet list."""

    devices: list[Device]
    total: int
    open_faults: dict[str, int]
    filters: FleetFilters

    @property
    def pages(self) -> int:
        """How many pages the filtered fleet takes."""
        return max(1, -(-self.total // FLEET_PAGE))


def load_fleet(session: Session, filters: FleetFilters, scope: Scope) -> Fleet:
    """The page of devices (in ``scope``) the filters select, with their open fault counts."""
    rows, total = crud.list_devices(
        session,
        q=filters.q or None,
        online={"yes": True, "no": False}.get(filters.online),
        device_type=filters.type or None,
        customer=filters.customer or None,
        status=filters.status or None,
        limit=FLEET_PAGE,
        offset=(filters.page - 1) * FLEET_PAGE,
        scope=scope,
    )
    ids = [row.id for row in rows]
    faults: dict[str, int] = {}
    if ids:
        counted = session.exec(
            select(Alert.device_id, func.count())
            .where(col(Alert.device_id).in_(ids), col(Alert.open).is_(True))
            .group_by(col(Alert.device_id))
        ).all()
        faults = {device_id: int(count) for device_id, count in counted}
    return Fleet(devices=list(rows), total=total, open_faults=faults, filters=filters)


def open_incidents(session: Session, limit: int, scope: Scope) -> list[Incident]:
    """The newest open incidents."""
    rows, _ = list_incidents(session, state="open", limit=limit, scope=scope)
    return list(rows)


def my_incidents(
    session: Session, username: str, limit: int, scope: Scope
) -> tuple[list[Incident], dict[int, list[str]]]:
    """The open incidents assigned to ``username``, newest first (the desk's "my incidents"),
    and the open sessions serving each (to watch them)."""
    rows, _ = list_incidents(session, state="open", assignee=username, limit=limit, scope=scope)
    ids = [row.id for row in rows if row.id is not None]
    return list(rows), observable_sessions(session, ids)


def alert_incidents(session: Session, limit: int, scope: Scope) -> list[Incident]:
    """The open incidents device faults opened, newest fault first (before anyone calls)."""
    return list(
        session.exec(
            select(Incident)
            .where(
                col(Incident.channel) == "alert",
                col(Incident.closed_at).is_(None),
                scope.where_device(col(Incident.device_id)),
            )
            .order_by(col(Incident.down_at).desc(), col(Incident.id).desc())
            .limit(limit)
        ).all()
    )


def customers(session: Session, scope: Scope, limit: int = 500) -> list[str]:
    """Customer names (in ``scope``) for the filter's suggestions."""
    return list(
        session.exec(
            select(Device.customer)
            .where(scope.devices())
            .distinct()
            .order_by(col(Device.customer))
            .limit(limit)
        ).all()
    )


def fleet_filters(
    q: _TEXT = None,
    online: _TEXT = None,
    type: _TEXT = None,
    status: _TEXT = None,
    customer: Annotated[str | None, Query(max_length=256)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> FleetFilters:
    """The desk's filters from its query string (the desk and its live refresh)."""
    return FleetFilters.parse(q, online, type, status, customer, page)


FleetFiltersDep = Annotated[FleetFilters, Depends(fleet_filters)]


@router.get("/desk", response_class=HTMLResponse)
def desk(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    filters: FleetFiltersDep,
) -> Response:
    """The call-center desk: find the caller's device, the fleet, open incidents."""
    if not viewer.can("operator"):
        return RedirectResponse("/site", status_code=303)  # a site user's own page
    scope = viewer.scope
    mine, watchable = my_incidents(session, viewer.user.username, DESK_INCIDENTS, scope)
    return _page(
        request,
        "desk.html",
        viewer,
        title="Desk",
        nav="desk",
        fleet=load_fleet(session, filters, scope),
        incidents=open_incidents(session, DESK_INCIDENTS, scope),
        my_incidents=mine,
        watchable=watchable,
        alert_incidents=alert_incidents(session, DESK_INCIDENTS, scope),
        callbacks=callbacks(session, scope),
        customers=customers(session, scope),
        device_types=DEVICE_TYPES,
        statuses=STATUSES,
    )


@router.get("/desk/fleet", response_class=HTMLResponse)
def desk_fleet(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    filters: FleetFiltersDep,
) -> HTMLResponse:
    """The fleet table's rows alone, for the desk's live refresh."""
    return _page(request, "_fleet.html", viewer, fleet=load_fleet(session, filters, viewer.scope))


# A device.


#: The metric of each device type that tells most about its health.
TYPE_METRICS = {
    "mfp": "mfp.toner_black_percent",
    "imaging": "imaging.cache_disk_percent",
    "server": "server.disk_data_percent",
}


def chart_metrics(device: Device) -> list[str]:
    """The metrics the device page charts: the common ones, then its type's own."""
    metrics = device.health or {}
    common: tuple[str, ...] = ("cpu_percent", "mem_percent", "disk_percent:/")
    chosen = [m for m in common if m in metrics]
    if not chosen:
        chosen = ["cpu_percent", "mem_percent"]
    own = TYPE_METRICS.get(device.type)
    if own is not None and own in metrics:
        chosen.append(own)
    return chosen


def _broker_revocation(request: Request, device: Device) -> dict[str, Any] | None:
    """The broker's state of a revoked device's revocation, when it is not applied yet."""
    if device.revoked_at is None:
        return None
    from provisioning.broker_update import load_update_state
    from provisioning.pki import PkiPaths

    state = load_update_state(PkiPaths.under(request.app.state.settings.state_dir))
    return state.public() if state.revocation_pending(device.id) else None


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device_page(
    device_id: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> HTMLResponse:
    """A device: identity and contract, live health and charts, faults, sessions, incidents
    (a site user sees no incidents and opens no session)."""
    try:
        device = viewer.scope.device(session, device_id)
    except NotFound:
        return not_found(request, viewer, f"device {device_id}")
    alerts = list(crud.recent_alerts(session, device_id=device_id, limit=50))
    sessions = session.exec(
        select(RemoteSession)
        .where(RemoteSession.device_id == device_id)
        .order_by(col(RemoteSession.created_at).desc())
        .limit(10)
    ).all()
    incidents, _ = list_incidents(session, device_id=device_id, limit=10)
    windows = [maintenance.to_public(w) for w in maintenance.windows_of_device(session, device_id)]
    if not viewer.can("operator"):
        incidents = []
    return _page(
        request,
        "device.html",
        viewer,
        broker_revocation=_broker_revocation(request, device),
        title=device.id,
        nav="desk",
        device=device,
        readings=DeviceReadings(device.type, device.health),
        open_faults=[a for a in alerts if a.open],
        alerts=alerts,
        sessions=sessions,
        can_approve=can_approve(viewer.user, device),
        incidents=incidents,
        watched=crud.watched_by(session, gateway_id=device.id),
        open_incident_ids=[i.id for i in incidents if i.closed_at is None],
        chart_metrics=chart_metrics(device),
        channels=CHANNELS,
        windows=[w for w in windows if w.active is not None or w.next_starts],
        in_maintenance=next((w for w in windows if w.active is not None), None),
        voice=customer_voice(session, customer_number=device.customer_number, device_id=device.id),
    )


@router.get("/devices/{device_id}/health", response_class=HTMLResponse)
def device_health(
    device_id: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> HTMLResponse:
    """The device page's "Health now" rows alone, for its live refresh."""
    try:
        device = viewer.scope.device(session, device_id)
    except NotFound:
        return not_found(request, viewer, f"device {device_id}")
    return _page(
        request, "_health.html", viewer, readings=DeviceReadings(device.type, device.health)
    )


# A session.


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
def session_page(
    session_id: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> HTMLResponse:
    """A remote session: its state, the terminal, services, diagnostics, the recording.

    A site user sees every session on their devices (to end it, to play its recording).
    """
    row = _session_in_scope(session, viewer, session_id)
    if row is None:
        return not_found(request, viewer, f"session {session_id}")
    site = viewer.user.role in BOUND_ROLES
    if not site and row.operator != viewer.user.username and not viewer.can("admin"):
        return forbidden(request, viewer, "admin (or the session's own operator)")
    device = session.get(Device, row.device_id)
    live = getattr(request.app.state, "sessions", None)
    public = RemoteSessionPublic.of(row)
    live_state = live.state(row.id) if live is not None else None
    if live_state is not None and row.state != "closed":
        public.state = live_state
    return _page(
        request,
        "session.html",
        viewer,
        title=_session_title(request, viewer, texts.SESSION_TITLE, row.id),
        nav="desk",
        s=public,
        device=device,
        diagnostics=[] if site else diagnostics_for(device.type if device else ""),
        ssh_port=None if site else getattr(request.app.state, "ssh_gateway_port", None),
        ssh_host=request.url.hostname or "server",
        observe=False,
        **texts.SESSION_PAGE_NAMES,
        can_approve=device is not None and can_approve(viewer.user, device),
    )


@router.get("/sessions/{session_id}/observe", response_class=HTMLResponse)
def observe_page(
    session_id: str, request: Request, session: SessionDep, viewer: ViewerDep
) -> HTMLResponse:
    """Watch a live session's terminal, read only (the incident's specialist or an admin)."""
    row = _session_in_scope(session, viewer, session_id)
    if row is None:
        return not_found(request, viewer, f"session {session_id}")
    if not may_observe(session, row, viewer.user):
        return forbidden(request, viewer, "admin (or the assignee of the session's incident)")
    device = session.get(Device, row.device_id)
    return _page(
        request,
        "session.html",
        viewer,
        title=_session_title(request, viewer, texts.WATCHING_TITLE, row.id),
        nav="desk",
        s=RemoteSessionPublic.of(row),
        device=device,
        diagnostics=[],
        ssh_port=None,
        ssh_host="",
        observe=True,
        **texts.SESSION_PAGE_NAMES,
    )


def _session_title(request: Request, viewer: Viewer, text: str, session_id: str) -> str:
    """A session page's title (``text`` a ``%(id)s`` template) in the page's language."""
    with i18n.use(page_language(request, {"viewer": viewer})):
        return gettext(text) % {"id": session_id}


def _session_in_scope(session: Session, viewer: Viewer, session_id: str) -> RemoteSession | None:
    row = session.get(RemoteSession, session_id)
    scope = viewer.scope
    if row is None or not (scope.unrestricted or scope.sees_device(session, row.device_id)):
        return None
    return row


# Incidents.


@router.get("/incidents", response_class=HTMLResponse)
def incidents_page(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    state: _TEXT = "open",
    device_id: Annotated[str | None, Query(max_length=63)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Incidents: the list, a new one, closing with a resolution, CSV in and out."""
    if not viewer.can("operator"):
        return forbidden(request, viewer, "operator")
    state = state if state in ("open", "closed") else ""
    rows, total = list_incidents(
        session,
        state=state or None,
        device_id=device_id or None,
        limit=INCIDENTS_PAGE,
        offset=(page - 1) * INCIDENTS_PAGE,
        scope=viewer.scope,
    )
    linked = session_ids_of(session, [r.id for r in rows if r.id is not None])
    query = {"state": state or "all", "device_id": device_id or ""}
    return _page(
        request,
        "incidents.html",
        viewer,
        title="Incidents",
        nav="incidents",
        incidents=rows,
        linked=linked,
        surveys=survey_links(
            session, request.app.state.settings, [r.id for r in rows if r.id is not None]
        ),
        total=total,
        state=state,
        device_id=device_id or "",
        page=page,
        pages=max(1, -(-int(total) // INCIDENTS_PAGE)),
        query=urlencode({k: v for k, v in query.items() if v}),
        resolutions=RESOLUTIONS,
        channels=CHANNELS,
        **texts.INCIDENT_PAGE_NAMES,
        export_query=urlencode(
            {k: v for k, v in {"state": state, "device_id": device_id or ""}.items() if v}
        ),
    )
