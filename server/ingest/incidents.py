"""Device faults open incidents (``[server.kpi] alerts_open_incidents = true``).

Run once per batch, in the batch's transaction, and only when the batch opened
or cleared a device fault (rare next to samples): nothing here touches the hot
path of a batch of plain samples.

- A device fault of severity ``error`` or ``critical`` opens an incident
  (channel ``alert``, ``error_code`` = the fault's code, ``symptom`` = its
  message, ``opened_at`` = ``down_at`` = the alert's ``raised_at``: when the
  fault was raised on the device, its clock offset applied). The insert is
  idempotent on the unique partial index ``uq_incident_open_alert`` (one open
  alert incident per device and code): a repeat, or a second server process
  seeing the same fault, changes that incident instead of adding one.
- A fault raised while its device is in a maintenance window (its own, its
  customer's or its site's: :mod:`server.maintenance`) opens no incident; the
  alert itself is recorded as always.
- A fault that clears proposes its clearing time as the open incident's
  ``restored_at_proposed`` (the desk confirms it when closing); raised again
  before the incident is closed, the proposal is withdrawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from server.maintenance.records import covered
from server.models import Device, Incident
from server.models.base import UTCDateTime
from shared.ids import utcnow

INCIDENT = Incident.__table__  # type: ignore[attr-defined]
DEVICE = Device.__table__  # type: ignore[attr-defined]
#: The fault severities that open an incident.
OPENING_SEVERITIES = frozenset({"error", "critical"})
#: The predicate of ``uq_incident_open_alert`` (an ``ON CONFLICT`` target must name it).
OPEN_ALERT_WHERE = sa.text("closed_at IS NULL AND channel = 'alert'")
_COLUMNS = (
    "device_id",
    "device_type",
    "opened_at",
    "down_at",
    "channel",
    "error_code",
    "symptom",
    "remote_session_used",
    "restored_at_proposed",
    "created_at",
    "updated_at",
)


def incident_rows(opened: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incidents the batch's new alert rows open (device faults, error or above)."""
    now = utcnow()
    return [
        {
            "fault_device": row["device_id"],
            "fault_code": row["code"][:128],
            "at": row["raised_at"],
            "symptom": row["message"][:4000] or None,
            # Opened and cleared within the same batch: the clearing is proposed at once.
            "proposed": None if row["open"] else row["cleared_at"],
            "now": now,
        }
        for row in opened
        if row["source"] == "device" and row["severity"] in OPENING_SEVERITIES
    ]


def _insert_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    at = sa.bindparam("at", type_=UTCDateTime())
    now = sa.bindparam("now", type_=UTCDateTime())
    source = sa.select(
        DEVICE.c.id,
        DEVICE.c.type,
        at,
        at,
        sa.literal("alert"),
        sa.bindparam("fault_code", type_=sa.String()),
        sa.bindparam("symptom", type_=sa.String()),
        sa.false(),
        sa.bindparam("proposed", type_=UTCDateTime()),
        now,
        now,
    ).where(DEVICE.c.id == sa.bindparam("fault_device"))
    statement = insert(INCIDENT).from_select(list(_COLUMNS), source)
    return statement.on_conflict_do_update(
        index_elements=["device_id", "error_code"],
        index_where=OPEN_ALERT_WHERE,
        set_={
            "restored_at_proposed": statement.excluded.restored_at_proposed,
            "updated_at": statement.excluded.updated_at,
        },
    )


def _propose_statement() -> sa.Update:
    return (
        sa.update(INCIDENT)
        .where(
            INCIDENT.c.device_id == sa.bindparam("fault_device"),
            INCIDENT.c.error_code == sa.bindparam("fault_code"),
            INCIDENT.c.channel == "alert",
            INCIDENT.c.closed_at.is_(None),
            INCIDENT.c.restored_at_proposed.is_(None),
        )
        .values(
            restored_at_proposed=sa.bindparam("at", type_=UTCDateTime()),
            updated_at=sa.bindparam("now", type_=UTCDateTime()),
        )
    )


def apply_fault_incidents(
    conn: Connection,
    opened: Sequence[dict[str, Any]],
    cleared_faults: Sequence[tuple[str, str, datetime]],
) -> None:
    """Open and propose to restore the incidents of the batch's device faults."""
    rows = incident_rows(opened)
    if rows:
        quiet = covered(conn, [(row["fault_device"], row["at"]) for row in rows])
        rows = [row for row in rows if (row["fault_device"], row["at"]) not in quiet]
    if rows:
        conn.execute(_insert_statement(conn.dialect.name), rows)
    if cleared_faults:
        now = utcnow()
        conn.execute(
            _propose_statement(),
            [
                {"fault_device": device_id, "fault_code": code[:128], "at": at, "now": now}
                for device_id, code, at in cleared_faults
            ],
        )
