"""Incidents: record, close and find call-center cases; CSV import and export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import Engine
from sqlmodel import Session

from server.api.csv_upload import CSV_BODY, CSV_RESPONSES, csv_stream, import_csv
from server.api.deps import (
    UNSCOPED,
    ManagerUser,
    OperatorUser,
    ScopeDep,
    SessionDep,
    SettingsDep,
    client_address,
    get_engine,
)
from server.api.responses import DB_INT_MAX, PLAIN_TEXT, error_response
from server.incidents import records as service
from server.incidents.csv_io import (
    ImportReport,
    export_incidents_csv,
    import_incidents_csv,
)
from server.incidents.similar import SimilarCases, model_of, similar_cases
from server.models import (
    Incident,
    IncidentClose,
    IncidentCreate,
    IncidentEscalate,
    IncidentPublic,
    IncidentsPublic,
    IncidentUpdate,
)
from server.surveys.records import after_close, url_of_incident

router = APIRouter(prefix="/incidents", tags=["incidents"])

EngineDep = Annotated[Engine, Depends(get_engine)]
StateQuery = Annotated[str | None, Query(pattern="^(open|closed)$")]
ResolutionQuery = Annotated[str | None, Query(pattern="^(remote|phone|dispatch|no_fault)$")]
FromQuery = Annotated[
    datetime | None, Query(alias="from", description="inclusive; UTC when no offset is given")
]
ToQuery = Annotated[
    datetime | None, Query(alias="to", description="exclusive; UTC when no offset is given")
]
OnQuery = Annotated[service.TimeField, Query(description="the timestamp that from/to bound")]
AssigneeQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=64, description="a user name, or `me` for the caller's"),
]
MineQuery = Annotated[bool, Query(description="only the caller's incidents (as assignee=me)")]
#: An incident id in a path: bounded like every integer the API takes.
IncidentId = Annotated[int, Path(ge=1, le=DB_INT_MAX)]


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _with_sessions(session: Session, incident: Incident, incident_id: int) -> IncidentPublic:
    """The incident as the API shows it, with the remote sessions linked to it."""
    linked = service.session_ids_of(session, [incident_id])
    return service.to_public(incident, linked[incident_id])


def _unprocessable(exc: service.IncidentInvalid) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[
            {"loc": ["body", p.field], "msg": p.message, "type": "value_error"}
            for p in exc.problems
        ],
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_incident(
    body: IncidentCreate, session: SessionDep, _user: OperatorUser, scope: ScopeDep
) -> IncidentPublic:
    """Record an incident; ``down_at`` defaults to ``opened_at``."""
    scope.check_device(session, body.device_id)
    try:
        incident = service.create_incident(session, data=body)
    except service.IncidentInvalid as exc:
        raise _unprocessable(exc) from exc
    return service.to_public(incident)


def _assignee(assignee: str | None, mine: bool, username: str) -> str | None:
    if mine or assignee == "me":
        return username
    return assignee


@router.get("")
def list_incidents(
    session: SessionDep,
    user: OperatorUser,
    scope: ScopeDep,
    device_id: Annotated[str | None, Query(max_length=63)] = None,
    customer: Annotated[str | None, Query(max_length=256)] = None,
    state: StateQuery = None,
    resolution: ResolutionQuery = None,
    start: FromQuery = None,
    end: ToQuery = None,
    on: OnQuery = "opened_at",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
    assignee: AssigneeQuery = None,
    mine: MineQuery = False,
) -> IncidentsPublic:
    """List incidents, newest first; ``from``/``to`` bound ``opened_at`` or ``closed_at``.

    ``assignee=me`` (or ``mine=true``) lists the caller's own incidents.
    """
    rows, total = service.list_incidents(
        session,
        device_id=device_id,
        customer=customer,
        state=state,
        resolution=resolution,
        start=_aware(start),
        end=_aware(end),
        time_field=on,
        limit=limit,
        offset=offset,
        assignee=_assignee(assignee, mine, user.username),
        scope=scope,
    )
    linked = service.session_ids_of(session, (row.id for row in rows if row.id is not None))
    return IncidentsPublic(
        items=[service.to_public(row, linked.get(row.id or 0, [])) for row in rows],
        count=total,
    )


@router.post("/import", responses=CSV_RESPONSES, openapi_extra=CSV_BODY, dependencies=[UNSCOPED])
async def import_incidents(
    request: Request, session: SessionDep, _user: ManagerUser
) -> ImportReport:
    """Import a CSV of incidents: all rows or none; idempotent on ``external_id``."""
    return await import_csv(request, lambda lines: import_incidents_csv(session, lines))


@router.get("/export", response_class=StreamingResponse)
def export_incidents(
    engine: EngineDep,
    _user: ManagerUser,
    scope: ScopeDep,
    device_id: Annotated[str | None, Query(max_length=63)] = None,
    customer: Annotated[str | None, Query(max_length=256)] = None,
    state: StateQuery = None,
    resolution: ResolutionQuery = None,
    start: FromQuery = None,
    end: ToQuery = None,
    on: OnQuery = "opened_at",
) -> StreamingResponse:
    """Export incidents as CSV (docs/kpis.md's columns), with the list's filters."""
    where = service.incident_filters(
        device_id=device_id,
        customer=customer,
        state=state,
        resolution=resolution,
        start=_aware(start),
        end=_aware(end),
        time_field=on,
        scope=scope,
    )

    def body() -> Iterator[str]:
        with engine.connect() as connection:
            yield from export_incidents_csv(connection, where)

    return csv_stream(body(), "incidents.csv")


@router.get("/similar")
def similar_by_code(
    session: SessionDep,
    _user: OperatorUser,
    scope: ScopeDep,
    error_code: Annotated[str, Query(min_length=1, max_length=128, pattern=PLAIN_TEXT)],
    model: Annotated[str | None, Query(min_length=1, max_length=128, pattern=PLAIN_TEXT)] = None,
) -> SimilarCases:
    """Past cases of an error code (the ``model``'s first) in the user's scope: docs/kpis.md."""
    return similar_cases(session, error_code=error_code, model=model, scope=scope)


@router.get("/{incident_id}/similar")
def similar_to_incident(
    incident_id: IncidentId, session: SessionDep, _user: OperatorUser, scope: ScopeDep
) -> SimilarCases:
    """Past cases of this incident's error code, its device's model first (itself left out).

    An incident without an error code has none: ``count`` 0.
    """
    incident = service.get_incident(session, incident_id=incident_id, scope=scope)
    model = model_of(session, incident.device_id)
    return similar_cases(
        session,
        error_code=incident.error_code or "",
        model=model,
        exclude_id=incident_id,
        scope=scope,
    )


@router.post("/{incident_id}/close")
def close_incident(
    incident_id: IncidentId,
    body: IncidentClose,
    session: SessionDep,
    settings: SettingsDep,
    _user: OperatorUser,
    scope: ScopeDep,
) -> IncidentPublic:
    """Close an open incident in one step (``restored_at`` defaults as documented); its
    customer survey is made (``survey_url``) and e-mailed when so configured."""
    service.get_incident(session, incident_id=incident_id, scope=scope)
    try:
        incident = service.close_incident(session, incident_id=incident_id, data=body)
    except service.IncidentInvalid as exc:
        raise _unprocessable(exc) from exc
    survey = after_close(session, settings, incident)
    linked = service.session_ids_of(session, [incident_id])
    return service.to_public(incident, linked[incident_id], survey_url=survey)


@router.post(
    "/{incident_id}/escalate",
    responses={
        404: error_response("No such incident"),
        409: error_response("The incident is closed"),
    },
)
def escalate_incident(
    incident_id: IncidentId,
    body: IncidentEscalate,
    request: Request,
    session: SessionDep,
    user: OperatorUser,
    scope: ScopeDep,
) -> IncidentPublic:
    """Hand an open incident to a tier (1 call center, 2 remote specialist, 3 field)
    and/or a user, with a handover note; audited as ``incident.escalate``."""
    service.get_incident(session, incident_id=incident_id, scope=scope)
    try:
        incident = service.escalate_incident(
            session,
            incident_id=incident_id,
            data=body,
            actor=user.username,
            source_ip=client_address(request),
        )
    except service.IncidentInvalid as exc:
        raise _unprocessable(exc) from exc
    return _with_sessions(session, incident, incident_id)


@router.get("/{incident_id}")
def get_incident(
    incident_id: IncidentId,
    session: SessionDep,
    settings: SettingsDep,
    _user: OperatorUser,
    scope: ScopeDep,
) -> IncidentPublic:
    """One incident with the remote sessions linked to it (and its survey's link)."""
    incident = service.get_incident(session, incident_id=incident_id, scope=scope)
    linked = service.session_ids_of(session, [incident_id])
    survey = url_of_incident(session, settings, incident_id)
    return service.to_public(incident, linked[incident_id], survey_url=survey)


@router.patch("/{incident_id}")
def update_incident(
    incident_id: IncidentId,
    body: IncidentUpdate,
    session: SessionDep,
    settings: SettingsDep,
    _user: OperatorUser,
    scope: ScopeDep,
) -> IncidentPublic:
    """Update an incident; close it with ``closed_at``, ``resolution`` and ``restored_at``
    (closing makes its customer survey, as ``/close`` does)."""
    was_open = service.get_incident(session, incident_id=incident_id, scope=scope).closed_at is None
    try:
        incident = service.update_incident(session, incident_id=incident_id, data=body)
    except service.IncidentInvalid as exc:
        raise _unprocessable(exc) from exc
    if was_open and incident.closed_at is not None:
        survey = after_close(session, settings, incident)
    else:
        survey = url_of_incident(session, settings, incident_id)
    linked = service.session_ids_of(session, [incident_id])
    return service.to_public(incident, linked[incident_id], survey_url=survey)
