"""Remote sessions in the database: their rows and their audit entries.

Functions of a database session ``db``, run in a worker thread by their
callers (:mod:`server.sessions.service`, :mod:`server.sessions.liveness`, the
gateway). A row changes state only by a conditional ``UPDATE`` whose
``WHERE`` names the states it may move from (:mod:`server.sessions.states`),
so two processes racing to move (or close) the same session move it once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from server import audit
from server.incidents.records import get_incident, link_session
from server.ingest import via
from server.models import (
    OPEN_STATES,
    Device,
    Incident,
    IncidentSession,
    RemoteSession,
    User,
    role_at_least,
)
from server.notify.events import consent_event, write_events
from server.scope import EVERYTHING, Scope
from server.sessions.limits import check_limits
from server.sessions.recording import file_digest
from server.sessions.states import earlier_than
from shared import wire
from shared.errors import Conflict, NotFound
from shared.ids import utcnow
from shared.wire import VIA_SESSIONS


def insert_session(
    db: Session,
    row: RemoteSession,
    *,
    source_ip: str | None,
    per_device: int,
    per_operator: int,
) -> tuple[str, str]:
    """Check the device, incident and limits; insert ``row`` with its audit entry.

    A device watched through a site gateway (``devices.via``) has no agent of its own:
    the gateway's agent runs its sessions, under the gateway's pinned host key.

    Returns:
        The pinned SSH host key (OpenSSH text) of the agent that runs the session, and
        that agent's device id (the device's own, or its gateway's).

    Raises:
        NotFound: Unknown device or incident.
        Conflict: Revoked device or gateway, no pinned host key, or a limit reached.
    """
    opener = db.exec(select(User).where(User.username == row.operator)).first()
    scope = Scope.of(opener) if opener is not None else EVERYTHING
    device = db.get(Device, row.device_id)
    if device is None or not (scope.unrestricted or scope.sees_device(db, row.device_id)):
        # Outside the operator's scope (the API, the SSH gateway): as if there were none.
        msg = f"no device {row.device_id!r}"
        raise NotFound(msg)
    if device.revoked_at is not None:
        msg = f"device {row.device_id} is revoked"
        raise Conflict(msg)
    agent: Device | None = device
    if device.via is not None:
        agent = db.get(Device, device.via)
    if agent is None or agent.revoked_at is not None:
        msg = f"device {row.device_id} is watched through {device.via}, which is revoked"
        raise Conflict(msg)
    if agent is not device and not via.has_capability(agent.capabilities, VIA_SESSIONS):
        # An older gateway agent ignores session.open's "device" and would open the
        # session on itself: refused until its birth says it runs sessions for its devices.
        msg = (
            f"gateway {agent.id} has not announced {VIA_SESSIONS!r} in its birth: its "
            f"agent is too old to open a session to {row.device_id}; upgrade it"
        )
        raise Conflict(msg)
    if not agent.ssh_host_key:
        msg = f"device {agent.id} has no pinned SSH host key: enroll it again"
        raise Conflict(msg)
    if row.incident_id is not None:
        get_incident(db, incident_id=row.incident_id, scope=scope)
    check_limits(
        db,
        device_id=row.device_id,
        operator=row.operator,
        per_device=per_device,
        per_operator=per_operator,
    )
    db.add(row)
    db.flush()
    audit.record(
        db,
        actor=row.operator,
        action="session.open",
        target=row.device_id,
        details={
            "session_id": row.id,
            "reason": row.reason,
            "incident_id": row.incident_id,
            "services": row.services,
            "origin": row.origin,
            "client_key": row.client_key_fingerprint,
            **({"via": agent.id} if agent is not device else {}),
        },
        source_ip=source_ip,
    )
    db.commit()
    if row.incident_id is not None:
        link_session(db, row.incident_id, row.id)
    return agent.ssh_host_key, agent.id


def get_session(db: Session, session_id: str) -> RemoteSession:
    """The session's row.

    Raises:
        NotFound: Unknown session.
    """
    row = db.get(RemoteSession, session_id)
    if row is None:
        msg = f"no session {session_id!r}"
        raise NotFound(msg)
    return row


def find_session(db: Session, session_id: str) -> RemoteSession | None:
    """The session's row, or ``None``."""
    return db.get(RemoteSession, session_id)


def holder_text(db: Session, session_id: str) -> str:
    """Why this process cannot use a session it does not follow (``closed``, or who holds it).

    Raises:
        NotFound: Unknown session.
    """
    row = get_session(db, session_id)
    return "closed" if row.state == "closed" else f"held by another server ({row.instance})"


