"""How many sessions may be open at once: per device and per operator.

Both limits count the open rows (every state but ``closed``) of all the
server's processes, in the transaction that inserts the new row.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, func, select

from server.models import OPEN_STATES, RemoteSession
from shared.errors import Conflict


def open_count(db: Session, column: Any, value: str) -> int:
    """How many open sessions have ``column == value`` (``RemoteSession.device_id``...)."""
    return db.exec(
        select(func.count())
        .select_from(RemoteSession)
        .where(column == value, col(RemoteSession.state).in_(OPEN_STATES))
    ).one()


def check_limits(
    db: Session, *, device_id: str, operator: str, per_device: int, per_operator: int
) -> None:
    """Refuse one more session when the device or the operator has reached its limit.

    Raises:
        Conflict: A limit is reached (the detail says which, and how many are open).
    """
    on_device = open_count(db, RemoteSession.device_id, device_id)
    if on_device >= per_device:
        msg = f"device {device_id} already has {on_device} open session(s) (limit {per_device})"
        raise Conflict(msg)
    of_operator = open_count(db, RemoteSession.operator, operator)
    if of_operator >= per_operator:
        msg = f"{operator} already has {of_operator} open session(s) (limit {per_operator})"
        raise Conflict(msg)
