"""The fleet: register devices, list and search them, show one with its health."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlmodel import SQLModel, col, select

from server import crud
from server.api.deps import UNSCOPED, AdminUser, ScopeDep, SessionDep, SettingsDep, SiteUser
from server.api.responses import DB_INT_MAX
from server.incidents.records import to_public
from server.models import (
    AlertPublic,
    DeviceCreate,
    DevicePublic,
    DevicesPublic,
    Incident,
    RemoteSession,
    RemoteSessionPublic,
    role_at_least,
)

router = APIRouter(prefix="/devices", tags=["devices"])

#: How many recent sessions and incidents a device's page shows.
RECENT = 10
#: How long a revocation waits for the broker's reload helper before answering "pending".
HELPER_WAIT_S = 2.0


class TelemetryStats(BaseModel):
    """What ingest counted for one device."""

    received: int
    missing: int
    rejected: int


class DeviceDetail(DevicePublic):
    """One device with its open faults, alert history and ingest accounting."""

    open_faults: list[AlertPublic]
    alerts: list[AlertPublic]
    telemetry_stats: TelemetryStats
    sessions: list[dict[str, Any]] = []
    incidents: list[dict[str, Any]] = []


class DeviceRegistered(SQLModel):
    """A newly registered device and its one-time enrollment token (shown only here).

    A device watched through a gateway (``via``) has no token (``null``): it runs no agent.
    """

    device: DevicePublic
    enrollment_token: str | None
    enrollment_expires_at: str | None


@router.get("")
def list_devices(
    session: SessionDep,
    _user: SiteUser,
    scope: ScopeDep,
    q: Annotated[
        str | None, Query(max_length=128, description="id, serial, customer, site or phone")
    ] = None,
    online: bool | None = None,
    type: Annotated[str | None, Query(max_length=16)] = None,
    customer: Annotated[str | None, Query(max_length=256)] = None,
    status: Annotated[str | None, Query(pattern="^(ok|warning|fault)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> DevicesPublic:
    """List the fleet; ``q`` finds a device by id, serial, customer, site or the caller's phone."""
    rows, total = crud.list_devices(
        session,
        q=q,
        online=online,
        device_type=type,
        customer=customer,
        status=status,
        limit=limit,
        offset=offset,
        scope=scope,
    )
    return DevicesPublic(items=[DevicePublic.model_validate(row) for row in rows], count=total)


@router.get("/{device_id}")
def get_device(
    device_id: str, session: SessionDep, user: SiteUser, scope: ScopeDep
) -> DeviceDetail:
    """One device with its latest health, open faults and ingest accounting (404 outside
    the user's scope); a site user gets no incidents."""
    device = scope.device(session, device_id)
    alerts = [
        AlertPublic.model_validate(a) for a in crud.recent_alerts(session, device_id=device_id)
    ]
    sessions = session.exec(
        select(RemoteSession)
        .where(RemoteSession.device_id == device_id)
        .order_by(col(RemoteSession.created_at).desc())
        .limit(RECENT)
    ).all()
    incidents = session.exec(
        select(Incident)
        .where(Incident.device_id == device_id)
        .order_by(col(Incident.opened_at).desc())
        .limit(RECENT)
    ).all()
    return DeviceDetail(
        **DevicePublic.model_validate(device).model_dump(),
        open_faults=[a for a in alerts if a.open],
        alerts=alerts,
        telemetry_stats=TelemetryStats(
            received=device.telemetry_received,
            missing=device.telemetry_missing,
            rejected=device.telemetry_rejected,
        ),
        sessions=[RemoteSessionPublic.of(row).model_dump(mode="json") for row in sessions],
        incidents=[
            to_public(row).model_dump(mode="json")
            for row in incidents
            if role_at_least(user.role, "operator")
        ],
    )


@router.post("", status_code=201, dependencies=[UNSCOPED])
def register_device(body: DeviceCreate, session: SessionDep, user: AdminUser) -> DeviceRegistered:
    """Register a device; the answer carries its one-time enrollment token.

    ``"via": "GATEWAY_ID"`` registers equipment watched over the network by that
    gateway's agent (422 when the gateway is unknown, is the device itself, or is
    itself watched through another gateway); such a device gets no token.
    """
    device, token = crud.register_device(session, data=body, actor=user.username)
    expires = device.enrollment_expires_at
    return DeviceRegistered(
        device=DevicePublic.model_validate(device),
        enrollment_token=token,
        enrollment_expires_at=expires.isoformat() if expires and token else None,
    )


class EnrollmentToken(SQLModel):
    """A fresh one-time enrollment token (shown only here)."""

    device_id: str
    enrollment_token: str
    enrollment_expires_at: str


@router.post("/{device_id}/enrollment-token", status_code=201)
def new_enrollment_token(
    device_id: str, session: SessionDep, user: AdminUser, scope: ScopeDep
) -> EnrollmentToken:
    """Issue a fresh one-time enrollment token for a device that is not enrolled (or revoked)."""
    scope.check_device(session, device_id)
    device, token = crud.new_enrollment_token(session, device_id=device_id, actor=user.username)
    expires = device.enrollment_expires_at
    return EnrollmentToken(
        device_id=device.id,
        enrollment_token=token,
        enrollment_expires_at=expires.isoformat() if expires else "",
    )


class BrokerUpdatePublic(SQLModel):
    """Whether the broker applied the revocation (CRL, ACL deny block, reload)."""

    state: str
    pending_since: str | None = None
    applied_at: str | None = None
    last_attempt_at: str | None = None
    last_error: str | None = None
    attempts: int = 0
    reload_by: str = "server"


class DeviceRevoked(DevicePublic):
    """A revoked device and the broker's state: ``applied``, ``pending`` (retried) or
    ``unmanaged`` (no broker folder written by ``fieldlink broker-config``)."""

    broker: BrokerUpdatePublic


@router.post("/{device_id}/revoke", status_code=202)
def revoke_device(
    device_id: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: AdminUser,
    scope: ScopeDep,
) -> DeviceRevoked:
    """Revoke a device now (database, server); the broker's update is applied or retried."""
    scope.check_device(session, device_id)
    from provisioning.broker_update import update_broker, wait_until_applied
    from provisioning.ca import CertificateAuthority
    from server.upkeep import set_broker_gauges

    ca = CertificateAuthority.load(settings.state_dir)
    device = crud.revoke_device(session, ca=ca, device_id=device_id, actor=user.username)
    sessions = getattr(request.app.state, "sessions", None)
    if sessions is not None:
        # Its open sessions end now: the device is no longer trusted.
        anyio.from_thread.run(
            partial(
                sessions.close_device,
                device_id,
                reason="error",
                actor=user.username,
                detail="the device was revoked",
            )
        )
    state = update_broker(ca.paths, device_id=device_id)
    if state.pending and state.reload_by == "helper":
        # The helper usually answers within a second; past that the answer says pending.
        state = wait_until_applied(ca.paths, state.generation, HELPER_WAIT_S)
    set_broker_gauges(state)
    return DeviceRevoked(
        **DevicePublic.model_validate(device).model_dump(),
        broker=BrokerUpdatePublic(**state.public()),
    )