def closed_among(db: Session, ids: list[str]) -> list[str]:
    """Which of ``ids`` are closed."""
    if not ids:
        return []
    rows = db.exec(
        select(RemoteSession.id).where(
            col(RemoteSession.id).in_(ids), RemoteSession.state == "closed"
        )
    ).all()
    return list(rows)


def advance_state(db: Session, session_id: str, state: str) -> None:
    """Move the row to ``state`` if it is in an earlier one (never backwards).

    A move to ``awaiting_consent`` also tells the notification worker, in the same
    transaction (rules listening to ``consent``).
    """
    moved = db.execute(
        sa.update(RemoteSession)
        .where(
            col(RemoteSession.id) == session_id,
            col(RemoteSession.state).in_(earlier_than(state)),
        )
        .values(state=state)
    )
    if state == "awaiting_consent" and getattr(moved, "rowcount", 0) == 1:
        row = db.get(RemoteSession, session_id)
        if row is not None:
            write_events(
                db.connection(),
                [
                    consent_event(
                        row.device_id,
                        session_id=row.id,
                        operator=row.operator,
                        reason=row.reason,
                        at=utcnow(),
                    )
                ],
            )
    db.commit()


def mark_active(db: Session, session_id: str) -> None:
    """The agent's SSH is up: the row is ``active`` from now (unless closed meanwhile)."""
    db.execute(
        sa.update(RemoteSession)
        .where(
            col(RemoteSession.id) == session_id,
            col(RemoteSession.state).in_(earlier_than("active")),
        )
        .values(state="active", started_at=utcnow())
    )
    db.commit()


@dataclass(slots=True)
class Ending:
    """What the process that held a session knows of it when it ends."""

    services_used: list[str] = field(default_factory=list)
    bytes_to_device: int | None = None
    bytes_from_device: int | None = None
    recording: Path | None = None


