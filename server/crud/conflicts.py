"""One shape for a write that may break a unique constraint: roll back, answer ``Conflict``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from shared.errors import Conflict


@contextlib.contextmanager
def conflict_on_duplicate(db: Session, message: str) -> Iterator[None]:
    """Run the flush or commit inside; when it breaks a unique constraint, roll back and raise.

    Raises:
        Conflict: with ``message`` (the API answers 409, the CLI one line).
    """
    try:
        yield
    except IntegrityError as exc:
        db.rollback()
        raise Conflict(message) from exc
