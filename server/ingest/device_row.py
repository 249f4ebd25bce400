"""The ``device`` registry row as the ingest reads and writes it, and its columns.

:class:`DeviceRow` is what :class:`server.ingest.apply.BatchRules` changes; the
dialect modules (:mod:`~server.ingest.rows_sqlite`, :mod:`~server.ingest.rows_postgres`)
read it by :data:`ROW_COLUMNS` and write back :data:`UPDATE_COLUMNS` and
:data:`HEALTH_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.ingest.alerts import AlertKey
from server.ingest.online import OnlineStatus

#: ``(device_id, boot_id, seq)`` of a stored sample.
SampleKey = tuple[str, str, int]
#: Open alerts' ids by device, then by key.
OpenAlerts = dict[str, dict[AlertKey, int]]


@dataclass
class DeviceRow:
    """The registry columns the ingest reads and writes, for one device."""

    id: str
    boot_id: str | None
    last_seq: int | None
    status: str | None
    health_ts: datetime | None
    last_seen: datetime | None
    online: bool
    online_reason: str | None
    online_changed_at: datetime | None
    agent_version: str | None
    clock_offset_s: float | None
    clock_skewed: bool
    telemetry_received: int
    telemetry_missing: int
    telemetry_rejected: int
    #: Read only: set when the device was revoked; nothing it sends is accepted then.
    revoked_at: datetime | None = None
    #: Read only: the gateway that watches this device (:mod:`server.ingest.via`).
    via: str | None = None
    #: What the agent's newest own birth announced (:func:`server.ingest.via.capabilities_text`).
    capabilities: str | None = None
    dirty: bool = False
    #: The newest sample's metrics when it changed in this batch (never read back).
    health: dict[str, Any] | None = None

    @classmethod
    def from_values(cls, raw: Sequence[Any]) -> DeviceRow:
        """A row as the driver returns :data:`ROW_COLUMNS` (SQLite: text times, 0/1)."""
        values = dict(zip(ROW_COLUMNS, raw, strict=True))
        for name in TIME_COLUMNS:
            values[name] = read_utc(values[name])
        for name in BOOL_COLUMNS:
            values[name] = bool(values[name])
        return cls(**values)

    def seen(self, when: datetime) -> None:
        if self.last_seen is None or when > self.last_seen:
            self.last_seen = when
            self.dirty = True

    def status_now(self) -> OnlineStatus:
        return OnlineStatus(self.online, self.online_reason, self.online_changed_at, self.boot_id)

    def set_status(self, status: OnlineStatus) -> None:
        self.online, self.online_reason = status.online, status.reason
        self.online_changed_at = status.changed_at
        self.dirty = True


#: The ``device`` columns read for a batch, in :class:`DeviceRow`'s order.
ROW_COLUMNS = [name for name in DeviceRow.__dataclass_fields__ if name not in ("dirty", "health")]
#: The ``device`` columns written back for every changed row.
UPDATE_COLUMNS = [
    name for name in ROW_COLUMNS if name not in ("id", "status", "health_ts", "revoked_at", "via")
]
#: Written back only for the devices whose newest sample changed in the batch.
HEALTH_COLUMNS = ["status", "health_ts", "health"]
TIME_COLUMNS = frozenset({"health_ts", "last_seen", "online_changed_at", "revoked_at"})
BOOL_COLUMNS = frozenset({"online", "clock_skewed"})


def read_utc(value: datetime | str | None) -> datetime | None:
    """A timestamp as the driver returns it (SQLite: naive UTC text) made aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
