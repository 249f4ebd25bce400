"""From events to messages: the rules that match, the debounce, the outbox rows.

Blocking database code for the worker's thread. One :func:`plan` takes the oldest
events, matches them against the rules in force, and in the same transaction
writes the messages, the debounce state and deletes the events; a second server
process waits its turn (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite), so two processes never tell the same problem twice.

The debounce, per rule, device and subject (a fault's code, ``offline``):

- a problem is told once: while its ``notify_state`` row exists, a repeat is dropped;
- its end is told only if the problem was (and the row goes);
- with ``hold_s``, the problem's message waits that long; ending within it cancels
  it, and then nothing is told at all (a device that reconnects at once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from server.maintenance.records import covered
from server.models import Device
from server.models.notify import NotifyOutbox, NotifyState
from server.notify.events import NOTIFY_EVENT
from server.notify.rules import (
    ONE_OFF,
    PROBLEM,
    RESOLVED,
    DeviceFacts,
    EventFacts,
    NotifyRule,
    matches,
)

logger = logging.getLogger(__name__)

OUTBOX = NotifyOutbox.__table__  # type: ignore[attr-defined]
STATE = NotifyState.__table__  # type: ignore[attr-defined]
DEVICE = Device.__table__  # type: ignore[attr-defined]
#: Events taken per transaction.
BATCH: Final = 500
#: The PostgreSQL advisory lock that lets one process plan at a time.
PLAN_LOCK: Final = 0x6E6F7469  # "noti"


@dataclass
class PlanResult:
    """What one :func:`plan` did."""

    events: int = 0
    queued: int = 0
    debounced: int = 0
    cancelled: int = 0
    #: Problems of devices in a maintenance window: never told (nor their resolution).
    in_maintenance: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


#: The kinds of problem a maintenance window silences (a session awaiting consent is not one).
QUIET_IN_MAINTENANCE: Final = frozenset({"fault", "offline"})


def _begin_exclusive(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PLAN_LOCK})
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _devices(conn: Connection, ids: set[str]) -> dict[str, DeviceFacts]:
    rows = conn.execute(
        sa.select(
            DEVICE.c.id,
            DEVICE.c.type,
            DEVICE.c.customer,
            DEVICE.c.customer_number,
            DEVICE.c.site,
            DEVICE.c.model,
            DEVICE.c.serial,
        ).where(DEVICE.c.id.in_(sorted(ids)))
    )
    return {
        row.id: DeviceFacts(
            id=row.id,
            type=row.type,
            customer=row.customer,
            customer_number=row.customer_number,
            site=row.site,
            model=row.model,
            serial=row.serial,
        )
        for row in rows
    }


def payload(rule: NotifyRule, event: Mapping[str, Any], device: DeviceFacts) -> dict[str, Any]:
    """The message a rule sends about an event (the webhook's JSON body, the mail's facts)."""
    body = dict(event.get("body") or {})
    at: datetime = event["at"]
    return {
        "rule": rule.name,
        "kind": event["kind"],
        "state": event["state"],
        "subject": event["subject"],
        "severity": event["severity"],
        "code": body.get("code"),
        "message": event["message"],
        "at": at.isoformat(),
        "device": {
            "id": device.id,
            "type": device.type,
            "model": device.model,
            "serial": device.serial,
            "customer": device.customer,
            "customer_number": device.customer_number,
            "site": device.site,
        },
        "details": body,
    }


class Planner:
    """Turns events into outbox rows for ``rules`` (see the module's docstring)."""

    def __init__(self, rules: Sequence[NotifyRule], now: datetime) -> None:
        self.rules = [rule for rule in rules if rule.enabled]
        self.now = now
        self.result = PlanResult()
        self._outbox: list[dict[str, Any]] = []

    def run(self, conn: Connection, events: Sequence[Mapping[str, Any]]) -> PlanResult:
        """Plan ``events`` (oldest first) in ``conn``'s transaction."""
        devices = _devices(conn, {str(e["device_id"]) for e in events})
        quiet = covered(
            conn,
            [
                (str(e["device_id"]), e["at"])
                for e in events
                if e["state"] == PROBLEM and e["kind"] in QUIET_IN_MAINTENANCE
            ],
        )
        for event in events:
            device = devices.get(str(event["device_id"]))
            if device is None:  # the device was deleted meanwhile
                continue
            if event["state"] == PROBLEM and (device.id, event["at"]) in quiet:
                self.result.in_maintenance += 1
                continue
            for rule in self.rules:
                self._one(conn, rule, event, device)
        if self._outbox:
            conn.execute(sa.insert(OUTBOX), self._outbox)
        self.result.events = len(events)
        return self.result

    def _one(
        self, conn: Connection, rule: NotifyRule, event: Mapping[str, Any], device: DeviceFacts
    ) -> None:
        state = str(event["state"])
        key = {"rule": rule.name, "device_id": device.id, "subject": str(event["subject"])}
        if state == RESOLVED:
            self._resolved(conn, rule, event, device, key)
            return
        body = event.get("body") or {}
        facts = EventFacts(
            kind=str(event["kind"]),
            state=state,
            subject=key["subject"],
            severity=event.get("severity"),
            code=body.get("code") if isinstance(body, dict) else None,
        )
        if not matches(rule, facts, device):
            return
        if state == PROBLEM:
            told = conn.execute(
                sa.select(sa.literal(1)).where(*(STATE.c[k] == v for k, v in key.items()))
            ).first()
            if told is not None:
                self.result.debounced += 1
                return
            conn.execute(sa.insert(STATE), [{**key, "opened_at": event["at"]}])
            self._queue(rule, event, device, delay_s=rule.hold_s)
        elif state == ONE_OFF:
            self._queue(rule, event, device, delay_s=0.0)

    def _resolved(
        self,
        conn: Connection,
        rule: NotifyRule,
        event: Mapping[str, Any],
        device: DeviceFacts,
        key: dict[str, str],
    ) -> None:
        where = [STATE.c[k] == v for k, v in key.items()]
        if conn.execute(sa.delete(STATE).where(*where)).rowcount == 0:
            return  # its problem was never told (or was told resolved already)
        if rule.hold_s > 0:
            held = [
                OUTBOX.c.rule == rule.name,
                OUTBOX.c.device_id == device.id,
                OUTBOX.c.subject == key["subject"],
                OUTBOX.c.status == "queued",
                OUTBOX.c.attempts == 0,
                OUTBOX.c.due_at > self.now,
            ]
            cancelled = conn.execute(
                sa.update(OUTBOX).where(*held).values(status="cancelled")
            ).rowcount
            # Also a problem queued in this same run (not written yet).
            pending = [
                row
                for row in self._outbox
                if (row["rule"], row["device_id"], row["subject"])
                == (rule.name, device.id, key["subject"])
            ]
            for row in pending:
                self._outbox.remove(row)
            if cancelled or pending:
                self.result.cancelled += cancelled + len(pending)
                return
        self._queue(rule, event, device, delay_s=0.0)

    def _queue(
        self, rule: NotifyRule, event: Mapping[str, Any], device: DeviceFacts, *, delay_s: float
    ) -> None:
        message = payload(rule, event, device)
        for channel in rule.channels():
            self._outbox.append(
                {
                    "rule": rule.name,
                    "channel": channel,
                    "status": "queued",
                    "device_id": device.id,
                    "subject": str(event["subject"]),
                    "payload": message,
                    "attempts": 0,
                    "due_at": self.now + timedelta(seconds=delay_s),
                    "lease_until": None,
                    "last_error": None,
                    "created_at": self.now,
                    "sent_at": None,
                }
            )
            self.result.queued += 1
            self.result.by_rule[rule.name] = self.result.by_rule.get(rule.name, 0) + 1


def plan(engine: Engine, rules: Sequence[NotifyRule], now: datetime) -> PlanResult:
    """Take up to :data:`BATCH` of the oldest events, plan them, delete them (one transaction)."""
    with engine.connect() as conn, conn.begin():
        _begin_exclusive(conn)
        rows = conn.execute(sa.select(NOTIFY_EVENT).order_by(NOTIFY_EVENT.c.id).limit(BATCH))
        events = [dict(row._mapping) for row in rows]
        if not events:
            return PlanResult()
        result = Planner(rules, now).run(conn, events)
        # Exactly those read: a producer's transaction may commit a lower id later.
        ids = [event["id"] for event in events]
        conn.execute(sa.delete(NOTIFY_EVENT).where(NOTIFY_EVENT.c.id.in_(ids)))
    if result.queued or result.cancelled:
        logger.info(
            "notifications: %d event(s), %d message(s) queued, %d debounced, %d cancelled",
            result.events,
            result.queued,
            result.debounced,
            result.cancelled,
        )
    return result