def close_session(
    db: Session,
    session_id: str,
    *,
    reason: str,
    detail: str | None,
    ending: Ending | None = None,
    audit_details: dict[str, Any] | None = None,
) -> bool:
    """Close an open row (once) with its ``session.close`` audit entry; whether it closed it.

    The row is closed by a conditional update in the transaction of the audit
    entry: a session another process closed meanwhile is left alone (one close,
    one entry).

    Args:
        db: The database session.
        session_id: The session.
        reason: The close reason.
        detail: What happened, for people (cut to 1,024 characters).
        ending: What the holder knows (services used, bytes, the recording);
            ``None`` when the holder is gone.
        audit_details: More for the audit entry (who closed it for a dead holder).
    """
    text = (detail or "")[:1024] or None
    values: dict[str, Any] = {
        "state": "closed",
        "close_reason": reason,
        "detail": text,
        "ended_at": utcnow(),
    }
    if ending is not None:
        values["services_used"] = list(ending.services_used)
        if ending.bytes_to_device is not None:
            values["bytes_to_device"] = ending.bytes_to_device
            values["bytes_from_device"] = ending.bytes_from_device
        if ending.recording is not None and ending.recording.exists():
            digest, size = file_digest(ending.recording)
            values["recording_path"] = str(ending.recording)
            values["recording_sha256"] = digest
            values["recording_bytes"] = size
    done = db.execute(
        sa.update(RemoteSession)
        .where(col(RemoteSession.id) == session_id, col(RemoteSession.state).in_(OPEN_STATES))
        .values(**values)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        db.rollback()
        return False
    row = db.get(RemoteSession, session_id)
    assert row is not None  # noqa: S101 (updated just above, same transaction)
    audit.record(
        db,
        actor=row.operator,
        action="session.close",
        target=row.device_id,
        details={
            "session_id": row.id,
            "close_reason": reason,
            "detail": text,
            **(audit_details or {}),
            "services_used": row.services_used,
            "bytes_to_device": row.bytes_to_device,
            "bytes_from_device": row.bytes_from_device,
            "recording_sha256": row.recording_sha256,
        },
    )
    db.commit()
    return True


def record_action(
    db: Session,
    *,
    actor: str,
    action: str,
    session_id: str,
    details: dict[str, Any],
    source_ip: str | None,
) -> None:
    """Audit what ``actor`` did in a session (``session.exec``, ``session.close.request``...)."""
    row = db.get(RemoteSession, session_id)
    audit.record(
        db,
        actor=actor,
        action=action,
        target=row.device_id if row is not None else None,
        details={"session_id": session_id, **details},
        source_ip=source_ip,
    )
    db.commit()


def agent_of(db: Session, device_id: str) -> str:
    """The device whose agent runs ``device_id``'s sessions: its gateway, or itself."""
    device = db.get(Device, device_id)
    return device.via if device is not None and device.via is not None else device_id


def runs_session(db: Session, row: RemoteSession, device_id: str) -> bool:
    """Whether ``device_id``'s agent runs the session: the device's own, or its gateway's."""
    return agent_of(db, row.device_id) == device_id


def store_report(db: Session, device_id: str, report: dict[str, Any]) -> None:
    """Keep the agent's ``session.closed`` report (an agent reports only its own sessions)."""
    row = db.get(RemoteSession, report["session_id"])
    if row is None or not runs_session(db, row, device_id):
        return
    # The closing report lists the refusals again: it replaces the live ones.
    row.agent_report = {**(row.agent_report or {}), **report}
    db.add(row)
    db.commit()


def note_event(db: Session, device_id: str, kind: str, body: dict[str, Any]) -> None:
    """Keep what the agent said while the session ran: its limits, each refusal."""
    row = db.get(RemoteSession, str(body.get("session_id", "")))
    if row is None or not runs_session(db, row, device_id):
        return
    report = dict(row.agent_report or {})
    if kind == wire.SESSION_STARTED:
        report["started"] = {
            "services": [str(name) for name in body.get("services", [])][:64],
            "max_duration_s": body.get("max_duration_s"),
            "idle_timeout_s": body.get("idle_timeout_s"),
        }
    else:
        refusal = {key: str(body.get(key, ""))[:512] for key in ("kind", "target", "reason")}
        report["refusals"] = [*report.get("refusals", []), refusal][-50:]
    row.agent_report = report
    db.add(row)
    db.commit()


def record_approval(db: Session, session_id: str, approver: str, via: str) -> bool:
    """Write who approved the session (once: the first approval recorded stays)."""
    done = db.execute(
        sa.update(RemoteSession)
        .where(col(RemoteSession.id) == session_id, col(RemoteSession.approved_at).is_(None))
        .values(approved_by=approver[:128], approved_at=utcnow(), approved_via=via)
    )
    db.commit()
    return bool(done.rowcount)  # type: ignore[attr-defined]


def note_site_decision(db: Session, device_id: str, kind: str, body: dict[str, Any]) -> None:
    """The device's own (local) approval or denial: record and audit it.

    A web decision was recorded when the agent took it; the agent's event about it
    adds nothing. The person at the device's panel is not known to the server: the
    session names the device as its approver, with ``approved_via`` ``local``.
    """
    if body.get("via", "local") != "local" or (
        kind == wire.SESSION_DENIED and body.get("why") != "denied"
    ):
        return
    row = db.get(RemoteSession, str(body.get("session_id", "")))
    if row is None or not runs_session(db, row, device_id):
        return
    approve = kind == wire.SESSION_APPROVED
    if approve and not record_approval(db, row.id, f"on the device {device_id}", "local"):
        return
    audit.record(
        db,
        actor=f"site at {device_id}",
        action="session.approve" if approve else "session.deny",
        target=row.device_id,
        details={"session_id": row.id, "via": "local", "operator": row.operator},
    )
    db.commit()


def recording_file(row: RemoteSession) -> Path | None:
    """The recording of a closed session, if it has one on disk."""
    if row.recording_path is None:
        return None
    path = Path(row.recording_path)
    return path if path.is_file() else None


def may_operate(row: RemoteSession, user: User) -> bool:
    """Whether ``user`` may use or end the session as its operator: its own operator or an
    admin."""
    return row.operator == user.username or role_at_least(user.role, "admin")


def may_observe(db: Session, row: RemoteSession, user: User) -> bool:
    """Whether ``user`` may watch the session: an admin, or the assignee of an incident
    the session is linked to (``incident_id`` when opened, or a later link)."""
    if role_at_least(user.role, "admin"):
        return True
    if not role_at_least(user.role, "operator"):
        return False
    linked = select(IncidentSession.incident_id).where(IncidentSession.session_id == row.id)
    served: sa.ColumnElement[bool] = col(Incident.id).in_(linked)
    if row.incident_id is not None:
        served = sa.or_(served, col(Incident.id) == row.incident_id)
    query = (
        select(func.count())
        .select_from(Incident)
        .where(Incident.assignee == user.username)
        .where(served)
    )
    return int(db.exec(query).one()) > 0


def observable_sessions(db: Session, incident_ids: list[int]) -> dict[int, list[str]]:
    """The open sessions serving each incident (to watch them), oldest first."""
    found: dict[int, list[str]] = {i: [] for i in incident_ids}
    if not incident_ids:
        return found
    opened = select(RemoteSession.incident_id, RemoteSession.id).where(
        col(RemoteSession.incident_id).in_(incident_ids),
        col(RemoteSession.state).in_(OPEN_STATES),
    )
    for incident_id, session_id in db.exec(opened.order_by(col(RemoteSession.created_at))):
        if incident_id is not None:
            found[incident_id].append(session_id)
    return found
