"""The rules that apply a batch to the registry: alerts, online state, sequence gaps, clock offset.

Pure Python on rows already read: :func:`admit` sorts out what unregistered and
revoked devices sent, then :class:`BatchRules` walks the accepted items in
arrival order and decides, per device, what the database must learn:

- alerts opened and cleared: threshold rules and faults of the newest sample
  (:mod:`server.ingest.alerts`), ``fault.raised`` / ``fault.cleared`` events;
- online state: births, deaths and a sample from a silent device
  (:mod:`server.ingest.online`), each change also an ``online``/``offline`` event;
- the ``seq`` accounting: missing, late, resets (:mod:`server.ingest.sequence`);
- the clock offset and its skew flag (:mod:`server.ingest.clock`);
- the newest sample's status and metrics as the device's health.

The dialect modules (:mod:`~server.ingest.rows_sqlite`,
:mod:`~server.ingest.rows_postgres`) read the rows and write :class:`BatchChanges`
back; nothing here talks to a database, so each rule is testable on plain rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from server.config import ServerSettings
from server.ingest import via
from server.ingest.alerts import (
    AlertDetails,
    AlertKey,
    AlertPlan,
    ThresholdCheck,
    apply_plan,
    match_rules,
    plan_for_checks,
    rule_violation,
)
from server.ingest.clock import ClockOffsetEstimator, is_skewed
from server.ingest.device_row import DeviceRow, OpenAlerts, SampleKey
from server.ingest.items import (
    BatchResult,
    CommandResultItem,
    EventItem,
    IngestItem,
    RejectedItem,
    SampleItem,
    StateItem,
)
from server.ingest.online import SILENT, OnlineStatus, next_status, server_time
from server.ingest.sequence import NewSample, SequenceMark, account_samples
from server.ingest.timestamps import future_bound_s
from server.notify.events import fault_event, online_event
from shared.ids import utcnow
from shared.models import DeviceEvent, Fault, HealthSample
from shared.wire import FAULT_CLEARED, FAULT_RAISED, SESSION_EVENT_PREFIX

logger = logging.getLogger(__name__)


@dataclass
class BatchChanges:
    """What a batch writes besides the samples: alert rows, history, device rows."""

    #: New ``alert`` rows (one opened and cleared in the same batch is stored closed).
    opened: list[dict[str, Any]] = field(default_factory=list)
    #: ``alert.id`` -> when it cleared.
    cleared: dict[int, datetime] = field(default_factory=dict)
    #: ``(device_id, code, when)`` of the device faults among ``cleared`` (for the
    #: incidents those faults opened: :mod:`server.ingest.incidents`).
    cleared_faults: list[tuple[str, str, datetime]] = field(default_factory=list)
    #: New ``device_event`` rows.
    events: list[dict[str, Any]] = field(default_factory=list)
    #: The device rows that changed.
    dirty: list[DeviceRow] = field(default_factory=list)
    #: The devices whose health (newest sample) changed.
    with_health: set[str] = field(default_factory=set)
    #: The newest inventory reported for each device (:data:`via.INVENTORY_EVENT`).
    inventories: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``notify_event`` rows: alerts opened and cleared, online changes (rare).
    notices: list[dict[str, Any]] = field(default_factory=list)


class ThresholdChecks:
    """The threshold checks for a sample's metric names, cached by those names."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._cache: dict[tuple[str, ...], list[ThresholdCheck]] = {}

    def __call__(self, sample: HealthSample) -> list[ThresholdCheck]:
        names = tuple(sample.metrics)
        checks = self._cache.get(names)
        if checks is None:
            checks = match_rules(self.settings.thresholds, names)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[names] = checks
        return checks


