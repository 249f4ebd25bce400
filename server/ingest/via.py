"""Devices watched through a site gateway: the registry binding, inventory, gateway deaths.

A site gateway publishes for the equipment it watches over the network on
``fieldlink/v1/{gateway}/via/{device}/...`` (:func:`shared.topics.via_topic`),
with the payloads the device would send on its own topics. The broker lets a
gateway write under its own prefix only; here the server accepts such a message
only when the registry binds the device to that gateway (``device.via``), and,
symmetrically, a watched device's own topics are refused: both are counted as
rejections with reason ``not_bound`` (on ``/metrics`` and on the device's row).

- :data:`INVENTORY_EVENT` events carry what the equipment reports about itself
  (sysDescr, serial, model, firmware); they become ``device.inventory``.
- When a gateway goes offline, every device it watches goes offline too, with
  reason :data:`GATEWAY_OFFLINE`; they come back with the births the gateway
  publishes for them when it reconnects. When a gateway is revoked, they go offline
  at once with reason :data:`GATEWAY_REVOKED` (``crud.revoke_device``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.models import Device
from server.notify.events import online_event, write_events
from shared.models import DeviceEvent
from shared.wire import VIA_SESSIONS

#: The rejection reason of a message the registry's binding does not allow.
NOT_BOUND = "not_bound"
#: The offline reason of a watched device whose gateway went offline.
GATEWAY_OFFLINE = "gateway_offline"
#: The offline reason of a watched device whose gateway was revoked (at once, no sweep).
GATEWAY_REVOKED = "gateway_revoked"
#: The capabilities of a birth the registry keeps (others are ignored).
KNOWN_CAPABILITIES = frozenset({VIA_SESSIONS})
#: The event a gateway sends with a watched device's identity (also an agent's own).
INVENTORY_EVENT = "inventory.reported"
#: The inventory keys kept, and the longest text of each.
INVENTORY_KEYS: Mapping[str, int] = {
    "sys_descr": 256,
    "sys_name": 256,
    "serial": 128,
    "model": 256,
    "firmware": 128,
    "software": 128,
    "vendor": 128,
}

DEVICE = Device.__table__  # type: ignore[attr-defined]


class _Bound(Protocol):
    via: str | None


def bound(item_via: str | None, device: _Bound) -> bool:
    """Whether a message that came through ``item_via`` (``None``: the device's own
    topic) may speak for ``device``: only through the gateway the registry names."""
    return item_via == device.via


def inventory_of(event: DeviceEvent) -> dict[str, str] | None:
    """The inventory an :data:`INVENTORY_EVENT` reports (known keys, texts, cut to size)."""
    if event.type != INVENTORY_EVENT:
        return None
    inventory: dict[str, str] = {}
    for key, limit in INVENTORY_KEYS.items():
        value = event.body.get(key)
        if isinstance(value, str) and value.strip():
            inventory[key] = value.strip()[:limit]
    return inventory


def write_inventories(conn: Connection, inventories: Mapping[str, dict[str, Any]]) -> None:
    """Store the newest inventory of each device (both dialects)."""
    if inventories:
        conn.execute(
            sa.update(DEVICE)
            .where(DEVICE.c.id == sa.bindparam("device_id"))
            .values(inventory=sa.bindparam("inventory")),
            [{"device_id": k, "inventory": v} for k, v in inventories.items()],
        )


def take_watched_offline(
    conn: Connection,
    gateways: list[tuple[str, datetime]],
    *,
    skip: set[str],
    events: sa.Table,
    reason: str = GATEWAY_OFFLINE,
) -> int:
    """Mark the online devices these gateways watch offline (``reason``: ``gateway_offline``,
    or ``gateway_revoked``), each with an ``offline`` event; ``skip``: the batch's own
    rows (the rules did those).

    Returns how many devices went offline.
    """
    changed = 0
    for gateway_id, at in gateways:
        rows = conn.execute(
            sa.select(DEVICE.c.id).where(DEVICE.c.via == gateway_id, DEVICE.c.online.is_(True))
        ).all()
        ids = [row[0] for row in rows if row[0] not in skip]
        if not ids:
            continue
        conn.execute(
            sa.update(DEVICE)
            .where(DEVICE.c.id.in_(ids))
            .values(online=False, online_reason=reason, online_changed_at=at)
        )
        conn.execute(
            sa.insert(events),
            [
                {
                    "device_id": device_id,
                    "type": "offline",
                    "ts": at,
                    "received_at": at,
                    "body": {"reason": reason, "gateway": gateway_id},
                }
                for device_id in ids
            ],
        )
        write_events(
            conn, [online_event(device_id, online=False, reason=reason, at=at) for device_id in ids]
        )
        changed += len(ids)
    return changed


def capabilities_text(capabilities: list[str]) -> str | None:
    """``device.capabilities`` of a birth's list: sorted, comma-separated, known ones only."""
    known = sorted({c for c in capabilities if c in KNOWN_CAPABILITIES})
    return ",".join(known) or None


def has_capability(stored: str | None, capability: str) -> bool:
    """Whether ``device.capabilities`` (:func:`capabilities_text`) holds ``capability``."""
    return capability in (stored or "").split(",")


def gateway_of(engine: sa.Engine, device_id: str) -> str | None:
    """The site gateway that watches ``device_id`` (``device.via``); ``None``: none."""
    with engine.connect() as conn:
        via = conn.execute(sa.select(DEVICE.c.via).where(DEVICE.c.id == device_id)).scalar()
    return str(via) if via is not None else None
