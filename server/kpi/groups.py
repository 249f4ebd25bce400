"""What the KPIs and the customer's voice share: the checked window and the listed groups.

:func:`server.kpi.compute.compute_kpis` and :func:`server.kpi.voice.compute_voice`
take the same window and list their groups the same way (docs/kpis.md): every
month of the window, every device type (and resolution) with zeros where nothing
was closed, then any other value found; regions as found, sorted, ``None`` last.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from sqlalchemy.engine import Connection
from sqlmodel import Session

from server.crud import InvalidInput
from server.kpi.report import months_of
from server.models import DEVICE_TYPES, RESOLUTIONS

#: The groups listed even where nothing was closed, besides the window's months.
_LISTED: dict[str, Sequence[str]] = {"device_type": DEVICE_TYPES, "resolution": RESOLUTIONS}


def checked_window(
    connection: Connection | Session,
    *,
    start: datetime,
    end: datetime,
    group_by: str,
    group_bys: Sequence[str],
) -> tuple[Connection, datetime, datetime]:
    """The connection to read with and ``[start, end)`` in UTC; :class:`InvalidInput` for a
    ``group_by`` not in ``group_bys`` or an empty window."""
    if group_by not in group_bys:
        msg = f"group_by must be one of {', '.join(group_bys)}"
        raise InvalidInput(msg)
    if start >= end:
        msg = "from must be before to"
        raise InvalidInput(msg)
    if isinstance(connection, Session):
        connection = connection.connection()
    return connection, start.astimezone(UTC), end.astimezone(UTC)


def group_keys(
    group_by: str, found: Collection[str | None], start: datetime, end: datetime
) -> list[str | None]:
    """The groups a report lists for ``group_by``, in order, given the keys ``found``."""
    if group_by == "none":
        return []
    if group_by == "month":
        return [*months_of(start, end)]
    listed = _LISTED.get(group_by)
    if listed is not None:
        return [*listed, *sorted(k for k in found if k is not None and k not in listed)]
    return sorted(found, key=lambda k: (k is None, k or ""))
