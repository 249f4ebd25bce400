"""What producers write for the notification worker: rows of ``notify_event``.

Each producer adds its events in the transaction that records what happened (the
ingest's batch, the silent-device sweep, a session's move to ``awaiting_consent``):
one multi-row insert, no rule lookup and no network I/O, so the ingest's hot path
pays nothing for a batch that changes no alert and no online state. The worker
(:mod:`server.notify.worker`) reads them, matches the rules and deletes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.models.notify import NotifyEvent
from server.notify.rules import ONE_OFF, PROBLEM, RESOLVED

NOTIFY_EVENT = NotifyEvent.__table__  # type: ignore[attr-defined]
OFFLINE_SUBJECT = "offline"


def fault_subject(code: str, metric: str | None) -> str:
    """The debounce key of an alert: its code (and metric, for a threshold rule's)."""
    return f"fault:{code}:{metric}"[:200] if metric else f"fault:{code}"[:200]


def fault_event(
    device_id: str,
    *,
    code: str,
    metric: str | None,
    severity: str | None,
    message: str,
    at: datetime,
    opened: bool,
    source: str = "device",
) -> dict[str, Any]:
    """A fault (or threshold alert) that opened or cleared."""
    return {
        "kind": "fault",
        "state": PROBLEM if opened else RESOLVED,
        "device_id": device_id,
        "subject": fault_subject(code, metric),
        "severity": severity,
        "message": message[:1024],
        "at": at,
        "body": {"code": code, "metric": metric, "source": source},
    }


def online_event(
    device_id: str, *, online: bool, reason: str | None, at: datetime
) -> dict[str, Any]:
    """A device that went offline (a problem) or came back (resolved)."""
    return {
        "kind": "offline",
        "state": RESOLVED if online else PROBLEM,
        "device_id": device_id,
        "subject": OFFLINE_SUBJECT,
        "severity": None,
        "message": f"{'online' if online else 'offline'} ({reason or 'unknown'})",
        "at": at,
        "body": {"reason": reason},
    }


def consent_event(
    device_id: str, *, session_id: str, operator: str, reason: str, at: datetime
) -> dict[str, Any]:
    """A session that waits for the site's approval."""
    return {
        "kind": "consent",
        "state": ONE_OFF,
        "device_id": device_id,
        "subject": f"session:{session_id}"[:200],
        "severity": None,
        "message": f"session {session_id} by {operator} awaits approval: {reason}"[:1024],
        "at": at,
        "body": {"session_id": session_id, "operator": operator, "reason": reason[:1024]},
    }


def followup_event(
    device_id: str,
    *,
    followup_id: int,
    incident_id: int,
    reason: str,
    due_at: datetime,
    at: datetime,
    overdue: bool,
) -> dict[str, Any]:
    """A call back to an unhappy customer that is overdue (a problem), or done (resolved)."""
    state = "overdue since " + due_at.strftime("%Y-%m-%d %H:%M UTC") if overdue else "closed"
    return {
        "kind": "followup",
        "state": PROBLEM if overdue else RESOLVED,
        "device_id": device_id,
        "subject": f"followup:{followup_id}",
        "severity": None,
        "message": f"follow-up #{followup_id} of incident #{incident_id} {state}: {reason}"[:1024],
        "at": at,
        "body": {
            "followup_id": followup_id,
            "incident_id": incident_id,
            "reason": reason,
            "due_at": due_at.isoformat(),
        },
    }


def write_events(conn: Connection, events: Sequence[dict[str, Any]]) -> None:
    """Insert ``events`` in the caller's transaction (nothing when there are none)."""
    if events:
        conn.execute(sa.insert(NOTIFY_EVENT), list(events))
