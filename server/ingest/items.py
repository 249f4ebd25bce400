"""What flows through the ingest: the items validated from the broker's messages, and
what a committed batch did.

An item is one message that passed validation (or a rejected one on a device's
topic, to be counted on the device); :class:`BatchResult` is what one batch
changed, for the metrics and the service's hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared.models import CommandResult, DeviceEvent, DeviceState, HealthSample


@dataclass(slots=True)
class _DeviceItem:
    """What every item has: whose it is and which gateway it came through."""

    device_id: str
    #: The gateway it came through (a via topic), ``None`` from the device's own topic
    #: (always ``None`` for a ``cmd/result``: a gateway has no command topics for the
    #: devices it watches). Keyword-only, so each kind lists its own fields first.
    via: str | None = field(default=None, kw_only=True)


@dataclass(slots=True)
class SampleItem(_DeviceItem):
    """A valid health sample, as received.

    ``ts_untrusted``: the device's ``ts`` was implausible and ``sample.ts`` has been
    replaced with ``received_at`` (see :func:`server.ingest.timestamps.plausible_ts`).
    """

    sample: HealthSample
    received_at: datetime
    ts_untrusted: bool = False


@dataclass(slots=True)
class StateItem(_DeviceItem):
    """A valid birth or death; ``retained`` when replayed at subscribe time."""

    state: DeviceState
    retained: bool
    received_at: datetime


@dataclass(slots=True)
class EventItem(_DeviceItem):
    """A valid device event."""

    event: DeviceEvent
    received_at: datetime


@dataclass(slots=True)
class CommandResultItem(_DeviceItem):
    """A valid ``cmd/result``: handed on to the server once its device is known good."""

    result: CommandResult
    received_at: datetime


@dataclass(slots=True)
class RejectedItem(_DeviceItem):
    """A rejected message on a device's topic: counted on the device if it is registered."""

    reason: str


IngestItem = SampleItem | StateItem | EventItem | CommandResultItem | RejectedItem


@dataclass
class BatchResult:
    """What one batch did, for the metrics."""

    stored: int = 0
    duplicates: int = 0
    states: int = 0
    stale_states: int = 0
    events: int = 0
    unregistered: int = 0
    #: Messages from a device whose ``revoked_at`` is set (dropped, counted on the device).
    revoked: int = 0
    #: Messages on a gateway's via topic for a device the registry does not bind to
    #: that gateway (or on a watched device's own topic): dropped, counted on the device.
    not_bound: int = 0
    #: ``(gateway_id, when)`` of each gateway that went offline in this batch: the
    #: devices it watches go offline too (``gateway_offline``).
    gateways_offline: list[tuple[str, datetime]] = field(default_factory=list)
    missing_delta: int = 0
    late: int = 0
    #: Implausible jumps of ``seq`` taken as a new stream (not counted missing).
    seq_resets: int = 0
    #: Stored samples whose ``ts`` was replaced with the receive time.
    ts_untrusted: int = 0
    #: ``(device_id, telemetry_missing)`` of each device that sent samples in this
    #: batch and still has samples counted missing (it may resend them).
    gap_devices: list[tuple[str, int]] = field(default_factory=list)
    outbox_dropped: int = 0
    #: ``sent_at`` (or ``received_at``) of each stored sample, as UNIX times.
    stored_sent_times: list[float] = field(default_factory=list)
    #: ``(device_id, result)`` of each accepted ``cmd/result``, in arrival order.
    command_results: list[tuple[str, CommandResult]] = field(default_factory=list)
    #: ``(device_id, event)`` of each accepted ``session.*`` event, in arrival order.
    session_events: list[tuple[str, DeviceEvent]] = field(default_factory=list)


#: A received message: its item (``None``: nothing to write), mid, QoS, connection generation.
Pending = tuple[IngestItem | None, int, int, int]
