"""The bodies of the device's ``session.*`` events, cut to the wire contract's limits.

:class:`agent.remote.sessions.SessionController` publishes them; the limits are
those of :mod:`shared.wire`, so that a report the server would reject is never
sent. Server-given text that reaches a log line goes through :func:`one_line`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from shared.ids import isoformat_z, utcnow
from shared.wire import (
    MAX_CLOSE_DETAIL_LENGTH,
    MAX_REFUSAL_REASON_LENGTH,
    MAX_REFUSAL_TARGET_LENGTH,
    CloseReason,
)

if TYPE_CHECKING:
    from agent.remote.outcome import Refusal

#: Refusals listed in ``session.closed`` (each one also had its ``session.refused``).
MAX_REPORTED_REFUSALS: Final = 50


def refusal_body(refusal: Refusal) -> dict[str, str]:
    """One refusal as ``session.refused`` (and ``session.closed``) report it."""
    return {
        "kind": refusal.kind,
        "target": refusal.target[:MAX_REFUSAL_TARGET_LENGTH],
        "reason": refusal.reason[:MAX_REFUSAL_REASON_LENGTH],
    }


def closed_report(
    session_id: str,
    close_reason: CloseReason,
    detail: str,
    *,
    bytes_from_server: int = 0,
    bytes_to_server: int = 0,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    refusals: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The body of ``session.closed`` (:class:`shared.models.SessionClosedReport`)."""
    report: dict[str, Any] = {
        "session_id": session_id,
        "close_reason": close_reason,
        "detail": detail[:MAX_CLOSE_DETAIL_LENGTH],
        "bytes_from_server": bytes_from_server,
        "bytes_to_server": bytes_to_server,
        "ended_at": isoformat_z(ended_at or utcnow()),
        "refusals": [
            {
                "kind": r["kind"],
                "target": r["target"][:MAX_REFUSAL_TARGET_LENGTH],
                "reason": r["reason"][:MAX_REFUSAL_REASON_LENGTH],
            }
            for r in (refusals or [])[:MAX_REPORTED_REFUSALS]
        ],
    }
    if started_at is not None:
        report["started_at"] = isoformat_z(started_at)
    return report


def one_line(text: str, limit: int = 200) -> str:
    """Server-given text made safe for one log line (no control characters)."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