def admit(
    items: Sequence[IngestItem], devices: Mapping[str, DeviceRow], result: BatchResult
) -> tuple[list[IngestItem], list[SampleItem]]:
    """The items of registered, unrevoked devices, and their samples; counts the rest.

    A revoked device is refused everything, births included; the refusal is
    counted on the device like any other rejection. So is a message that came
    through a gateway the registry does not bind the device to (or on a watched
    device's own topic): ``not_bound``. What an unregistered device sends is only
    counted in the result.
    """
    accepted: list[IngestItem] = []
    samples: list[SampleItem] = []
    for item in items:
        device = devices.get(item.device_id)
        if device is None:
            if not isinstance(item, RejectedItem):
                result.unregistered += 1
        elif not via.bound(item.via, device):
            if not isinstance(item, RejectedItem):
                result.not_bound += 1
                logger.info(
                    "refused a %s for %s through %s: not bound to it (via %s)",
                    type(item).__name__,
                    item.device_id,
                    item.via or "its own topic",
                    device.via or "none",
                )
            device.telemetry_rejected += 1
            device.dirty = True
        elif device.revoked_at is not None or isinstance(item, RejectedItem):
            if not isinstance(item, RejectedItem):
                result.revoked += 1
            device.telemetry_rejected += 1
            device.dirty = True
        else:
            accepted.append(item)
            if isinstance(item, SampleItem):
                samples.append(item)
    return accepted, samples


def alert_devices(items: Sequence[IngestItem], devices: Mapping[str, DeviceRow]) -> list[str]:
    """The devices whose open alerts a batch may change (samples and events), sorted."""
    return sorted(
        {i.device_id for i in items if isinstance(i, SampleItem | EventItem)} & devices.keys()
    )


