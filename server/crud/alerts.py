"""A device's alerts: the open ones and the recent history."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from server.models import Alert


def open_alerts(session: Session, *, device_id: str) -> Sequence[Alert]:
    """The device's open alerts, newest first."""
    return session.exec(
        select(Alert)
        .where(Alert.device_id == device_id, col(Alert.open).is_(True))
        .order_by(col(Alert.raised_at).desc())
    ).all()


def recent_alerts(session: Session, *, device_id: str, limit: int = 50) -> Sequence[Alert]:
    """The device's alerts, open or cleared, newest first."""
    return session.exec(
        select(Alert)
        .where(Alert.device_id == device_id)
        .order_by(col(Alert.raised_at).desc())
        .limit(limit)
    ).all()
