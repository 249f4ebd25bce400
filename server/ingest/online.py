"""Online state from the agents' retained birth and last-will messages.

A message delivered live is the newest word on the device (the broker keeps
per-topic order) and is applied as it comes. A *retained* message, replayed
when the ingest subscribes, may be older than what the registry already knows
(a device the sweeper marked silent after its birth, or a will from an earlier
boot), so it is applied only when it is newer, comparing its ``ts`` (corrected
by the device's clock offset) with the last change the registry recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.models import DeviceState

#: Offline reasons an agent may give; anything else reads as a lost connection.
#: ``unreachable``: a site gateway no longer reaches a device it watches.
OFFLINE_REASONS = frozenset({"shutdown", "connection_lost", "unreachable"})
SILENT = "silent"


@dataclass(frozen=True)
class OnlineStatus:
    """A device's online state as the registry holds it."""

    online: bool
    reason: str | None
    changed_at: datetime | None
    boot_id: str | None = None


def message_reason(state: DeviceState) -> str:
    """``online`` for a birth; ``shutdown``, ``connection_lost`` or ``unreachable`` for a death."""
    if state.online:
        return "online"
    return state.reason if state.reason in OFFLINE_REASONS else "connection_lost"


def server_time(ts: datetime | None, clock_offset_s: float | None) -> datetime | None:
    """A device timestamp on the server's clock (device minus offset)."""
    if ts is None:
        return None
    return ts - timedelta(seconds=clock_offset_s or 0.0)


def next_status(
    current: OnlineStatus,
    state: DeviceState,
    *,
    retained: bool,
    received_at: datetime,
    clock_offset_s: float | None,
) -> OnlineStatus | None:
    """The device's new online state after ``state``, or ``None`` when it changes nothing."""
    reason = message_reason(state)
    if current.online == state.online and (state.online or current.reason == reason):
        return None
    if not retained:
        return OnlineStatus(state.online, reason, received_at, current.boot_id)
    sent = server_time(state.ts, clock_offset_s)
    if sent is not None:
        sent = min(sent, received_at)
    newer = current.changed_at is None or (sent is not None and sent > current.changed_at)
    if state.online:
        if not newer:
            return None
        return OnlineStatus(True, reason, sent or received_at, current.boot_id)
    if not current.online:
        # Already offline: keep the reason and time the registry saw first.
        return None
    # The will is composed at connect time, so it is older than the birth of the
    # same connection; a will of the registry's own boot still ends that boot's session.
    same_boot = state.boot_id in (None, current.boot_id) or current.boot_id is None
    if not (newer or same_boot):
        return None
    changed = received_at if sent is None or not newer else sent
    return OnlineStatus(False, reason, changed, current.boot_id)
