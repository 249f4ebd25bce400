"""Maintenance windows in the database: create, list, delete, and which devices are in one.

A window names one device, or a customer (all its devices), or one site of a
customer (its devices whose ``site`` is that name). :func:`open_windows` is what
the ingest and the notifications ask, once per batch of faults: one query for
the windows of the devices concerned, evaluated in process.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from server import audit
from server.maintenance.schedule import (
    Timing,
    local_start,
    next_starts,
    normal_rule,
    occurrence_at,
    parse_rule,
    zone,
)
from server.models import Customer, Device
from server.models.maintenance import (
    MaintenanceWindow,
    MaintenanceWindowCreate,
    MaintenanceWindowPublic,
)
from shared.errors import InvalidInput, NotFound
from shared.ids import utcnow

WINDOW = MaintenanceWindow.__table__  # type: ignore[attr-defined]
DEVICE = Device.__table__  # type: ignore[attr-defined]


def timing(window: MaintenanceWindow) -> Timing:
    """What decides when ``window`` is open."""
    return Timing(window.starts_at, window.duration_minutes, window.rrule, window.timezone)


def create(session: Session, *, data: MaintenanceWindowCreate, actor: str) -> MaintenanceWindow:
    """Record a window (audited, commits).

    Raises:
        NotFound: for an unknown device or customer.
        InvalidInput: for an unknown time zone or a rule a window cannot have.
    """
    if data.device_id is not None and session.get(Device, data.device_id) is None:
        msg = f"device {data.device_id} not found"
        raise NotFound(msg)
    if data.customer_number is not None and session.get(Customer, data.customer_number) is None:
        msg = f"customer {data.customer_number} not found"
        raise NotFound(msg)
    zone(data.timezone)
    starts_at = local_start(data.start, data.timezone)
    rule = normal_rule(data.rrule) if data.rrule is not None else None
    if rule is not None:
        parse_rule(rule, starts_at, data.timezone)
    window = MaintenanceWindow(
        device_id=data.device_id,
        customer_number=data.customer_number,
        site=data.site,
        starts_at=starts_at,
        duration_minutes=data.duration_minutes,
        rrule=rule,
        timezone=data.timezone,
        reason=data.reason.strip(),
        preapprove_sessions=data.preapprove_sessions,
        created_by=actor,
    )
    session.add(window)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="maintenance.create",
        target=target_of(window),
        details={
            "window": window.id,
            "starts_at": starts_at.isoformat(),
            "duration_minutes": window.duration_minutes,
            "rrule": rule,
            "timezone": window.timezone,
            "preapprove_sessions": window.preapprove_sessions,
        },
    )
    session.commit()
    session.refresh(window)
    return window


def target_of(window: MaintenanceWindow) -> str:
    """What the window covers, as the audit log names it."""
    if window.device_id is not None:
        return f"device:{window.device_id}"
    site = f"/{window.site}" if window.site is not None else ""
    return f"customer:{window.customer_number}{site}"


def get(session: Session, window_id: int) -> MaintenanceWindow:
    """The window with that id.

    Raises:
        NotFound: when there is none.
    """
    window = session.get(MaintenanceWindow, window_id)
    if window is None:
        msg = f"maintenance window {window_id} not found"
        raise NotFound(msg)
    return window


def delete(session: Session, *, window_id: int, actor: str) -> None:
    """Remove a window (audited, commits)."""
    window = get(session, window_id)
    target = target_of(window)
    session.delete(window)
    audit.record(
        session,
        actor=actor,
        action="maintenance.delete",
        target=target,
        details={"window": window_id},
    )
    session.commit()


def _applies(device: sa.Table) -> sa.ColumnElement[bool]:
    return sa.or_(
        WINDOW.c.device_id == device.c.id,
        sa.and_(
            WINDOW.c.customer_number == device.c.customer_number,
            sa.or_(WINDOW.c.site.is_(None), WINDOW.c.site == device.c.site),
        ),
    )


def windows_of_device(session: Session, device_id: str) -> list[MaintenanceWindow]:
    """Every window that covers the device (its own, its customer's, its site's).

    Raises:
        NotFound: for an unknown device.
    """
    if session.get(Device, device_id) is None:
        msg = f"device {device_id} not found"
        raise NotFound(msg)
    ids = sa.select(WINDOW.c.id).join(DEVICE, _applies(DEVICE)).where(DEVICE.c.id == device_id)
    statement = (
        select(MaintenanceWindow)
        .where(col(MaintenanceWindow.id).in_(ids))
        .order_by(col(MaintenanceWindow.starts_at))
    )
    return list(session.exec(statement).all())


def preapproving_window(session: Session, device_id: str, at: datetime) -> MaintenanceWindow | None:
    """A window covering the device at ``at`` that pre-approves its sessions, if any."""
    for window in windows_of_device(session, device_id):
        if window.preapprove_sessions and occurrence_at(timing(window), at) is not None:
            return window
    return None


def list_windows(
    session: Session, *, customer_number: str | None = None, limit: int = 500
) -> list[MaintenanceWindow]:
    """Windows, newest first; ``customer_number``: that customer's (its devices' included)."""
    statement = select(MaintenanceWindow)
    if customer_number is not None:
        devices = sa.select(DEVICE.c.id).where(DEVICE.c.customer_number == customer_number)
        statement = statement.where(
            sa.or_(
                col(MaintenanceWindow.customer_number) == customer_number,
                col(MaintenanceWindow.device_id).in_(devices),
            )
        )
    statement = statement.order_by(col(MaintenanceWindow.id).desc()).limit(limit)
    return list(session.exec(statement).all())


def open_windows(conn: Connection, device_ids: Iterable[str], at: datetime) -> dict[str, int]:
    """The devices among ``device_ids`` in a window at ``at``: device id -> that window's id."""
    return {
        device_id: window_id
        for (device_id, _), window_id in covered(conn, [(d, at) for d in device_ids]).items()
    }