class BatchRules:
    """Applies one batch's accepted items to its devices' rows (one instance per batch).

    Args:
        settings: Clock-skew limit, future bound of ``ts``.
        checks_for: The threshold checks of a sample.
        clock: The per-device clock-offset estimator (lives across batches).
        devices: The batch's device rows (changed in place).
        open_ids: Their open alerts' ids (changed in place as alerts clear).
        inserted: The keys of the samples actually inserted (others are duplicates).
        result: The batch's result (counted into).
    """

    def __init__(
        self,
        settings: ServerSettings,
        *,
        checks_for: ThresholdChecks,
        clock: ClockOffsetEstimator,
        devices: dict[str, DeviceRow],
        open_ids: OpenAlerts,
        inserted: set[SampleKey],
        result: BatchResult,
    ) -> None:
        self.settings = settings
        self.checks_for = checks_for
        self.clock = clock
        self.devices = devices
        self.open_ids = open_ids
        self.inserted = inserted
        self.result = result
        self.changes = BatchChanges()
        self._open_keys = {device_id: set(keys) for device_id, keys in open_ids.items()}
        self._new_samples: dict[str, list[NewSample]] = {}
        self._newest: dict[str, SampleItem] = {}
        #: The newest sample so far of each device whose alerts are not applied yet.
        self._pending_plans: dict[str, SampleItem] = {}

    def apply(self, items: Sequence[IngestItem]) -> BatchChanges:
        """Apply the accepted items in arrival order; what the database must learn."""
        for item in items:
            device = self.devices[item.device_id]
            if isinstance(item, CommandResultItem):
                self.result.command_results.append((device.id, item.result))
            elif isinstance(item, SampleItem):
                self._sample(device, item)
            elif isinstance(item, StateItem):
                self._flush_plan(device)
                self._state(device, item)
            elif isinstance(item, EventItem):
                self._flush_plan(device)
                self._event(device, item)
        for device_id in list(self._pending_plans):
            self._flush_plan(self.devices[device_id])
        self._account_sequences()
        for device_id, item in self._newest.items():
            device = self.devices[device_id]
            device.status = item.sample.status
            device.health = dict(item.sample.metrics)
            device.health_ts = item.sample.ts
        self.changes.dirty = [d for d in self.devices.values() if d.dirty]
        self.changes.with_health = set(self._newest)
        return self.changes

    # -- one item --------------------------------------------------------------------------

    def _sample(self, device: DeviceRow, item: SampleItem) -> None:
        result = self.result
        sample = item.sample
        device.seen(item.received_at)
        key = (item.device_id, sample.boot_id, sample.seq)
        if key not in self.inserted:
            result.duplicates += 1
            return
        self.inserted.discard(key)
        result.stored += 1
        if item.ts_untrusted:
            result.ts_untrusted += 1
        result.outbox_dropped += sample.outbox_dropped
        result.stored_sent_times.append((sample.sent_at or item.received_at).timestamp())
        device.telemetry_received += 1
        device.dirty = True
        self._new_samples.setdefault(device.id, []).append(
            NewSample(sample.boot_id, sample.seq, sample.ts)
        )
        if sample.sent_at is not None:
            offset = self.clock.observe(device.id, sample.sent_at, item.received_at)
            device.clock_offset_s = round(offset, 3)
            device.clock_skewed = is_skewed(offset, self.settings.clock_skew_max_s)
        if not device.online and device.online_reason in (None, SILENT):
            self._change_status(
                device,
                OnlineStatus(True, "online", item.received_at, device.boot_id),
                item.received_at,
            )
        latest = self._newest.get(device.id)
        latest_ts = latest.sample.ts if latest else self._trusted(device.health_ts)
        if latest_ts is None or sample.ts > latest_ts:
            self._newest[device.id] = item
            self._pending_plans[device.id] = item
            self._flush_plan(device)

    def _state(self, device: DeviceRow, item: StateItem) -> None:
        result = self.result
        result.states += 1
        state = item.state
        if not item.retained and state.online:
            device.seen(item.received_at)
        if state.online and item.via is None:
            capabilities = via.capabilities_text(state.capabilities)
            if capabilities != device.capabilities:
                device.capabilities = capabilities
                device.dirty = True
        if state.online and state.agent_version and state.agent_version != device.agent_version:
            device.agent_version = state.agent_version[:64]
            device.dirty = True
        status = next_status(
            device.status_now(),
            state,
            retained=item.retained,
            received_at=item.received_at,
            clock_offset_s=device.clock_offset_s,
        )
        if status is None:
            if item.retained:
                result.stale_states += 1
            return
        if item.retained and status.online and status.changed_at:
            device.seen(status.changed_at)
        self._change_status(device, status, item.received_at)
        if not status.online:
            self._gateway_offline(device, status.changed_at or item.received_at)

    def _gateway_offline(self, gateway: DeviceRow, at: datetime) -> None:
        """The devices this one watches go offline with it (those in the batch here,
        the others by :func:`via.take_watched_offline` when the batch is written)."""
        self.result.gateways_offline.append((gateway.id, at))
        for device in self.devices.values():
            if device.via == gateway.id and device.online:
                self._change_status(
                    device, OnlineStatus(False, via.GATEWAY_OFFLINE, at, device.boot_id), at
                )

    def _event(self, device: DeviceRow, item: EventItem) -> None:
        self.result.events += 1
        event = item.event
        device.seen(item.received_at)
        self._record(device.id, event.type, event.ts, item.received_at, dict(event.body))
        if event.type.startswith(SESSION_EVENT_PREFIX):
            self.result.session_events.append((device.id, event))
        inventory = via.inventory_of(event)
        if inventory is not None:
            self.changes.inventories[device.id] = inventory
            return
        at = alert_time(event.ts, device.clock_offset_s, item.received_at)
        fault = event_fault(event)
        if fault is None:
            return
        fault_key = AlertKey("device", fault.code)
        is_open = fault_key in self._open_keys[device.id]
        if event.type == FAULT_RAISED and not is_open:
            details = AlertDetails(fault.severity, fault.message)
            self._apply_alerts(device.id, AlertPlan(to_open={fault_key: details}), at)
        elif event.type == FAULT_CLEARED and is_open:
            self._apply_alerts(device.id, AlertPlan(to_clear={fault_key}), at)

    # -- alerts, history, status -----------------------------------------------------------

    def _flush_plan(self, device: DeviceRow) -> None:
        """Apply the alerts of the device's newest sample so far (before an event)."""
        item = self._pending_plans.pop(device.id, None)
        if item is None:
            return
        sample = item.sample
        open_now = self._open_keys[device.id]
        checks = self.checks_for(sample)
        if not open_now and not sample.faults:
            # Nothing to clear, no fault to open: only a violated rule matters.
            values = sample.metrics
            if all(rule_violation(c.rule, values[c.metric]) is None for c in checks):
                return
        at = alert_time(sample.ts, device.clock_offset_s, item.received_at)
        plan = plan_for_checks(open_now, sample.faults, sample.metrics, checks)
        self._apply_alerts(device.id, plan, at)

    def _apply_alerts(self, device_id: str, plan: AlertPlan, at: datetime) -> None:
        for key in plan.to_clear:
            self._clear_alert(device_id, key, at)
        for key, details in plan.to_open.items():
            self._open_alert(device_id, key, details, at)
        self._open_keys[device_id] = apply_plan(self._open_keys[device_id], plan)

    def _open_alert(
        self, device_id: str, key: AlertKey, details: AlertDetails, at: datetime
    ) -> None:
        self.changes.opened.append(
            {
                "device_id": device_id,
                "source": key.source,
                "code": key.code,
                "metric": key.metric,
                "severity": details.severity,
                "message": details.message[:1024],
                "raised_at": at,
                "cleared_at": None,
                "open": True,
            }
        )
        self.changes.notices.append(
            fault_event(
                device_id,
                code=key.code,
                metric=key.metric,
                severity=details.severity,
                message=details.message,
                at=at,
                opened=True,
                source=key.source,
            )
        )

    def _clear_alert(self, device_id: str, key: AlertKey, at: datetime) -> None:
        self.changes.notices.append(
            fault_event(
                device_id,
                code=key.code,
                metric=key.metric,
                severity=None,
                message="cleared",
                at=at,
                opened=False,
                source=key.source,
            )
        )
        alert_id = self.open_ids[device_id].pop(key, None)
        if alert_id is not None:
            self.changes.cleared[alert_id] = at
            if key.source == "device":
                self.changes.cleared_faults.append((device_id, key.code, at))
            return
        # Opened earlier in this same batch: close the pending row.
        for row in reversed(self.changes.opened):
            if row["device_id"] == device_id and row["open"] and _key_of(row) == key:
                row["open"], row["cleared_at"] = False, at
                return

    def _record(
        self, device_id: str, kind: str, ts: datetime, at: datetime, body: dict[str, Any]
    ) -> None:
        self.changes.events.append(
            {"device_id": device_id, "type": kind, "ts": ts, "received_at": at, "body": body}
        )

    def _change_status(self, device: DeviceRow, status: OnlineStatus, at: datetime) -> None:
        device.set_status(status)
        kind = "online" if status.online else "offline"
        when = status.changed_at or at
        self._record(device.id, kind, when, at, {"reason": status.reason})
        self.changes.notices.append(
            online_event(device.id, online=status.online, reason=status.reason, at=when)
        )

    # -- sequences -------------------------------------------------------------------------

    def _account_sequences(self) -> None:
        result = self.result
        for device_id, fresh in self._new_samples.items():
            device = self.devices[device_id]
            outcome = account_samples(
                SequenceMark(device.boot_id, device.last_seq, self._trusted(device.health_ts)),
                fresh,
            )
            device.boot_id, device.last_seq = outcome.mark.boot_id, outcome.mark.last_seq
            device.telemetry_missing = max(0, device.telemetry_missing + outcome.missing_delta)
            result.missing_delta += outcome.missing_delta
            result.late += outcome.late
            result.seq_resets += outcome.resets
            if device.telemetry_missing > 0:
                result.gap_devices.append((device_id, device.telemetry_missing))

    def _trusted(self, health_ts: datetime | None) -> datetime | None:
        """A device's stored ``health_ts``, or ``None`` when it lies in the future.

        Rows written before ``ts`` was bounded may hold a year ahead (one sample
        in 2099 froze a device's health until 2099): such a value is ignored, so
        the next genuine sample becomes the latest again.
        """
        if health_ts is None:
            return None
        if health_ts > utcnow() + timedelta(seconds=future_bound_s(self.settings)):
            return None
        return health_ts


def _key_of(row: dict[str, Any]) -> AlertKey:
    return AlertKey(row["source"], row["code"], row["metric"])


def alert_time(ts: datetime, clock_offset_s: float | None, received_at: datetime) -> datetime:
    """When an alert happened, on the server's clock, never after we learned of it."""
    corrected = server_time(ts, clock_offset_s)
    assert corrected is not None  # noqa: S101  (ts is never None here)
    return min(corrected, received_at)


def event_fault(event: DeviceEvent) -> Fault | None:
    """The fault a ``fault.raised`` / ``fault.cleared`` event names, if its body is valid."""
    if event.type not in (FAULT_RAISED, FAULT_CLEARED):
        return None
    try:
        return Fault.model_validate(event.body)
    except ValueError:
        logger.info("device %s sent %s without a valid fault body", event.device_id, event.type)
        return None