def covered(
    conn: Connection, moments: Iterable[tuple[str, datetime]]
) -> dict[tuple[str, datetime], int]:
    """Which ``(device id, time)`` pairs fall in a window: pair -> that window's id.

    One query for the windows of the devices named, evaluated in process.
    """
    wanted = sorted(set(moments))
    if not wanted:
        return {}
    latest = max(at for _, at in wanted)
    rows = conn.execute(
        sa.select(
            DEVICE.c.id,
            WINDOW.c.id,
            WINDOW.c.starts_at,
            WINDOW.c.duration_minutes,
            WINDOW.c.rrule,
            WINDOW.c.timezone,
        )
        .select_from(DEVICE.join(WINDOW, _applies(DEVICE)))
        .where(DEVICE.c.id.in_({device_id for device_id, _ in wanted}))
        .where(WINDOW.c.starts_at <= latest)
        .order_by(WINDOW.c.id)
    ).all()
    by_device: dict[str, list[tuple[int, Timing]]] = {}
    for device_id, window_id, starts_at, minutes, rule, tz in rows:
        by_device.setdefault(device_id, []).append(
            (window_id, Timing(starts_at, minutes, rule, tz))
        )
    found: dict[tuple[str, datetime], int] = {}
    for device_id, at in wanted:
        for window_id, when in by_device.get(device_id, ()):
            try:
                if occurrence_at(when, at) is not None:
                    found[device_id, at] = window_id
                    break
            except InvalidInput:
                # A zone the zone database no longer knows: that window never opens.
                continue
    return found


def to_public(window: MaintenanceWindow, now: datetime | None = None) -> MaintenanceWindowPublic:
    """The window as the API shows it, with the occurrence in progress and the next ones."""
    now = now or utcnow()
    when = timing(window)
    active = occurrence_at(when, now)
    return MaintenanceWindowPublic.model_validate(
        window,
        update={
            "active": list(active) if active is not None else None,
            "next_starts": next_starts(when, now),
        },
    )
